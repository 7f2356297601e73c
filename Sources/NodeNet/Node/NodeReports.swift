/// What `nodenetd endpoint list` shows for one pod.
public struct EndpointStatus: Sendable, Codable, Equatable {
    /// The host device's ifindex (stable while the endpoint exists); 0 when missing.
    public var id: Int32
    public var pod: String
    public var ip: String
    public var netns: String
    public var hostInterface: String
    public var hostMAC: String?
    public var podMAC: String?
    /// `ready`, `missing` or `not-ready: <why>`.
    public var state: String
    /// `spec` (the spec's `pods[]`) or `cni` (created by a container runtime through nodenet-cni).
    public var source: String = "spec"
    /// The CNI attachment (`<container id>/<ifname>`) of a `cni` pod.
    public var attachment: String?
}

/// What `nodenetd route list` shows for one route nodenet owns in the node's namespace.
public struct RouteStatus: Sendable, Codable, Equatable {
    public var destination: String
    public var route: String
    /// `ok`, `missing`, `drifted` (then `found` says what is there) or `stale` (no longer wanted).
    public var state: String
    public var found: String?
}

/// What `nodenetd status` shows.
public struct NodeStatus: Sendable, Codable, Equatable {
    public var node: String
    public var namespace: String
    public var device: String
    public var address: String
    public var routingMode: String
    public var datapathMode: String
    public var kubeProxyReplacement: String
    public var masquerading: String
    public var hostRouting: String
    public var podCIDR: String
    public var routerIP: String
    public var ipamAllocated: Int
    public var ipamCapacity: Int
    public var endpointsReady: Int
    public var endpoints: Int
    public var remoteNodes: Int
    public var services: Int
    /// Frontends in the node's service maps (what the datapath serves now).
    public var serviceFrontends: Int
    /// Entries in the BPF conntrack table (packet-level translation, masquerading).
    public var conntrackEntries: Int
    public var ownedRoutes: Int
    public var lastApplied: String?
    /// The process holding the node's lock (`nodenetd run`, or an apply or teardown now).
    public var lockHolder: NodeLock.Holder?
    /// `ok`, `none` (never applied) or why the ledger cannot be trusted / was rebuilt.
    public var ledger: String
    /// The running agent's BPF audit (interval, last drift), nil when no agent audits.
    public var bpfAudit: String?
    /// Changes a plan would make now (0 = the kernel matches the spec).
    public var drift: Int
    public var driftDetails: [String]
}

extension NodeController {
    public func endpoints() throws -> [EndpointStatus] {
        defer { session.releasePodSockets() }
        let desired = try desiredState()
        let observed = try session.observe(desired)
        return desired.endpoints.map { endpoint in
            let host = observed.node.links[endpoint.hostDevice]
            let podNS = observed.pods[endpoint.pod.netns]
            let eth0 = podNS?.links[NodeNetNames.podDevice]
            var problems: [String] = []
            if host == nil { problems.append("no host device") }
            if podNS == nil { problems.append("no network namespace") }
            if let host, !host.isUp { problems.append("\(host.name) down") }
            if let eth0 {
                if !eth0.isUp { problems.append("eth0 down") }
                if host?.peerIndex != eth0.index { problems.append("eth0 is not paired with \(endpoint.hostDevice)") }
            } else if host != nil {
                problems.append("no eth0 in the pod")
            }
            if let podNS,
                !podNS.addresses(on: NodeNetNames.podDevice).contains(where: { $0.prefix.address == endpoint.pod.ip })
            {
                problems.append("pod IP not on eth0")
            }
            let route = observed.node.ownedRoute(to: endpoint.podRoute.destination)
            if route.map({ endpoint.podRoute.matches($0, interfaceIndex: host?.index) }) != true {
                problems.append("host route missing")
            }
            let state =
                host == nil && eth0 == nil
                ? "missing" : problems.isEmpty ? "ready" : "not-ready: " + problems.joined(separator: ", ")
            return EndpointStatus(
                id: host?.index.rawValue ?? 0, pod: endpoint.pod.id, ip: endpoint.pod.ip.description,
                netns: endpoint.pod.netns,
                hostInterface: endpoint.hostDevice, hostMAC: host?.address?.description,
                podMAC: eth0?.address?.description, state: state)
        }
    }

