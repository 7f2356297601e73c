/// Decodes an `NLMSG_ERROR` payload: `struct nlmsgerr` (error + the request's header, or
/// the whole request when the ACK is not capped), then the extended-ACK attributes.
struct ExtendedAck: Sendable, Equatable {
    /// 0 for a plain acknowledgement, otherwise a negative errno.
    var error: Int32
    /// The request's header as echoed by the kernel.
    var requestHeader: NetlinkHeader
    var message: String?
    var offset: Int?
    var missingType: UInt16?

    init(parsing message: NetlinkMessage) throws {
        let reader = ByteReader(message.payload)
        error = try reader.i32(0)
        let length = try reader.u32(4)
        requestHeader = NetlinkHeader(
            length: length, type: try reader.u16(8), flags: NetlinkFlags(rawValue: try reader.u16(10)),
            sequence: try reader.u32(12), portID: try reader.u32(16))
        guard message.header.flags.contains(.ackTLVs) else { return }
        // Capped: only the request's header is echoed; otherwise the whole request.
        let echoed = message.header.flags.contains(.capped) ? NetlinkHeader.size : netlinkAlign(Int(length))
        let start = 4 + echoed
        guard start <= message.payload.count else {
            throw NetlinkError.malformed("extended ACK starts at \(start), payload is \(message.payload.count) bytes")
        }
        let tlvs = try AttributeList(parsing: try reader.slice(start, message.payload.count - start))
        self.message = tlvs[ExtAckAttribute.message].map { $0.string }.flatMap { $0.isEmpty ? nil : $0 }
        self.offset = tlvs[ExtAckAttribute.offset]?.u32.map { Int($0) }
        self.missingType = tlvs[ExtAckAttribute.missingType]?.u32.map { UInt16(truncatingIfNeeded: $0) }
    }

    /// The error this ACK reports, or nil for success. `request` (our own bytes) lets the
    /// offending attribute's type be named.
    func failure(request: [UInt8]?, context: String?) -> NetlinkError? {
        guard error != 0 else { return nil }
        var e = NetlinkError(Errno(rawValue: 0 &- error), kind: .kernel, context: context)
        e.kernelMessage = message
        e.attributeOffset = offset
        e.missingAttributeType = missingType
        if let offset, let request, offset >= NetlinkHeader.size, offset + 4 <= request.count {
            e.attributeType = (UInt16(request[offset + 2]) | UInt16(request[offset + 3]) << 8) & AttributeFlags.typeMask
        }
        return e
    }
}
