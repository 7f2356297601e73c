/// Computes the changes that take the observed kernel state to the desired one.
///
/// Only objects nodenet owns are compared: routes with nodenet's protocol, the host pair,
/// endpoint veths recorded in the ledger or wanted by the spec, and what lives on the pods'
/// `eth0`. Order: create before use, then prune (routes before the links they use), so a
/// failure midway never leaves the node with less than it had.
public struct Planner {
    public struct Plan: Sendable, Equatable {
        public var changes: [PlannedChange]
        /// Objects in the way that nodenet does not own; apply refuses to run over them.
        public var conflicts: [String]
        /// Pods whose network namespace is gone or cannot be entered: left out of this plan (what
        /// is left of their endpoints is removed) and reported, so one vanished pod never blocks
        /// the rest of the node.
        public var unavailable: [String] = []
        /// The frontend and backend ids the plan's service changes use (BPF datapath).
        var serviceIDs: ServiceIDs?
        public var isEmpty: Bool { changes.isEmpty }
    }

    let desired: DesiredState
    let observed: ObservedState
    let ledger: Ledger?
    let device: String
    let datapath: DatapathMode
    let attachModes: AttachModes
    private(set) var changes: [PlannedChange] = []
    /// Endpoint devices this plan deletes and creates again: what the kernel shows for them
    /// (routes, sysctls, filters) belongs to the old device and goes away with it.
    var recreated: Set<String> = []
    private var conflicts: [String] = []
    /// Frontend and backend ids, assigned once per plan (services).
    var serviceIDs: ServiceIDs?
    /// The source ranges the frontends want (by id), once `planServices` has assigned the ids.
    var wantedSourceRanges: Set<SourceRange>?
    /// The Maglev tables the frontends want (by id), once `planServices` has assigned the ids.
    var wantedMaglev: [FrontendID: MaglevIndex]?
    /// The backends no wanted one has the id of that `planServices` has not taken out yet (it
    /// takes each out as soon as no frontend names it): the prune's.
    var staleBackendsLeft: [UInt32: BackendAddress]?
    /// What its services changes' words are made from (made with the first).
    private var serviceWords: ServiceWords?

    public static func plan(
        desired: DesiredState, observed: ObservedState, ledger: Ledger?, nativeDevice: String,
        datapath: DatapathMode = .kernel,
        attachModes: AttachModes = .clsact
    ) -> Plan {
        // Pods whose namespace cannot be read are planned as if they had left the spec.
        let gone = desired.endpoints.filter { observed.pods[$0.pod.netns] == nil }
        var usable = desired
        if !gone.isEmpty {
            let devices = Set(gone.map(\.hostDevice))
            usable.endpoints.removeAll { devices.contains($0.hostDevice) }
            usable.sysctls.removeAll { $0.device.map(devices.contains) ?? false }
        }
        var p = Planner(
            desired: usable, observed: observed, ledger: ledger, device: nativeDevice, datapath: datapath,
            attachModes: attachModes)
        p.run()
        let unavailable = gone.map {
            "pod \($0.pod.id): network namespace \($0.pod.netns) cannot be read"
                + " (\(observed.podErrors[$0.pod.netns] ?? "it does not exist")); its endpoint is left out until it is back"
        }
        return Plan(
            changes: p.changes, conflicts: p.conflicts, unavailable: desired.unavailable + unavailable,
            serviceIDs: p.serviceIDs)
    }

    private init(
        desired: DesiredState, observed: ObservedState, ledger: Ledger?, device: String, datapath: DatapathMode,
        attachModes: AttachModes
    ) {
        self.attachModes = attachModes
        self.desired = desired
        self.observed = observed
        self.ledger = ledger
        self.device = device
        self.datapath = datapath
    }

    private mutating func add(
        _ action: ChangeAction, _ kind: ChangeKind, _ scope: NamespaceScope, _ subject: String, wanted: String?,
        found: String?,
        _ change: NetlinkChange
    ) {
        addChange(action, kind, scope, subject, wanted: wanted, found: found, .netlink(change))
    }

