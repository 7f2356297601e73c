// Raw frame capture (AF_PACKET) inside a namespace: tests look at what really crossed a
// device. Not product code.
import Foundation
import Netlink

/// `struct sockaddr_ll` (linux/if_packet.h), which Swift's Glibc module does not export.
public struct LinkLayerAddress {
    public var family: UInt16 = UInt16(AF_PACKET)
    public var protocolBE: UInt16 = UInt16(3).bigEndian  // ETH_P_ALL
    public var ifindex: Int32 = 0
    public var hatype: UInt16 = 0
    public var pkttype: UInt8 = 0  // 4 = PACKET_OUTGOING
    public var halen: UInt8 = 0
    public var addr: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0)
    public init() {}
}

/// Raw frames received on a device inside a namespace (AF_PACKET), for checking headers.
public final class FrameCapture {
    public let fd: Int32

    public init(namespace: NamespaceReference, device: String) throws {
        fd = try NetworkNamespace.run(in: namespace) {
            let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue), Int32(UInt16(3).bigEndian))
            guard fd >= 0 else { throw CaptureError("AF_PACKET socket: \(String(cString: strerror(errno)))") }
            var addr = LinkLayerAddress()
            addr.ifindex = Int32(if_nametoindex(device))
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<LinkLayerAddress>.size)) } }
            guard rc == 0 else { throw CaptureError("binding AF_PACKET to \(device): \(String(cString: strerror(errno)))") }
            var tv = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            return fd
        }
    }

    deinit { close(fd) }

    /// The first received frame (at most 200, within the receive timeout) that `matches`.
    public func next(_ matches: ([UInt8]) -> Bool) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 2048)
        for _ in 0..<200 {
            var from = LinkLayerAddress()
            var length = socklen_t(MemoryLayout<LinkLayerAddress>.size)
            let n = withUnsafeMutablePointer(to: &from) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, &buffer, buffer.count, 0, $0, &length) } }
            guard n > 0 else { return nil }
            // Only frames coming in (not the pod's own replies going out).
            if from.pkttype != 4, matches(Array(buffer[0..<n])) { return Array(buffer[0..<n]) }
        }
        return nil
    }

    /// Every frame queued so far, both directions (stops after `quiet` ms without a frame or
    /// at `limit` frames).
    public func drain(quiet: Int = 200, limit: Int = 100_000) -> [[UInt8]] {
        var tv = timeval(tv_sec: 0, tv_usec: quiet * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var frames: [[UInt8]] = []
        var buffer = [UInt8](repeating: 0, count: 2048)
        while frames.count < limit {
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { break }
            frames.append(Array(buffer[0..<n]))
        }
        return frames
    }
}

public struct CaptureError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
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
        if (f[23] == 6 || f[23] == 17), f.count >= 14 + ihl + 4 {
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
