/// A route (`RTM_NEWROUTE`): `10.0.1.0/24 via 172.18.0.3 dev eth0 proto 3`.
public struct Route: Sendable, Equatable {
    /// The destination; `0.0.0.0/0` (or `::/0`) is the default route.
    public var destination: IPPrefix
    public var gateway: IPAddress?
    public var interfaceIndex: InterfaceIndex?
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
        destination: IPPrefix, gateway: IPAddress? = nil, interfaceIndex: InterfaceIndex? = nil,
        preferredSource: IPAddress? = nil, scope: RouteScope = .universe, table: UInt32 = RouteTable.main,
        protocol: RouteProtocol = .boot, type: RouteType = .unicast, onLink: Bool = false, mtu: UInt32? = nil,
        priority: UInt32? = nil
    ) {
        self.destination = destination
        self.gateway = gateway
        self.interfaceIndex = interfaceIndex
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

    public init(message: NetlinkMessage) throws {
        // Route dumps are the largest nodenet reads (100 000+ entries): decode from the raw
        // bytes without reference counting, and make slices only for unknown attributes.
        let payload = message.payload
        self = try payload.withUnsafeBytes { raw in try Route(raw: raw, payload: payload) }
    }

    private init(raw: UnsafeRawBufferPointer, payload: ArraySlice<UInt8>) throws {
        guard raw.count >= Self.headerSize else { throw NetlinkError.malformed("route message of \(raw.count) bytes") }
        guard let family = AddressFamily(rawValue: raw[0]), family != .unspecified else {
            throw NetlinkError.malformed("route with unknown family \(raw[0])")
        }
        let dstLength = Int(raw[1])
        self.protocol = RouteProtocol(rawValue: raw[5])
        scope = RouteScope(rawValue: raw[6])
        type = RouteType(rawValue: raw[7])
        flags = raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
        onLink = flags & RTA.flagOnLink != 0
        var dst: IPAddress?
        var gateway: IPAddress?
        var interfaceIndex: InterfaceIndex?
        var preferredSource: IPAddress?
        var table = UInt32(raw[4])
        var priority: UInt32?
        var mtu: UInt32?
        var unknown: [NetlinkAttribute] = []
        var offset = Self.headerSize
        while raw.count - offset >= 4 {
            let length = Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
            let rawType = raw.loadUnaligned(fromByteOffset: offset + 2, as: UInt16.self)
            guard length >= 4, length <= raw.count - offset else {
                throw NetlinkError.malformed("route attribute at offset \(offset) has length \(length)")
            }
            let value = UnsafeRawBufferPointer(rebasing: raw[(offset + 4)..<(offset + length)])
            func u32() -> UInt32? { value.count >= 4 ? value.loadUnaligned(as: UInt32.self) : nil }
            switch rawType & AttributeFlags.typeMask {
            case RTA.dst:
                guard let ip = IPAddress(bytes: value), ip.family == family else {
                    throw NetlinkError.malformed("RTA_DST of \(value.count) bytes")
                }
                dst = ip
            case RTA.gateway: gateway = IPAddress(bytes: value)
            case RTA.oif: interfaceIndex = u32().map { InterfaceIndex(Int32(bitPattern: $0)) }
            case RTA.prefSrc: preferredSource = IPAddress(bytes: value)
            case RTA.table: table = u32() ?? table
            case RTA.priority: priority = u32()
            case RTA.metrics:
                let start = payload.startIndex + offset + 4
                mtu = try AttributeList(parsing: payload[start..<(start + length - 4)])[RTA.metricMTU]?.u32
            default:
                let start = payload.startIndex + offset + 4
                unknown.append(
                    NetlinkAttribute(
                        type: rawType & AttributeFlags.typeMask, isNested: rawType & AttributeFlags.nested != 0,
                        payload: payload[start..<(start + length - 4)]))
            }
            offset += netlinkAlign(length)
        }
        let zero = IPAddress(family: family, high: 0, low: 0)
        guard let prefix = IPPrefix(dst ?? zero, length: dstLength) else {
            throw NetlinkError.malformed("route prefix length \(dstLength)")
        }
        destination = prefix
        self.gateway = gateway
        self.interfaceIndex = interfaceIndex
        self.preferredSource = preferredSource
        self.table = table
        self.priority = priority
        self.mtu = mtu
        unknownAttributes = unknown
    }

    /// `10.0.1.0/24 via 172.18.0.3 dev 2` style text for messages.
    public var summary: String {
        var s = isDefault ? "default" : destination.description
        if let gateway { s += " via \(gateway)" }
        if let interfaceIndex { s += " dev \(interfaceIndex)" }
        if table != RouteTable.main { s += " table \(table)" }
        return s
    }

    func request(
        type messageType: UInt16, flags requestFlags: NetlinkFlags, verb: String, deleting: Bool = false
    )
        -> NetlinkRequest
    {
        var m = MessageBuilder(type: messageType, flags: requestFlags)
        var header: [UInt8] = [
            family.rawValue, destination.length, 0, 0, UInt8(table < 256 ? table : 0), self.protocol.rawValue,
            deleting ? RouteScope.nowhere.rawValue : scope.rawValue, type.rawValue,
        ]
        // Only RTNH_F_ONLINK is ours to send: flags the kernel reports (LINKDOWN, DEAD,
        // OFFLOAD...) are rejected in requests.
        header.appendU32(onLink ? RTA.flagOnLink : 0)
        m.append(familyHeader: header)
        if destination.length > 0 { m.attribute(RTA.dst, destination.network.address.bytes) }
        m.attribute(RTA.table, u32: table)
        if let gateway { m.attribute(RTA.gateway, gateway.bytes) }
        if let interfaceIndex { m.attribute(RTA.oif, index: interfaceIndex) }
        if let preferredSource { m.attribute(RTA.prefSrc, preferredSource.bytes) }
        if let priority { m.attribute(RTA.priority, u32: priority) }
        if let mtu { m.nested(RTA.metrics) { $0.attribute(RTA.metricMTU, u32: mtu) } }
        // A route read from the kernel and added or replaced again keeps what this type does not
        // model (multipath, encapsulation, ...). A delete names the route by its keys only.
        if !deleting { for attribute in unknownAttributes { m.attribute(attribute) } }
        return NetlinkRequest(m, context: "\(verb) route \(summary)")
    }

    /// Add-exclusive: fails with `EEXIST` when the same route is there.
    public var addRequest: NetlinkRequest { request(type: RTM.newRoute, flags: [.create, .exclusive], verb: "adding") }
    /// Create or replace the route with the same destination, table and metric.
    public var replaceRequest: NetlinkRequest {
        request(type: RTM.newRoute, flags: [.create, .replace], verb: "replacing")
    }
    /// Deletes the route matching destination, table, protocol, type and (when set) gateway/device.
    public var deleteRequest: NetlinkRequest {
        request(type: RTM.delRoute, flags: [], verb: "deleting", deleting: true)
    }
}

