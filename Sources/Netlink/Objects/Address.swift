/// An address on an interface (`RTM_NEWADDR`): `10.0.2.184/32 scope link dev cilium_host`.
public struct InterfaceAddress: Sendable, Equatable {
    public var interfaceIndex: InterfaceIndex
    /// The local address and its prefix length.
    public var prefix: IPPrefix
    public var scope: RouteScope
    /// `IFA_F_*` (from `IFA_FLAGS` when present, else the 8-bit header field).
    public var flags: UInt32
    /// The peer of a point-to-point address (`IFA_ADDRESS` when it differs from `IFA_LOCAL`).
    public var peer: IPAddress?
    public var label: String?
    public var broadcast: IPAddress?
    public var unknownAttributes: [NetlinkAttribute]

    public static let flagNoDAD: UInt32 = 0x02
    public static let flagPermanent: UInt32 = 0x80

    public init(
        interfaceIndex: InterfaceIndex, prefix: IPPrefix, scope: RouteScope = .universe, flags: UInt32 = 0,
        peer: IPAddress? = nil, label: String? = nil, broadcast: IPAddress? = nil
    ) {
        self.interfaceIndex = interfaceIndex
        self.prefix = prefix
        self.scope = scope
        self.flags = flags
        self.peer = peer
        self.label = label
        self.broadcast = broadcast
        self.unknownAttributes = []
    }

    static let headerSize = 8
    static let known: Set<UInt16> = [IFA.address, IFA.local, IFA.label, IFA.broadcast, IFA.flags, IFA.cacheInfo]

    public init(message: NetlinkMessage) throws {
        let r = ByteReader(message.payload)
        let family = try r.u8(0)
        let length = Int(try r.u8(1))
        let shortFlags = try r.u8(2)
        scope = RouteScope(rawValue: try r.u8(3))
        interfaceIndex = try r.interfaceIndex(4)
        let attrs = try AttributeList(parsing: try r.slice(Self.headerSize, r.count - Self.headerSize))
        let addressAttr = attrs[IFA.address].flatMap { IPAddress(bytes: $0.payload) }
        let local = attrs[IFA.local].flatMap { IPAddress(bytes: $0.payload) } ?? addressAttr
        guard let local, local.family.rawValue == family, let prefix = IPPrefix(local, length: length) else {
            throw NetlinkError.malformed("address message without a usable IFA_LOCAL/IFA_ADDRESS")
        }
        self.prefix = prefix
        peer = addressAttr != local ? addressAttr : nil
        flags = attrs[IFA.flags]?.u32 ?? UInt32(shortFlags)
        label = attrs[IFA.label]?.string
        broadcast = attrs[IFA.broadcast].flatMap { IPAddress(bytes: $0.payload) }
        unknownAttributes = attrs.unknown(excluding: Self.known)
    }

    func request(type: UInt16, flags requestFlags: NetlinkFlags, verb: String) -> NetlinkRequest {
        var m = MessageBuilder(type: type, flags: requestFlags)
        var header: [UInt8] = [prefix.family.rawValue, prefix.length, UInt8(truncatingIfNeeded: flags), scope.rawValue]
        header.appendIndex(interfaceIndex)
        m.append(familyHeader: header)
        m.attribute(IFA.local, prefix.address.bytes)
        m.attribute(IFA.address, (peer ?? prefix.address).bytes)
        if flags > 0xFF { m.attribute(IFA.flags, u32: flags) }
        if let label { m.attribute(IFA.label, string: label) }
        if let broadcast { m.attribute(IFA.broadcast, broadcast.bytes) }
        // An address read from the kernel and added or replaced again keeps what this type does
        // not model.
        if type != RTM.delAddress { for attribute in unknownAttributes { m.attribute(attribute) } }
        return NetlinkRequest(m, context: "\(verb) address \(prefix) on link \(interfaceIndex)")
    }

    public var addRequest: NetlinkRequest {
        request(type: RTM.newAddress, flags: [.create, .exclusive], verb: "adding")
    }
    public var replaceRequest: NetlinkRequest {
        request(type: RTM.newAddress, flags: [.create, .replace], verb: "replacing")
    }
    public var deleteRequest: NetlinkRequest { request(type: RTM.delAddress, flags: [], verb: "deleting") }
}

extension NetlinkSocket {
    /// Addresses, optionally of one family and one interface (filtered by the kernel).
    public func addresses(
        family: AddressFamily = .unspecified, interfaceIndex: InterfaceIndex? = nil
    ) throws -> [InterfaceAddress] {
        var m = MessageBuilder(type: RTM.getAddress, flags: [])
        var header: [UInt8] = [family.rawValue, 0, 0, 0]
        header.appendIndex(interfaceIndex ?? 0)
        m.append(familyHeader: header)
        return try dump(NetlinkRequest(m, context: "listing addresses")) { try InterfaceAddress(message: $0) }
            .filter { interfaceIndex == nil || $0.interfaceIndex == interfaceIndex }
    }

    /// Adds an address; `EEXIST` when it is already there.
    public func add(_ address: InterfaceAddress) throws { try execute(address.addRequest) }
    /// Adds or updates an address.
    public func replace(_ address: InterfaceAddress) throws { try execute(address.replaceRequest) }
}