    mutating func addConflict(_ text: String) { conflicts.append(text) }

    mutating func addChange(
        _ action: ChangeAction, _ kind: ChangeKind, _ scope: NamespaceScope, _ subject: String, wanted: String?,
        found: String?,
        _ change: Change
    ) {
        changes.append(
            PlannedChange(
                action: action, kind: kind, namespace: scope, subject: subject, wanted: wanted, found: found,
                change: change))
    }

    /// Makes room for `count` more changes.
    mutating func reserveChanges(_ count: Int) { changes.reserveCapacity(changes.count + count) }

    /// A services change whose words are made from it only when read (`ServiceWords`: tens of
    /// thousands per plan).
    mutating func addChange(_ action: ChangeAction, _ change: ServiceChange) {
        if serviceWords == nil {
            serviceWords = ServiceWords(frontends: desired.frontends, observed: observed.services)
        }
        changes.append(
            PlannedChange(action: action, kind: .service, namespace: .node, change: change, words: serviceWords!))
    }

    mutating func addChange(
        _ action: ChangeAction, _ kind: ChangeKind, _ scope: NamespaceScope, _ subject: String, wanted: String?,
        found: String?,
        _ change: DatapathChange
    ) {
        addChange(action, kind, scope, subject, wanted: wanted, found: found, .datapath(change))
    }

    private mutating func run() {
        switch desired.scope {
        case .node: runNode()
        case .endpoints: runEndpoints()
        case .removal(let removed): runRemoval(removed)
        }
    }

    /// Some endpoints, created or repaired: what `runNode` plans for them, nothing else.
    private mutating func runEndpoints() {
        guard !migratingMaps && !rebindingPins else {
            conflicts.append("the datapath's maps or pins are being migrated: only a full reconcile may proceed")
            return
        }
        for endpoint in desired.endpoints { planEndpointLink(endpoint) }
        for endpoint in desired.endpoints { planPodSide(endpoint) }
        planSysctls { _ in true }
        for endpoint in desired.endpoints { planRoute(endpoint.podRoute, in: .node, observed: observed.node) }
        planDatapath(nativeDevice: false)
        for endpoint in desired.endpoints { planPodSidePrune(endpoint) }
    }

    /// Endpoints taken away: their map entries first (never pointing at a device that is
    /// gone), then their devices (routes, sysctls and filters go with them, and the pods' eth0),
    /// then their link pins.
    private mutating func runRemoval(_ removed: [Ledger.Endpoint]) {
        for old in removed {
            guard datapath == .bpf && !migratingMaps, let ip = IPAddress(old.ip),
                let entry = observed.endpointEntries[ip]
            else { continue }
            addChange(
                .delete, .datapath, .node, "endpoint map entry \(ip)", wanted: nil, found: entry.description,
                .deleteEndpointEntry(ip: ip, previous: entry))
        }
        for old in removed where observed.node.links[old.hostDevice] != nil {
            add(
                .delete, .endpoint, .node, "endpoint \(old.pod)", wanted: nil,
                found: "veth \(old.hostDevice) (\(old.ip))",
                .deleteLink(.node, device: old.hostDevice))
        }
        let devices = Set(removed.map(\.hostDevice))
        for name in observed.pins.tcxLinks.sorted()
        where BPFFSLayout.parseTCXLinkName(name).map({ devices.contains($0.device) }) == true {
            addChange(.delete, .datapath, .node, "tcx link \(name)", wanted: nil, found: name, .unpinLink(name: name))
        }
    }

