import Foundation

#if canImport(Glibc)
    import Glibc
    import NodeNet
#endif

/// `struct sockaddr_ll` (linux/if_packet.h), which Swift's Glibc module does not export.
public struct LinkLayerAddress {
    public var family: UInt16 = UInt16(AF_PACKET)
    public var protocolBE: UInt16 = UInt16(0x0003).bigEndian  // ETH_P_ALL
    public var ifindex: Int32 = 0
    public var hatype: UInt16 = 0
    public var pkttype: UInt8 = 0  // PACKET_OUTGOING (4): sent by this host
    public var halen: UInt8 = 0
    public var addr: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0)
    public init() {}

    public static let outgoing: UInt8 = 4
}

/// An AF_PACKET socket that sees every frame a device inside a namespace sends and receives
/// (the lab's and the tests' tcpdump). Frames queued between socket() and bind() may come
/// from other devices: `receive` leaves them out.
public final class PacketSocket {
    public let fd: Int32
    public let device: String
    public let ifindex: Int32

    public init(device: String, in namespace: NamespaceReference) throws {
        self.device = device
        (fd, ifindex) = try NetworkNamespace.run(in: namespace) {
            let index = Int32(if_nametoindex(device))
            guard index > 0 else { throw NodeNetError.missing("\(device) in \(namespace)") }
            let fd = socket(
                AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(UInt16(0x0003).bigEndian))
            guard fd >= 0 else {
                throw NodeNetError.state("opening a packet socket for \(device): \(String(cString: strerror(errno)))")
            }
            var address = LinkLayerAddress()
            address.ifindex = index
            let rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<LinkLayerAddress>.size))
                }
            }
            guard rc == 0 else {
                let error = String(cString: strerror(errno))
                close(fd)
                throw NodeNetError.state("binding a packet socket to \(device): \(error)")
            }
            return (fd, index)
        }
    }

    deinit { close(fd) }

    /// Waits at most `milliseconds` for each frame (0: never waits).
    public func setTimeout(milliseconds: Int) {
        var tv = timeval(tv_sec: milliseconds / 1000, tv_usec: Int((milliseconds % 1000) * 1000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// The next frame of this device (up to `capacity` bytes of it) and where it went; nil
    /// when none came in time (or, with `wait` false, none is queued).
    public func receive(capacity: Int = 2048, wait: Bool = true) -> (frame: [UInt8], address: LinkLayerAddress)? {
        var buffer = [UInt8](repeating: 0, count: capacity)
        while true {
            var from = LinkLayerAddress()
            var length = socklen_t(MemoryLayout<LinkLayerAddress>.size)
            let n = withUnsafeMutablePointer(to: &from) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(fd, &buffer, buffer.count, wait ? 0 : Int32(MSG_DONTWAIT), $0, &length)
                }
            }
            guard n >= 0 else { return nil }
            if from.ifindex == ifindex { return (Array(buffer[0..<min(n, capacity)]), from) }
        }
    }
}
