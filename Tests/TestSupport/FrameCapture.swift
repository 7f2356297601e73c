// Raw frame capture (AF_PACKET) inside a namespace: tests look at what really crossed a
// device. Not product code.
import Foundation
import Netlink
import NodeNet
import NodeNetLab

/// Raw frames received on a device inside a namespace (AF_PACKET), for checking headers.
public final class FrameCapture {
    private let socket: PacketSocket

    public init(namespace: NamespaceReference, device: String) throws {
        socket = try PacketSocket(device: device, in: namespace)
        socket.setTimeout(milliseconds: 2000)
    }

    /// The first received frame (at most 200, within the receive timeout) that `matches`.
    public func next(_ matches: ([UInt8]) -> Bool) -> [UInt8]? {
        for _ in 0..<200 {
            guard let (frame, address) = socket.receive() else { return nil }
            // Only frames coming in (not the pod's own replies going out).
            if address.pkttype != LinkLayerAddress.outgoing, matches(frame) { return frame }
        }
        return nil
    }

    /// Every frame queued so far, both directions (stops after `quiet` ms without a frame or
    /// at `limit` frames).
    public func drain(quiet: Int = 200, limit: Int = 100_000) -> [[UInt8]] {
        socket.setTimeout(milliseconds: quiet)
        var frames: [[UInt8]] = []
        while frames.count < limit, let (frame, _) = socket.receive() { frames.append(frame) }
        return frames
    }
}

/// The IPv4 addresses and TCP/UDP ports of a captured Ethernet frame, if it carries IPv4.
public struct CapturedIPv4: Equatable, CustomStringConvertible {
    public var source: String
    public var destination: String
    public var sourcePort: UInt16?
    public var destinationPort: UInt16?

    public init?(_ f: [UInt8]) {
        guard f.count >= 34, f[12] == 0x08, f[13] == 0x00 else { return nil }
        source = f[26..<30].map(String.init).joined(separator: ".")
        destination = f[30..<34].map(String.init).joined(separator: ".")
        let ihl = Int(f[14] & 0x0f) * 4
        if f[23] == 6 || f[23] == 17, f.count >= 14 + ihl + 4 {
            sourcePort = UInt16(f[14 + ihl]) << 8 | UInt16(f[15 + ihl])
            destinationPort = UInt16(f[16 + ihl]) << 8 | UInt16(f[17 + ihl])
        }
    }

    public var description: String { "\(source):\(sourcePort ?? 0) -> \(destination):\(destinationPort ?? 0)" }
}

/// A captured IPv4 frame's checks, computed as a receiver that trusts nothing would: the IP
/// header checksum and the TCP, UDP or ICMP checksum (with the pseudo header for TCP and UDP).
public struct CapturedChecksums {
    public var ipHeaderValid: Bool
    public var transportValid: Bool
    /// TCP flags (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10), nil for other protocols.
    public var tcpFlags: UInt8?

    public init?(_ f: [UInt8]) {
        guard f.count >= 34, f[12] == 0x08, f[13] == 0x00 else { return nil }
        let ihl = Int(f[14] & 0x0f) * 4
        let total = Int(UInt16(f[16]) << 8 | UInt16(f[17]))
        guard ihl >= 20, total >= ihl, f.count >= 14 + total else { return nil }
        ipHeaderValid = Self.sum(f[14..<(14 + ihl)]) == 0xffff
        let segment = f[(14 + ihl)..<(14 + total)]
        let proto = f[23]
        switch proto {
        case 6, 17:
            var pseudo = Array(f[26..<34])
            pseudo += [0, proto, UInt8(segment.count >> 8), UInt8(segment.count & 0xff)]
            transportValid = Self.sum(pseudo + segment) == 0xffff
        default:
            transportValid = Self.sum(segment) == 0xffff
        }
        tcpFlags = proto == 6 && segment.count >= 14 ? segment[segment.startIndex + 13] : nil
    }

    /// The ones' complement sum of `bytes` (0xffff when a checksum inside them is right).
    static func sum<C: Collection>(_ bytes: C) -> UInt16 where C.Element == UInt8 {
        var total: UInt32 = 0
        var it = bytes.makeIterator()
        while let hi = it.next() {
            let lo = it.next() ?? 0
            total += UInt32(hi) << 8 | UInt32(lo)
        }
        while total > 0xffff { total = (total & 0xffff) + (total >> 16) }
        return UInt16(total)
    }
}
