/// What the kernel holds right now, read with one dump per object kind per namespace.
public struct ObservedNamespace: Sendable, Equatable {
    public var links: [String: Link]
    public var addresses: [InterfaceAddress]
    /// Main-table IPv4 routes carrying nodenet's protocol.
    public var ownedRoutes: [Route] { didSet { routeIndex = Self.index(ownedRoutes) } }
    /// Position of the first owned route to each destination (a plan looks up a route per
    /// intent: 1 000 nodes made a scan per intent quadratic).
    private var routeIndex: [IPPrefix: Int]

    public init(links: [Link], addresses: [InterfaceAddress], ownedRoutes: [Route]) {
        self.links = Dictionary(links.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.addresses = addresses
        self.ownedRoutes = ownedRoutes
        routeIndex = Self.index(ownedRoutes)
    }

    private static func index(_ routes: [Route]) -> [IPPrefix: Int] {
        var index: [IPPrefix: Int] = [:]
        index.reserveCapacity(routes.count)
        for (i, route) in routes.enumerated() where index[route.destination] == nil { index[route.destination] = i }
        return index
    }

    /// The first owned route to `destination`, if any.
    public func ownedRoute(to destination: IPPrefix) -> Route? { routeIndex[destination].map { ownedRoutes[$0] } }

    var names: [InterfaceIndex: String] {
        Dictionary(links.values.map { ($0.index, $0.name) }, uniquingKeysWith: { a, _ in a })
    }

    func index(of device: String) -> InterfaceIndex? { links[device]?.index }

    func addresses(on device: String) -> [InterfaceAddress] {
        guard let index = index(of: device) else { return [] }
        return addresses.filter { $0.interfaceIndex == index && $0.prefix.family == .inet }
    }

    /// Reads a namespace through `socket`.
    public static func read(_ socket: NetlinkSocket) throws -> ObservedNamespace {
        try read(socket, links: try socket.links())
    }

    /// Reads a namespace through `socket` with only the links named `devices` (those that
    /// exist), for a plan scoped to some endpoints: a link dump carries every device's settings
    /// (2–3 KB each) and its cost grows with the node (1.8 ms at 100 pods), a lookup does not.
    public static func read(_ socket: NetlinkSocket, devices: Set<String>) throws -> ObservedNamespace {
        try read(socket, links: try devices.sorted().compactMap { try socket.link(named: $0) })
    }

    private static func read(_ socket: NetlinkSocket, links: [Link]) throws -> ObservedNamespace {
        ObservedNamespace(
            links: links,
            addresses: try socket.addresses(family: .inet),
            ownedRoutes: try socket.routes(
                RouteFilter(family: .inet, table: RouteTable.main, protocol: NodeNetNames.routeProtocol)))
    }
}

public struct ObservedState: Sendable, Equatable {
    public var node: ObservedNamespace
    /// Current values of the sysctls the desired state names (absent: no such key).
    public var sysctls: [String: String]
    /// Whether the node's kernel has IPv6 (its sysctls are skipped otherwise).
    public var hasIPv6 = true
    /// Pod namespaces by the spec's `netns` string; absent when the namespace is gone.
    public var pods: [String: ObservedNamespace]
    /// Why a pod namespace could not be read, by `netns`.
    public var podErrors: [String: String]
    /// Ingress tc filters of the endpoint devices and the native device (node namespace).
    public var ingressFilters: [String: [TCFilter]] = [:]
    /// What the node's bpffs directory holds (maps of another layout, maps set aside, links).
    public var pins = ObservedPins()
    /// Earlier bpffs directories of the node (from the ledger) that still hold our pins, with
    /// those entries.
    public var formerDirectories: [BPFFSLayout: [String]] = [:]
    /// Entries of the node's pinned endpoints map, by pod IP.
    public var endpointEntries: [IPAddress: EndpointEntry] = [:]
    /// The node's pinned service maps (frontends, backends, ids, node addresses, settings).
    public var services = ObservedServices()
    /// The inode (cgroup id) of the socket-LB cgroup; nil when it does not exist.
    public var socketCgroupID: UInt64?

    public init(
        node: ObservedNamespace, sysctls: [String: String], pods: [String: ObservedNamespace],
        podErrors: [String: String] = [:]
    ) {
        self.node = node
        self.sysctls = sysctls
        self.pods = pods
        self.podErrors = podErrors
    }
}
