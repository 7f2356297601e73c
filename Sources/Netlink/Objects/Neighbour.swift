/// `NUD_*` neighbour states.
public struct NeighbourState: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let incomplete = NeighbourState(rawValue: 0x01)
    public static let reachable = NeighbourState(rawValue: 0x02)
    public static let stale = NeighbourState(rawValue: 0x04)
    public static let delay = NeighbourState(rawValue: 0x08)
    public static let probe = NeighbourState(rawValue: 0x10)
    public static let failed = NeighbourState(rawValue: 0x20)
    public static let noARP = NeighbourState(rawValue: 0x40)
    public static let permanent = NeighbourState(rawValue: 0x80)
}

/// A neighbour (ARP / NDP) entry: `10.0.2.184 lladdr aa:bb:.. dev eth0 PERMANENT`.
public struct Neighbour: Sendable, Equatable {
    public var interfaceIndex: InterfaceIndex
    public var address: IPAddress
    public var linkLayerAddress: MACAddress?
    public var state: NeighbourState
    public var flags: UInt8
    public var unknownAttributes: [NetlinkAttribute]

    public init(
        interfaceIndex: InterfaceIndex, address: IPAddress, linkLayerAddress: MACAddress?,
        state: NeighbourState = .permanent
    ) {
        self.interfaceIndex = interfaceIndex
        self.address = address
        self.linkLayerAddress = linkLayerAddress
        self.state = state
        self.flags = 0
        self.unknownAttributes = []
    }

    static let headerSize = 12
    static let ndaIfindex: UInt16 = 8
    static let known: Set<UInt16> = [NDA.dst, NDA.linkLayerAddress]

    public init(message: NetlinkMessage) throws {
        let r = ByteReader(message.payload)
        interfaceIndex = try r.interfaceIndex(4)
        state = NeighbourState(rawValue: try r.u16(8))
        flags = try r.u8(10)
        let attrs = try AttributeList(parsing: try r.slice(Self.headerSize, r.count - Self.headerSize))
        guard let dst = attrs[NDA.dst].flatMap({ IPAddress(bytes: $0.payload) }) else {
            throw NetlinkError.malformed("neighbour without NDA_DST")
        }
        address = dst
        linkLayerAddress = attrs[NDA.linkLayerAddress].flatMap { MACAddress(bytes: $0.payload) }
        unknownAttributes = attrs.unknown(excluding: Self.known)
    }

    func request(type: UInt16, flags requestFlags: NetlinkFlags, verb: String) -> NetlinkRequest {
        var m = MessageBuilder(type: type, flags: requestFlags)
        var header: [UInt8] = [address.family.rawValue, 0, 0, 0]
        header.appendIndex(interfaceIndex)
        header.appendU16(state.rawValue)
        header.append(flags)
        header.append(0)
        m.append(familyHeader: header)
        m.attribute(NDA.dst, address.bytes)
        if let linkLayerAddress { m.attribute(NDA.linkLayerAddress, linkLayerAddress.bytes) }
        // What the library does not model (the entry's protocol, extended flags, …) goes back
        // as it came, so a read–change–replace keeps it; a delete names the entry by its keys.
        if type != RTM.delNeighbour { for attribute in unknownAttributes { m.attribute(attribute) } }
        return NetlinkRequest(m, context: "\(verb) neighbour \(address) on link \(interfaceIndex)")
    }

    public var replaceRequest: NetlinkRequest {
        request(type: RTM.newNeighbour, flags: [.create, .replace], verb: "replacing")
    }
    public var deleteRequest: NetlinkRequest { request(type: RTM.delNeighbour, flags: [], verb: "deleting") }
}

extension NetlinkSocket {
    /// Neighbour entries, optionally of one family and interface (filtered by the kernel).
    public func neighbours(
        family: AddressFamily = .unspecified, interfaceIndex: InterfaceIndex? = nil
    ) throws -> [Neighbour] {
        var m = MessageBuilder(type: RTM.getNeighbour, flags: [])
        var header: [UInt8] = [family.rawValue, 0, 0, 0]
        header.appendI32(0)
        header.appendU16(0)
        header.append(contentsOf: [0, 0])
        m.append(familyHeader: header)
        if let interfaceIndex { m.attribute(Neighbour.ndaIfindex, index: interfaceIndex) }
        return try dump(NetlinkRequest(m, context: "listing neighbours")).map(Neighbour.init(message:))
            .filter { interfaceIndex == nil || $0.interfaceIndex == interfaceIndex }
    }

    public func replace(_ neighbour: Neighbour) throws { try execute(neighbour.replaceRequest) }
}