/// Which routes a listing returns. The kernel filters (strict dump checking); the same
/// filter is applied again on the answer, so older kernels give the same result.
public struct RouteFilter: Sendable, Equatable {
    public var family: AddressFamily
    public var table: UInt32?
    public var `protocol`: RouteProtocol?
    public var interfaceIndex: InterfaceIndex?
    public var type: RouteType?

    public init(
        family: AddressFamily = .inet, table: UInt32? = RouteTable.main, protocol: RouteProtocol? = nil,
        interfaceIndex: InterfaceIndex? = nil, type: RouteType? = nil
    ) {
        self.family = family
        self.table = table
        self.protocol = `protocol`
        self.interfaceIndex = interfaceIndex
        self.type = type
    }

    /// Every route of every table.
    public static let all = RouteFilter(family: .unspecified, table: nil)

    func matches(_ route: Route) -> Bool {
        (family == .unspecified || route.family == family) && (table == nil || route.table == table)
            && (self.protocol == nil || route.protocol == self.protocol)
            && (interfaceIndex == nil || route.interfaceIndex == interfaceIndex)
            && (type == nil || route.type == type)
    }

    /// The dump request, for callers that want the raw messages.
    public var request: NetlinkRequest {
        var m = MessageBuilder(type: RTM.getRoute, flags: [])
        var header: [UInt8] = [
            family.rawValue, 0, 0, 0, UInt8(truncatingIfNeeded: table.map { $0 < 256 ? $0 : 0 } ?? 0),
            self.protocol?.rawValue ?? 0, 0, type?.rawValue ?? 0,
        ]
        header.appendU32(0)
        m.append(familyHeader: header)
        if let table { m.attribute(RTA.table, u32: table) }
        if let interfaceIndex { m.attribute(RTA.oif, index: interfaceIndex) }
        return NetlinkRequest(m, context: "listing routes")
    }
}

extension NetlinkSocket {
    /// Routes matching `filter`. A table that does not exist yet (a fresh namespace has no
    /// main table until its first route) holds no routes: the kernel's ENOENT for a
    /// table-filtered dump is returned as an empty list.
    public func routes(_ filter: RouteFilter = RouteFilter()) throws -> [Route] {
        do {
            return try dump(filter.request) { message -> Route? in
                let route = try Route(message: message)
                return filter.matches(route) ? route : nil
            }
        } catch let e as NetlinkError
            where e.kind == .kernel && e.errno == .noSuchFileOrDirectory && filter.table != nil
        {
            return []
        }
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
}