    public func routes() throws -> [RouteStatus] {
        defer { session.releasePodSockets() }
        let desired = try desiredState()
        let node = try ObservedNamespace.read(session.node)
        let names = node.names
        let intents =
            [desired.routerRoute, desired.podCIDRRoute] + desired.endpoints.map(\.podRoute) + desired.directRoutes
        var rows: [RouteStatus] = intents.map { intent in
            let found = node.ownedRoute(to: intent.destination)
            let state =
                found == nil
                ? "missing" : intent.matches(found!, interfaceIndex: node.index(of: intent.device)) ? "ok" : "drifted"
            return RouteStatus(
                destination: intent.destination.description, route: intent.description, state: state,
                found: state == "drifted" ? found?.describe(names: names) : nil)
        }
        let wanted = Set(intents.map(\.destination))
        rows += node.ownedRoutes.filter { !wanted.contains($0.destination) }.map {
            RouteStatus(
                destination: $0.destination.description, route: $0.describe(names: names), state: "stale", found: nil)
        }
        return rows
    }

    public func status() throws -> NodeStatus {
        defer { session.releasePodSockets() }
        let desired = try desiredState()
        let (ledger, untrusted) = try self.ledger(moveAside: false)
        let (plan, observed) = try observedPlan(desired, ledger: ledger)
        let endpointRows = try endpoints()
        let owned = try session.node.routes(
            RouteFilter(family: .inet, table: RouteTable.main, protocol: NodeNetNames.routeProtocol))
        let capacity = max(0, (1 << (32 - Int(spec.node.podCIDR.length))) - 2)
        let lastApplied: String? =
            untrusted == nil ? ledger.map { $0.updatedAt + ($0.complete ? "" : " (incomplete)") } : nil
        let ledgerHealth: String
        if let untrusted {
            ledgerHealth = "untrusted: \(untrusted)"
        } else if let recovery = ledger?.recovery {
            ledgerHealth = "rebuilt: \(recovery)"
        } else {
            ledgerHealth = ledger == nil ? "none" : "ok"
        }
        return NodeStatus(
            node: spec.node.name, namespace: "\(session.namespace)", device: spec.node.device,
            address: spec.node.address.description,
            routingMode: spec.autoDirectNodeRoutes
                ? "Native (direct routes to \(spec.nodes.count) nodes)" : "Native (no direct routes)",
            datapathMode: spec.datapath.mode.rawValue,
            kubeProxyReplacement: !spec.kubeProxyReplacement
                ? "Disabled"
                : spec.datapath.mode != .bpf
                    ? "Disabled: needs the BPF datapath (\(spec.services.count) services in the spec, not programmed)"
                    : "Strict [\(spec.node.device) \(spec.node.address) (Direct Routing)], "
                        + (spec.socketLB.cgroup.map { "socket LB on \($0)" } ?? "socket LB off (per-packet translation)"),
            masquerading: spec.datapath.mode == .bpf && spec.masquerade && spec.nativeRoutingCIDR != nil
                ? "BPF [\(spec.node.device)] \(spec.nativeRoutingCIDR!) (to the node's address outside it)"
                : "Disabled",
            hostRouting: spec.datapath.mode == .bpf
                ? "BPF (pod traffic redirected past the routing stack)"
                : "Legacy (kernel routing through the host stack)",
            podCIDR: spec.node.podCIDR.description, routerIP: spec.node.routerIP.description,
            ipamAllocated: spec.pods.count + 1, ipamCapacity: capacity,
            endpointsReady: endpointRows.filter { $0.state == "ready" }.count, endpoints: endpointRows.count,
            remoteNodes: spec.nodes.count, services: spec.services.count,
            // As observed for the plan: empty while service maps of another layout wait to be replaced.
            serviceFrontends: observed.services.masters.count,
            conntrackEntries: spec.datapath.mode == .bpf
                ? (try Conntrack.count(bpffsDirectory: spec.bpffsDirectory)) : 0,
            ownedRoutes: owned.count,
            lastApplied: lastApplied, lockHolder: NodeLock.holder(stateDirectory: spec.stateDirectory),
            ledger: ledgerHealth, bpfAudit: AuditRecord.current(stateDirectory: spec.stateDirectory)?.summary,
            drift: plan.changes.count + plan.conflicts.count,
            driftDetails: plan.changes.map(\.mismatch) + plan.conflicts)
    }
}
