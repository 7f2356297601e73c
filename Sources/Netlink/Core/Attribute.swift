/// One netlink attribute (`struct nlattr` + payload). Unknown attributes are kept as they
/// came, so decoded objects can carry them and nothing the kernel said is lost.
public struct NetlinkAttribute: Sendable, Equatable {
    public var type: UInt16
    public var isNested: Bool
    public var payload: ArraySlice<UInt8>

    public init(type: UInt16, isNested: Bool = false, payload: ArraySlice<UInt8>) {
        self.type = type
        self.isNested = isNested
        self.payload = payload
    }

    public static func == (a: NetlinkAttribute, b: NetlinkAttribute) -> Bool {
        a.type == b.type && a.isNested == b.isNested && a.payload.elementsEqual(b.payload)
    }

    var reader: ByteReader { ByteReader(payload) }
    public var u8: UInt8? { payload.count >= 1 ? payload.first : nil }
    public var u16: UInt16? { try? reader.u16(0) }
    public var u32: UInt32? { try? reader.u32(0) }
    public var i32: Int32? { try? reader.i32(0) }
    public var interfaceIndex: InterfaceIndex? { i32.map { InterfaceIndex($0) } }
    public var string: String { payload.cString }
    /// The payload parsed as nested attributes.
    public func nested() throws -> AttributeList { try AttributeList(parsing: payload) }
}

/// A sequence of attributes, in kernel order.
public struct AttributeList: Sendable, Equatable {
    public var attributes: [NetlinkAttribute]

    public init(_ attributes: [NetlinkAttribute] = []) { self.attributes = attributes }

    /// Parses attributes; a length that runs past the end or is below 4 throws.
    public init(parsing bytes: ArraySlice<UInt8>) throws {
        let reader = ByteReader(bytes)
        var offset = 0
        var list: [NetlinkAttribute] = []
        while bytes.count - offset >= 4 {
            let length = Int(try reader.u16(offset))
            let rawType = try reader.u16(offset + 2)
            guard length >= 4 else {
                throw NetlinkError.malformed("attribute at offset \(offset) has length \(length)")
            }
            let payload = try reader.slice(offset + 4, length - 4)
            list.append(
                NetlinkAttribute(
                    type: rawType & AttributeFlags.typeMask, isNested: rawType & AttributeFlags.nested != 0,
                    payload: payload))
            offset += netlinkAlign(length)
        }
        attributes = list
    }

    public subscript(type: UInt16) -> NetlinkAttribute? { attributes.first { $0.type == type } }

    /// Attributes whose types are not in `known`: what a decoder did not interpret.
    func unknown(excluding known: Set<UInt16>) -> [NetlinkAttribute] {
        attributes.filter { !known.contains($0.type) }
    }
}

/// Walks attributes without building a list: for decoders on hot paths (route dumps).
/// Same validation as `AttributeList(parsing:)`.
func forEachAttribute(
    in bytes: ArraySlice<UInt8>, _ body: (_ type: UInt16, _ attribute: NetlinkAttribute) throws -> Void
) throws {
    let reader = ByteReader(bytes)
    var offset = 0
    while bytes.count - offset >= 4 {
        let length = Int(try reader.u16(offset))
        let rawType = try reader.u16(offset + 2)
        guard length >= 4 else { throw NetlinkError.malformed("attribute at offset \(offset) has length \(length)") }
        let attribute = NetlinkAttribute(
            type: rawType & AttributeFlags.typeMask, isNested: rawType & AttributeFlags.nested != 0,
            payload: try reader.slice(offset + 4, length - 4))
        try body(attribute.type, attribute)
        offset += netlinkAlign(length)
    }
}