    private mutating func runNode() {
        let node = observed.node
        if node.links[device] == nil {
            conflicts.append("native device \(device) does not exist in the node's namespace")
        }
        planHostPair()
        planSysctls { $0.device == nil || $0.device == NodeNetNames.hostDevice || $0.device == NodeNetNames.netDevice }
        for intent in [desired.routerRoute, desired.podCIDRRoute] { planRoute(intent, in: .node, observed: node) }
        for endpoint in desired.endpoints { planEndpointLink(endpoint) }
        for endpoint in desired.endpoints { planPodSide(endpoint) }
        let endpointDevices = Set(desired.endpoints.map(\.hostDevice))
        planSysctls { $0.device.map(endpointDevices.contains) ?? false }
        for endpoint in desired.endpoints { planRoute(endpoint.podRoute, in: .node, observed: node) }
        planMapMigration()
        planServices()
        planDatapath(nativeDevice: true)
        for intent in desired.directRoutes { planRoute(intent, in: .node, observed: node) }
        planEndpointEntryPrune()
        planServicesPrune()
        planPrune()
        planDatapathPrune()
    }

    // MARK: Host pair

    private mutating func planHostPair() {
        let node = observed.node
        let wanted =
            "veth \(NodeNetNames.hostDevice) <-> \(NodeNetNames.netDevice), up, noarp, mtu \(desired.mtu)"
            + desired.segmentSizeDescription
        guard let host = node.links[NodeNetNames.hostDevice] else {
            if node.links[NodeNetNames.netDevice] != nil {
                conflicts.append(
                    "\(NodeNetNames.netDevice) exists without \(NodeNetNames.hostDevice); remove it or run teardown")
                return
            }
            add(
                .create, .link, .node, "link \(NodeNetNames.hostDevice)", wanted: wanted, found: nil,
                .createHostPair(mtu: desired.mtu, ipv4SegmentSize: desired.ipv4SegmentSize))
            add(
                .update, .link, .node, "link \(NodeNetNames.netDevice)", wanted: "up", found: "down (new)",
                .setLink(.node, device: NodeNetNames.netDevice, LinkChange(up: true), undo: LinkChange(up: false)))
            planAddress(
                NodeNetNames.hostDevice, IPPrefix(host: desired.routerIP), scope: .link, in: .node,
                observed: node, deviceIsNew: true)
            return
        }
        guard host.kind == "veth", let net = node.links[NodeNetNames.netDevice], net.kind == "veth",
            net.peerIndex == host.index
        else {
            conflicts.append(
                "\(NodeNetNames.hostDevice) exists but is not a veth paired with \(NodeNetNames.netDevice)")
            return
        }
        for link in [host, net] { planLinkState(link, in: .node, noARP: true) }
        planAddress(
            NodeNetNames.hostDevice, IPPrefix(host: desired.routerIP), scope: .link, in: .node, observed: node,
            deviceIsNew: false)
    }

    /// Brings one of nodenet's links to up, the MTU, the BIG TCP size and (optionally) NOARP.
    private mutating func planLinkState(_ link: Link, in scope: NamespaceScope, noARP: Bool?) {
        let mtu = desired.mtu
        var change = LinkChange()
        var undo = LinkChange()
        var wanted: [String] = []
        var found: [String] = []
        if !link.isUp {
            change.up = true
            undo.up = false
            wanted.append("up")
            found.append("down")
        }
        if link.mtu != mtu {
            change.mtu = mtu
            undo.mtu = link.mtu
            wanted.append("mtu \(mtu)")
            found.append("mtu \(link.mtu.map(String.init) ?? "?")")
        }
        if let size = desired.ipv4SegmentSize, link.gsoIPv4MaxSize != size || link.groIPv4MaxSize != size {
            change.ipv4MaxSegmentSize = size
            undo.ipv4MaxSegmentSize = link.gsoIPv4MaxSize
            if link.groIPv4MaxSize != link.gsoIPv4MaxSize { undo.ipv4GROMaxSize = link.groIPv4MaxSize }
            wanted.append("gso/gro ipv4 \(size)")
            found.append(
                "gso/gro ipv4 \(link.gsoIPv4MaxSize.map(String.init) ?? "?")/\(link.groIPv4MaxSize.map(String.init) ?? "?")"
            )
        }
        if let noARP, link.isNoARP != noARP {
            change.noARP = noARP
            undo.noARP = link.isNoARP
            wanted.append(noARP ? "noarp" : "arp")
            found.append(link.isNoARP ? "noarp" : "arp")
        }
        guard !wanted.isEmpty else { return }
        add(
            .update, .link, scope, "link \(link.name)", wanted: wanted.joined(separator: ", "),
            found: found.joined(separator: ", "),
            .setLink(scope, device: link.name, change, undo: undo))
    }

