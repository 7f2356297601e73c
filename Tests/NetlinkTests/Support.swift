import Foundation
import TestSupport
import Testing

@testable import Netlink

// MARK: Fixtures

/// Datagrams recorded from real kernel traffic: one hex line each, `#` comments.
func fixtureDatagrams(_ name: String) throws -> [[UInt8]] {
    guard let url = Bundle.module.url(forResource: name, withExtension: "hex", subdirectory: "Fixtures") else {
        throw FixtureError.missing(name)
    }
    return try String(contentsOf: url, encoding: .utf8).split(separator: "\n")
        .filter { !$0.hasPrefix("#") && !$0.isEmpty }
        .map { hexBytes(String($0)) }
}

func fixtureMessages(_ name: String) throws -> [NetlinkMessage] {
    try fixtureDatagrams(name).flatMap { try NetlinkMessage.parse($0[...]) }
}

enum FixtureError: Error { case missing(String) }

func hexBytes(_ text: String) -> [UInt8] {
    var bytes: [UInt8] = []
    var index = text.startIndex
    while let next = text.index(index, offsetBy: 2, limitedBy: text.endIndex), index != text.endIndex {
        bytes.append(UInt8(text[index..<next], radix: 16)!)
        index = next
    }
    return bytes
}

func hexString(_ bytes: some Sequence<UInt8>) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}

// MARK: A scripted kernel for unit tests

/// Stands in for the kernel: every datagram the socket sends is handed to `respond`, which
/// returns the datagrams the kernel would answer with.
final class FakeKernel: NetlinkTransport, @unchecked Sendable {
    let portID: UInt32 = 4242
    var fileDescriptor: Int32 { -1 }
    private(set) var sent: [[UInt8]] = []
    private var pending: [[UInt8]] = []
    private let respond: (_ messages: [NetlinkMessage], _ call: Int) -> [[UInt8]]

    init(respond: @escaping (_ messages: [NetlinkMessage], _ call: Int) -> [[UInt8]]) {
        self.respond = respond
    }

    func send(_ bytes: [UInt8]) throws {
        sent.append(bytes)
        pending += respond(try NetlinkMessage.parse(bytes[...]), sent.count)
    }

    func receive(into buffer: inout [UInt8]) throws -> Int {
        guard !pending.isEmpty else {
            throw NetlinkError(Errno(EAGAIN), kind: .system, detail: "fake kernel has nothing to say")
        }
        let datagram = pending.removeFirst()
        buffer.replaceSubrange(0..<datagram.count, with: datagram)
        return datagram.count
    }
}

/// Builds kernel-side messages for the fake kernel.
enum KernelSays {
    static func message(type: UInt16, flags: NetlinkFlags = [], sequence: UInt32, payload: [UInt8] = []) -> [UInt8] {
        var b: [UInt8] = []
        b.appendU32(UInt32(16 + payload.count))
        b.appendU16(type)
        b.appendU16(flags.rawValue)
        b.appendU32(sequence)
        b.appendU32(4242)
        b += payload
        b.padToAlignment()
        return b
    }

    /// An `NLMSG_ERROR`, capped, with optional extended-ACK text and offset.
    static func ack(
        for request: NetlinkMessage, error: Int32 = 0, text: String? = nil, offset: UInt32? = nil
    ) -> [UInt8] {
        var payload: [UInt8] = []
        payload.appendI32(error)
        payload.appendU32(request.header.length)
        payload.appendU16(request.header.type)
        payload.appendU16(request.header.flags.rawValue)
        payload.appendU32(request.header.sequence)
        payload.appendU32(request.header.portID)
        var flags: NetlinkFlags = [.capped]
        if text != nil || offset != nil { flags.insert(.ackTLVs) }
        if let text {
            let s = Array(text.utf8) + [0]
            payload.appendU16(UInt16(4 + s.count))
            payload.appendU16(1)
            payload += s
            payload.padToAlignment()
        }
        if let offset {
            payload.appendU16(8)
            payload.appendU16(2)
            payload.appendU32(offset)
        }
        return message(
            type: NetlinkMessageType.error, flags: flags, sequence: request.header.sequence, payload: payload)
    }

    static func done(sequence: UInt32, flags: NetlinkFlags = [.multi]) -> [UInt8] {
        message(type: NetlinkMessageType.done, flags: flags, sequence: sequence, payload: [0, 0, 0, 0])
    }
}
