/// A route nodenet wants, naming its device instead of an ifindex (the device may not
/// exist yet when the plan is made). Always in the main table with nodenet's protocol.
public struct RouteIntent: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var destination: IPPrefix
    public var gateway: IPAddress?
    public var device: String
    public var source: IPAddress?
    public var scope: RouteScope
    public var mtu: UInt32?

    public init(
        destination: IPPrefix, gateway: IPAddress? = nil, device: String, source: IPAddress? = nil,
        scope: RouteScope = .universe, mtu: UInt32? = nil
    ) {
        self.destination = destination
        self.gateway = gateway
        self.device = device
        self.source = source
        self.scope = scope
        self.mtu = mtu
    }

    /// `ip route` style: `10.0.2.0/24 via 10.0.2.184 dev cilium_host src 10.0.2.184`.
    public var description: String {
        var s = destination.length == 0 ? "default" : destination.description
        if let gateway { s += " via \(gateway)" }
        s += " dev \(device)"
        if let source { s += " src \(source)" }
        if scope != .universe { s += " scope \(scope)" }
        if let mtu { s += " mtu \(mtu)" }
        return s
    }

    /// The kernel route, given the device's ifindex.
    public func route(interfaceIndex: InterfaceIndex) -> Route {
        Route(
            destination: destination, gateway: gateway, interfaceIndex: interfaceIndex, preferredSource: source,
            scope: scope, table: RouteTable.main, protocol: NodeNetNames.routeProtocol, mtu: mtu)
    }

    /// Whether a route the kernel reported is exactly this one.
    public func matches(_ route: Route, interfaceIndex: InterfaceIndex?) -> Bool {
        route.destination == destination && route.gateway == gateway && route.interfaceIndex == interfaceIndex
            && route.preferredSource == source && route.scope == scope && route.mtu == mtu && route.type == .unicast
    }
}

extension Route {
    /// `ip route` style text, with device names from `names` (ifindex → name).
    public func summary(names: [InterfaceIndex: String]) -> String { describe(names: names) }

    /// `ip route` style text, with device names from `names` (ifindex → name).
    func describe(names: [InterfaceIndex: String]) -> String {
        var s = isDefault ? "default" : destination.description
        if let gateway { s += " via \(gateway)" }
        if let oif = interfaceIndex { s += " dev \(names[oif] ?? "if\(oif)")" }
        if let preferredSource { s += " src \(preferredSource)" }
        if scope != .universe { s += " scope \(scope)" }
        if let mtu { s += " mtu \(mtu)" }
        if self.protocol != NodeNetNames.routeProtocol { s += " proto \(self.protocol)" }
        return s
    }
}