    private mutating func planAddress(
        _ device: String, _ prefix: IPPrefix, scope: RouteScope, in ns: NamespaceScope, observed: ObservedNamespace?,
        deviceIsNew: Bool
    ) {
        let current = deviceIsNew ? [] : observed?.addresses(on: device) ?? []
        if !current.contains(where: { $0.prefix == prefix && $0.scope == scope }) {
            add(
                .create, .address, ns, "address \(prefix) on \(device)", wanted: "\(prefix) scope \(scope)", found: nil,
                .addAddress(ns, device: device, prefix: prefix, scope: scope))
        }
    }

    // MARK: Sysctls

    private mutating func planSysctls(_ include: (SysctlSetting) -> Bool) {
        for setting in desired.sysctls where include(setting) && (observed.hasIPv6 || !setting.isIPv6) {
            let current = setting.device.map(recreated.contains) == true ? nil : observed.sysctls[setting.key]
            guard current != setting.value else { continue }
            addChange(
                current == nil ? .create : .update, .sysctl, .node, "sysctl \(setting.key)", wanted: setting.value,
                found: current,
                .sysctl(SysctlChange(setting: setting, previous: current)))
        }
    }

    // MARK: Routes

    private mutating func planRoute(_ intent: RouteIntent, in scope: NamespaceScope, observed: ObservedNamespace?) {
        let fresh = recreated.contains(intent.device)
        let index = fresh ? nil : observed?.index(of: intent.device)
        let mine = fresh ? nil : observed?.ownedRoute(to: intent.destination)
        if let mine, index != nil, intent.matches(mine, interfaceIndex: index) { return }
        let names = observed?.names ?? [:]
        add(
            mine == nil ? .create : .update, .route, scope,
            "route \(intent.destination.length == 0 ? "default" : intent.destination.description)",
            wanted: intent.description, found: mine?.describe(names: names), .putRoute(scope, intent, previous: mine))
    }

    // MARK: Endpoints

    /// Whether the endpoint's host veth exists and is paired with the pod's eth0.
    private func endpointState(_ endpoint: DesiredState.Endpoint) -> (host: Link?, pod: Link?, paired: Bool) {
        let host = observed.node.links[endpoint.hostDevice]
        let pod = observed.pods[endpoint.pod.netns]?.links[NodeNetNames.podDevice]
        let paired =
            host != nil && pod != nil && host?.peerIndex == pod?.index && pod?.peerIndex == host?.index
            && host?.kind == "veth" && pod?.kind == "veth"
        return (host, pod, paired)
    }

    private mutating func planEndpointLink(_ endpoint: DesiredState.Endpoint) {
        let (host, pod, paired) = endpointState(endpoint)
        let subject = "endpoint \(endpoint.pod.id)"
        let wanted =
            "veth \(endpoint.hostDevice) <-> \(NodeNetNames.podDevice) in \(endpoint.pod.netns), mtu \(desired.mtu)"
            + desired.segmentSizeDescription
        if let host, !paired {
            // Half an endpoint (its pod namespace was recreated, or a crash): rebuild it.
            add(
                .delete, .endpoint, .node, "link \(host.name)", wanted: nil,
                found: "veth not paired with \(endpoint.pod.netns) eth0",
                .deleteLink(.node, device: host.name))
            recreated.insert(host.name)
        }
        if host == nil || !paired {
            if pod != nil && !paired {
                conflicts.append(
                    "pod \(endpoint.pod.id): \(endpoint.pod.netns) already has an \(NodeNetNames.podDevice) that is not nodenet's"
                )
                return
            }
            add(
                .create, .endpoint, .node, subject, wanted: wanted, found: nil,
                .createEndpoint(
                    hostDevice: endpoint.hostDevice, netns: endpoint.pod.netns, mtu: desired.mtu,
                    ipv4SegmentSize: desired.ipv4SegmentSize))
            return
        }
        planLinkState(host!, in: .node, noARP: nil)
        planLinkState(pod!, in: .pod(endpoint.pod.netns), noARP: nil)
    }

