/// A route (`RTM_NEWROUTE`): `10.0.1.0/24 via 172.18.0.3 dev eth0 proto 3`.
public struct Route: Sendable, Equatable {
    /// The destination; `0.0.0.0/0` (or `::/0`) is the default route.
    public var destination: IPPrefix
    public var gateway: IPAddress?
    public var outputInterface: Int32?
    public var preferredSource: IPAddress?
    public var scope: RouteScope
    public var table: UInt32
    public var `protocol`: RouteProtocol
    public var type: RouteType
    /// `RTNH_F_ONLINK`: the gateway is on the link even if no address covers it.
    public var onLink: Bool
    /// `RTAX_MTU` from the route's metrics.
    public var mtu: UInt32?
    /// `RTA_PRIORITY` (the metric).
    public var priority: UInt32?
    /// `rtm_flags` as received.
    public var flags: UInt32
    public var unknownAttributes: [NetlinkAttribute]

    public init(
        destination: IPPrefix, gateway: IPAddress? = nil, outputInterface: Int32? = nil,
        preferredSource: IPAddress? = nil, scope: RouteScope = .universe, table: UInt32 = RouteTable.main,
        protocol: RouteProtocol = .boot, type: RouteType = .unicast, onLink: Bool = false, mtu: UInt32? = nil,
        priority: UInt32? = nil
    ) {
        self.destination = destination
        self.gateway = gateway
        self.outputInterface = outputInterface
        self.preferredSource = preferredSource
        self.scope = scope
        self.table = table
        self.protocol = `protocol`
        self.type = type
        self.onLink = onLink
        self.mtu = mtu
        self.priority = priority
        self.flags = onLink ? RTA.flagOnLink : 0
        self.unknownAttributes = []
    }

    public var family: AddressFamily { destination.family }
    public var isDefault: Bool { destination.length == 0 }

    static let headerSize = 12
    static let known: Set<UInt16> = [RTA.dst, RTA.oif, RTA.gateway, RTA.priority, RTA.prefSrc, RTA.metrics, RTA.table]

    public init(message: NetlinkMessage) throws {
        let r = ByteReader(message.payload)
        guard let family = AddressFamily(rawValue: try r.u8(0)), family != .unspecified else {
            throw NetlinkError.malformed("route with unknown family \(try r.u8(0))")
        }
        let dstLength = Int(try r.u8(1))
        let headerTable = try r.u8(4)
        self.protocol = RouteProtocol(rawValue: try r.u8(5))
        scope = RouteScope(rawValue: try r.u8(6))
        type = RouteType(rawValue: try r.u8(7))
        flags = try r.u32(8)
        onLink = flags & RTA.flagOnLink != 0
        let attrs = try AttributeList(parsing: try r.slice(Self.headerSize, r.count - Self.headerSize))
        let zero = IPAddress(bytes: [UInt8](repeating: 0, count: family == .inet ? 4 : 16))!
        let dst = try attrs[RTA.dst].map { a -> IPAddress in
            guard let ip = IPAddress(bytes: a.payload), ip.family == family else {
                throw NetlinkError.malformed("RTA_DST of \(a.payload.count) bytes")
            }
            return ip
        } ?? zero
        guard let prefix = IPPrefix(dst, length: dstLength) else {
            throw NetlinkError.malformed("route prefix length \(dstLength)")
        }
        destination = prefix
        gateway = attrs[RTA.gateway].flatMap { IPAddress(bytes: $0.payload) }
        outputInterface = attrs[RTA.oif]?.i32
        preferredSource = attrs[RTA.prefSrc].flatMap { IPAddress(bytes: $0.payload) }
        table = attrs[RTA.table]?.u32 ?? UInt32(headerTable)
        priority = attrs[RTA.priority]?.u32
        mtu = try attrs[RTA.metrics]?.nested()[RTA.metricMTU]?.u32
        unknownAttributes = attrs.unknown(excluding: Self.known)
    }

    /// `10.0.1.0/24 via 172.18.0.3 dev 2` style text for messages.
    public var summary: String {
        var s = isDefault ? "default" : destination.description
        if let gateway { s += " via \(gateway)" }
        if let outputInterface { s += " dev \(outputInterface)" }
        if table != RouteTable.main { s += " table \(table)" }
        return s
    }

