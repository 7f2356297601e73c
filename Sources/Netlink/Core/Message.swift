/// `struct nlmsghdr`.
public struct NetlinkHeader: Sendable, Equatable {
    public static let size = 16
    public var length: UInt32
    public var type: UInt16
    public var flags: NetlinkFlags
    public var sequence: UInt32
    public var portID: UInt32

    public init(length: UInt32, type: UInt16, flags: NetlinkFlags, sequence: UInt32, portID: UInt32) {
        self.length = length
        self.type = type
        self.flags = flags
        self.sequence = sequence
        self.portID = portID
    }
}

/// One netlink message: its header and the payload that follows it (family header + attributes).
public struct NetlinkMessage: Sendable {
    public var header: NetlinkHeader
    public var payload: ArraySlice<UInt8>

    /// Splits a datagram into messages. Truncated or inconsistent lengths throw.
    public static func parse(_ datagram: ArraySlice<UInt8>) throws -> [NetlinkMessage] {
        var messages: [NetlinkMessage] = []
        var offset = 0
        let reader = ByteReader(datagram)
        while datagram.count - offset >= NetlinkHeader.size {
            let length = Int(try reader.u32(offset))
            guard length >= NetlinkHeader.size, length <= datagram.count - offset else {
                throw NetlinkError.malformed(
                    "message at offset \(offset) claims \(length) bytes, \(datagram.count - offset) remain")
            }
            let header = NetlinkHeader(
                length: UInt32(length), type: try reader.u16(offset + 4),
                flags: NetlinkFlags(rawValue: try reader.u16(offset + 6)),
                sequence: try reader.u32(offset + 8), portID: try reader.u32(offset + 12))
            let payload = try reader.slice(offset + NetlinkHeader.size, length - NetlinkHeader.size)
            messages.append(NetlinkMessage(header: header, payload: payload))
            offset += netlinkAlign(length)
        }
        if offset < datagram.count, datagram.count - offset < NetlinkHeader.size,
            datagram[(datagram.startIndex + offset)...].contains(where: { $0 != 0 })
        {
            throw NetlinkError.malformed("\(datagram.count - offset) trailing bytes after the last message")
        }
        return messages
    }
}

/// Builds one request: header, fixed family header, then attributes (nested allowed).
/// Sequence number and port id are filled in by the socket when it sends.
public struct MessageBuilder: Sendable {
    public private(set) var bytes: [UInt8]

    public init(type: UInt16, flags: NetlinkFlags) {
        bytes = []
        bytes.reserveCapacity(128)
        bytes.appendU32(0)  // length, set by `finish`
        bytes.appendU16(type)
        bytes.appendU16(flags.rawValue)
        bytes.appendU32(0)  // sequence
        bytes.appendU32(0)  // port id
    }

    public var type: UInt16 { UInt16(bytes[4]) | UInt16(bytes[5]) << 8 }
    public var flags: NetlinkFlags {
        get { NetlinkFlags(rawValue: UInt16(bytes[6]) | UInt16(bytes[7]) << 8) }
        set { bytes.storeU16(newValue.rawValue, at: 6) }
    }

    /// Appends a fixed family header (`ifinfomsg`, `rtmsg`, ...), padded to 4 bytes.
    public mutating func append(familyHeader: [UInt8]) {
        bytes.append(contentsOf: familyHeader)
        bytes.padToAlignment()
    }

    public mutating func attribute(_ type: UInt16, _ payload: [UInt8]) {
        bytes.appendU16(UInt16(4 + payload.count))
        bytes.appendU16(type)
        bytes.append(contentsOf: payload)
        bytes.padToAlignment()
    }

    /// An attribute as it was received (its nested flag kept): how decoded objects send back
    /// what they did not interpret.
    public mutating func attribute(_ attribute: NetlinkAttribute) {
        self.attribute(attribute.type | (attribute.isNested ? AttributeFlags.nested : 0), Array(attribute.payload))
    }

    public mutating func attribute(_ type: UInt16, u8 value: UInt8) { attribute(type, [value]) }
    public mutating func attribute(_ type: UInt16, u16 value: UInt16) {
        var p: [UInt8] = []
        p.appendU16(value)
        attribute(type, p)
    }
    public mutating func attribute(_ type: UInt16, u32 value: UInt32) {
        var p: [UInt8] = []
        p.appendU32(value)
        attribute(type, p)
    }
    public mutating func attribute(_ type: UInt16, index: InterfaceIndex) { attribute(type, i32: index.rawValue) }
    public mutating func attribute(_ type: UInt16, i32 value: Int32) { attribute(type, u32: UInt32(bitPattern: value)) }
    /// A NUL-terminated string attribute.
    public mutating func attribute(_ type: UInt16, string: String) { attribute(type, Array(string.utf8) + [0]) }

    /// A nested attribute whose payload is built by `body`.
    public mutating func nested(_ type: UInt16, _ body: (inout MessageBuilder) -> Void) {
        let start = bytes.count
        bytes.appendU16(0)
        bytes.appendU16(type | AttributeFlags.nested)
        body(&self)
        bytes.storeU16(UInt16(bytes.count - start), at: start)
    }

    /// The finished message with length, sequence and port id set.
    public func finished(sequence: UInt32, portID: UInt32) -> [UInt8] {
        var out = bytes
        out.storeU32(UInt32(out.count), at: 0)
        out.storeU32(sequence, at: 8)
        out.storeU32(portID, at: 12)
        return out
    }
}

/// A request ready to send, with a description of what it does for error messages
/// (`adding route 10.0.1.0/24 via 172.18.0.3 dev eth0`).
public struct NetlinkRequest: Sendable {
    public var message: MessageBuilder
    public var context: String

    public init(_ message: MessageBuilder, context: String) {
        self.message = message
        self.context = context
    }
}