    private mutating func planPodSide(_ endpoint: DesiredState.Endpoint) {
        guard let podNS = observed.pods[endpoint.pod.netns] else { return }
        let scope = NamespaceScope.pod(endpoint.pod.netns)
        let fresh = !endpointState(endpoint).paired
        // The pod's lo is not ours: the runtime (or the lab) brings it up, as Kubernetes'
        // loopback plugin does. Bringing it up also adds 127.0.0.1, which down does not undo.
        if fresh {
            add(
                .update, .link, scope, "link \(NodeNetNames.podDevice)", wanted: "up", found: "down (new)",
                .setLink(scope, device: NodeNetNames.podDevice, LinkChange(up: true), undo: LinkChange(up: false)))
        }
        let view: ObservedNamespace? = fresh ? nil : podNS
        planAddress(
            NodeNetNames.podDevice, IPPrefix(host: endpoint.pod.ip), scope: .universe, in: scope, observed: view,
            deviceIsNew: fresh)
        for intent in endpoint.podRoutes { planRoute(intent, in: scope, observed: view) }
    }

    // MARK: Prune

    /// Stale routes and addresses on the eth0 of an endpoint that stays.
    private mutating func planPodSidePrune(_ endpoint: DesiredState.Endpoint) {
        guard endpointState(endpoint).paired, let podNS = observed.pods[endpoint.pod.netns] else { return }
        let scope = NamespaceScope.pod(endpoint.pod.netns)
        let wanted = Set(endpoint.podRoutes.map(\.destination))
        for route in podNS.ownedRoutes where !wanted.contains(route.destination) {
            add(
                .delete, .route, scope, "route \(route.destination)", wanted: nil,
                found: route.describe(names: podNS.names), .deleteRoute(scope, route))
        }
        for address in podNS.addresses(on: NodeNetNames.podDevice)
        where address.prefix != IPPrefix(host: endpoint.pod.ip) {
            add(
                .delete, .address, scope, "address \(address.prefix) on \(NodeNetNames.podDevice)", wanted: nil,
                found: "\(address.prefix)",
                .deleteAddress(scope, device: NodeNetNames.podDevice, address))
        }
    }

    private mutating func planPrune() {
        let node = observed.node
        let names = node.names
        // Routes: ours in the node namespace that no desired route covers.
        let wantedNode = Set(desired.nodeRoutes.map(\.destination) + desired.endpoints.map(\.podRoute.destination))
        for route in node.ownedRoutes where !wantedNode.contains(route.destination) {
            add(
                .delete, .route, .node, "route \(route.destination)", wanted: nil, found: route.describe(names: names),
                .deleteRoute(.node, route))
        }
        // Pod side: stale routes and addresses on eth0 of endpoints that stay.
        for endpoint in desired.endpoints { planPodSidePrune(endpoint) }
        for address in node.addresses(on: NodeNetNames.hostDevice)
        where address.prefix != IPPrefix(host: desired.routerIP) {
            add(
                .delete, .address, .node, "address \(address.prefix) on \(NodeNetNames.hostDevice)", wanted: nil,
                found: "\(address.prefix)",
                .deleteAddress(.node, device: NodeNetNames.hostDevice, address))
        }
        // Endpoints the ledger knows that the spec no longer wants.
        let wantedDevices = Set(desired.endpoints.map(\.hostDevice))
        for old in ledger?.endpoints ?? []
        where !wantedDevices.contains(old.hostDevice) && node.links[old.hostDevice] != nil {
            add(
                .delete, .endpoint, .node, "endpoint \(old.pod)", wanted: nil,
                found: "veth \(old.hostDevice) (\(old.ip))",
                .deleteLink(.node, device: old.hostDevice))
        }
    }
}