    func request(type messageType: UInt16, flags requestFlags: NetlinkFlags, verb: String, deleting: Bool = false)
        -> NetlinkRequest
    {
        var m = MessageBuilder(type: messageType, flags: requestFlags)
        var header: [UInt8] = [
            family.rawValue, destination.length, 0, 0, UInt8(table < 256 ? table : 0), self.protocol.rawValue,
            deleting ? RouteScope.nowhere.rawValue : scope.rawValue, type.rawValue,
        ]
        header.appendU32(onLink ? (flags | RTA.flagOnLink) : (flags & ~RTA.flagOnLink))
        m.append(familyHeader: header)
        if destination.length > 0 { m.attribute(RTA.dst, destination.network.address.bytes) }
        m.attribute(RTA.table, u32: table)
        if let gateway { m.attribute(RTA.gateway, gateway.bytes) }
        if let outputInterface { m.attribute(RTA.oif, i32: outputInterface) }
        if let preferredSource { m.attribute(RTA.prefSrc, preferredSource.bytes) }
        if let priority { m.attribute(RTA.priority, u32: priority) }
        if let mtu { m.nested(RTA.metrics) { $0.attribute(RTA.metricMTU, u32: mtu) } }
        return NetlinkRequest(m, context: "\(verb) route \(summary)")
    }

    /// Add-exclusive: fails with `EEXIST` when the same route is there.
    public var addRequest: NetlinkRequest { request(type: RTM.newRoute, flags: [.create, .exclusive], verb: "adding") }
    /// Create or replace the route with the same destination, table and metric.
    public var replaceRequest: NetlinkRequest { request(type: RTM.newRoute, flags: [.create, .replace], verb: "replacing") }
    /// Deletes the route matching destination, table, protocol, type and (when set) gateway/device.
    public var deleteRequest: NetlinkRequest { request(type: RTM.delRoute, flags: [], verb: "deleting", deleting: true) }
}

/// Which routes a listing returns. The kernel filters (strict dump checking); the same
/// filter is applied again on the answer, so older kernels give the same result.
public struct RouteFilter: Sendable, Equatable {
    public var family: AddressFamily
    public var table: UInt32?
    public var `protocol`: RouteProtocol?
    public var outputInterface: Int32?
    public var type: RouteType?

    public init(
        family: AddressFamily = .inet, table: UInt32? = RouteTable.main, protocol: RouteProtocol? = nil,
        outputInterface: Int32? = nil, type: RouteType? = nil
    ) {
        self.family = family
        self.table = table
        self.protocol = `protocol`
        self.outputInterface = outputInterface
        self.type = type
    }

    /// Every route of every table.
    public static let all = RouteFilter(family: .unspecified, table: nil)

    func matches(_ route: Route) -> Bool {
        (family == .unspecified || route.family == family) && (table == nil || route.table == table)
            && (self.protocol == nil || route.protocol == self.protocol)
            && (outputInterface == nil || route.outputInterface == outputInterface)
            && (type == nil || route.type == type)
    }

    var request: NetlinkRequest {
        var m = MessageBuilder(type: RTM.getRoute, flags: [])
        var header: [UInt8] = [
            family.rawValue, 0, 0, 0, UInt8(truncatingIfNeeded: table.map { $0 < 256 ? $0 : 0 } ?? 0),
            self.protocol?.rawValue ?? 0, 0, type?.rawValue ?? 0,
        ]
        header.appendU32(0)
        m.append(familyHeader: header)
        if let table { m.attribute(RTA.table, u32: table) }
        if let outputInterface { m.attribute(RTA.oif, i32: outputInterface) }
        return NetlinkRequest(m, context: "listing routes")
    }
}

extension NetlinkSocket {
    public func routes(_ filter: RouteFilter = RouteFilter()) throws -> [Route] {
        try dump(filter.request).map(Route.init(message:)).filter(filter.matches)
    }

    /// The route the kernel would use to reach `address` (`ip route get`).
    public func routeLookup(to address: IPAddress) throws -> Route {
        var m = MessageBuilder(type: RTM.getRoute, flags: [])
        var header: [UInt8] = [address.family.rawValue, UInt8(address.bytes.count * 8), 0, 0, 0, 0, 0, 0]
        header.appendU32(0)
        m.append(familyHeader: header)
        m.attribute(RTA.dst, address.bytes)
        guard let reply = try execute(NetlinkRequest(m, context: "looking up the route to \(address)")).first else {
            throw NetlinkError(.noSuchFileOrDirectory, context: "looking up the route to \(address)")
        }
        return try Route(message: reply)
    }

    public func add(_ route: Route) throws { try execute(route.addRequest) }
    public func replace(_ route: Route) throws { try execute(route.replaceRequest) }
    public func delete(_ route: Route) throws { try execute(route.deleteRequest) }
}
