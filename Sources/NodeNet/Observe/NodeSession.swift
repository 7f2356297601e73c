import BPF
import Foundation

/// Sockets for one node: its own namespace and the pods' namespaces (opened together on
/// one helper thread, cached for the session).
public final class NodeSession: @unchecked Sendable {
    public let namespace: NamespaceReference
    public let node: NetlinkSocket
    private var podSockets: [String: NetlinkSocket] = [:]
    /// Why a pod namespace could not be opened, by `netns`.
    private(set) var podErrors: [String: String] = [:]

    public init(namespace: NamespaceReference = .current) throws {
        self.namespace = namespace
        node = try NetlinkSocket(namespace: namespace)
    }

    /// Sockets for the given pod namespaces; namespaces that cannot be entered are left out.
    func podSockets(_ netnsNames: [String]) -> [String: NetlinkSocket] {
        let missing = netnsNames.filter { podSockets[$0] == nil }
        if !missing.isEmpty {
            for (name, result) in zip(missing, NetlinkSocket.open(in: missing.map(NamespaceReference.init))) {
                switch result {
                case .success(let socket): podSockets[name] = socket
                case .failure(let error): podErrors[name] = "\(error)"
                }
            }
        }
        return podSockets.filter { netnsNames.contains($0.key) }
    }

    /// Closes the pods' sockets. Between reconciles nothing may hold a pod's namespace: a
    /// namespace the runtime deleted must go at once (taking its veth with it, which is the
    /// event that tells the agent), not linger until the next observe.
    func releasePodSockets() {
        podSockets = [:]
    }

    func podSocket(_ netns: String) throws -> NetlinkSocket {
        if let s = podSockets(Array([netns]))[netns] { return s }
        throw NodeNetError.missing("network namespace \(netns) cannot be entered")
    }

    func socket(for scope: NamespaceScope) throws -> NetlinkSocket {
        switch scope {
        case .node: return node
        case .pod(let netns): return try podSocket(netns)
        }
    }

    /// The MTU of `device` in the node's namespace.
    public func mtu(of device: String) throws -> UInt32? { try node.link(named: device)?.mtu }

    /// Reads everything the plan compares: node links/addresses/owned routes, the sysctls the
    /// desired state names, and each pod namespace's links/addresses/owned routes.
    /// `expectedServices`: what an apply just wrote to the service maps (its verification);
    /// maps that hold exactly that are not decoded.
    func observe(
        _ desired: DesiredState, spec: NodeSpec? = nil, formerDirectories: [BPFFSLayout] = [],
        expectedServices: ServiceMapsImage? = nil
    ) throws -> ObservedState {
        // Sockets pin their namespaces: a cached one would keep reading a pod namespace the
        // runtime has deleted and recreated under the same name. Open them afresh.
        podSockets = [:]
        podErrors = [:]
        // What a scoped plan compares on the node: its endpoints' devices, addresses, owned routes.
        let scoped = desired.scopedEndpoints
        let nodeState =
            try scoped.map { try ObservedNamespace.read(node, devices: $0.devices) }
            ?? ObservedNamespace.read(node)
        let probe = "net/ipv6/conf/all/disable_ipv6"
        // Per-device settings come with the link dump (IFLA_AF_SPEC): a file read each only for
        // the rest (250 pods: 1 250 files fewer per observe).
        var fromLinks: [String: String] = [:]
        var files = [probe]
        for setting in desired.sysctls {
            if let device = setting.device, let name = setting.deviceSetting,
                let value = nodeState.links[device]?.configuration?.value(ipv6: setting.isIPv6, name: name)
            {
                fromLinks[setting.key] = value
            } else {
                files.append(setting.key)
            }
        }
        var sysctls = try Sysctl.read(files, in: namespace).merging(fromLinks) { file, _ in file }
        let hasIPv6 = sysctls.removeValue(forKey: probe) != nil
        let netnsNames = desired.endpoints.map(\.pod.netns)
        var pods: [String: ObservedNamespace] = [:]
        for (netns, socket) in podSockets(netnsNames) {
            // A pod namespace can disappear between opening and reading: treat it as gone.
            do { pods[netns] = try ObservedNamespace.read(socket) } catch { podErrors[netns] = "\(error)" }
        }
        var observed = ObservedState(
            node: nodeState, sysctls: sysctls, pods: pods, podErrors: podErrors.filter { pods[$0.key] == nil })
        observed.hasIPv6 = hasIPv6
        if let spec {
            // tc filters on the devices the datapath attaches to (ours or left over).
            for device in desired.endpoints.map(\.hostDevice) + [spec.node.device] {
                guard let link = nodeState.links[device] else { continue }
                observed.ingressFilters[device] =
                    (try? node.filters(interfaceIndex: link.index, direction: .ingress)) ?? []
            }
            let layout = spec.bpffs
            observed.pins = try layout.observe(datapath: spec.datapath.mode)
            if spec.datapath.mode == .bpf {
                // Maps of another layout cannot be read with this build's (they are replaced).
                if observed.pins.incompatibleMaps[.endpoints] == nil {
                    observed.endpointEntries = try DatapathObjects.pinnedEntries(layout, only: scoped?.ips)
                }
                // A scoped plan (one endpoint) compares no service.
                if desired.scope == .node,
                    !BPFFSLayout.Map.serviceTables.contains(where: { observed.pins.incompatibleMaps[$0] != nil })
                {
                    observed.services = try ObservedServices.read(layout, expected: expectedServices)
                }
            }
            observed.socketCgroupID = spec.socketLB.cgroup.flatMap { CgroupLink.id(of: $0) }
            for former in formerDirectories where former.directory != layout.directory {
                let pins = former.ownedPins()
                if !pins.isEmpty { observed.formerDirectories[former] = pins }
            }
        }
        return observed
    }
}
