import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Counts the IPv4 and ARP frames a device sends and receives from the moment it is opened
/// (an AF_PACKET socket bound to the device): what the seed read with tcpdump on cilium_host.
/// The link's packet counters are no substitute: they also count the IPv6 router solicitations
/// and MLD reports the kernel sends on a fresh device by itself, seconds after it comes up.
public final class FrameTap {
    /// `struct sockaddr_ll` (linux/if_packet.h), which Swift's Glibc module does not export.
    struct LinkLayerAddress {
        var family: UInt16 = UInt16(AF_PACKET)
        var protocolBE: UInt16 = UInt16(0x0003).bigEndian  // ETH_P_ALL
        var ifindex: Int32 = 0
        var hatype: UInt16 = 0
        var pkttype: UInt8 = 0
        var halen: UInt8 = 0
        var addr: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0)
    }

    public let device: String
    private let fd: Int32
    private let ifindex: Int32
    private var counted = 0

    public init(device: String, in namespace: NamespaceReference) throws {
        self.device = device
        (fd, ifindex) = try NetworkNamespace.run(in: namespace) {
            let index = Int32(if_nametoindex(device))
            guard index > 0 else { throw NodeNetError.missing("\(device) in \(namespace)") }
            let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(UInt16(0x0003).bigEndian))
            guard fd >= 0 else { throw NodeNetError.state("opening a packet socket for \(device): \(String(cString: strerror(errno)))") }
            var address = LinkLayerAddress()
            address.ifindex = index
            let rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<LinkLayerAddress>.size)) }
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

    /// IPv4 and ARP frames seen so far, in both directions (reads what is queued; never waits).
    public func ipv4Frames() -> Int {
        var buffer = [UInt8](repeating: 0, count: 64)
        while true {
            var from = LinkLayerAddress()
            var length = socklen_t(MemoryLayout<LinkLayerAddress>.size)
            let n = withUnsafeMutablePointer(to: &from) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT | MSG_TRUNC), $0, &length) }
            }
            guard n >= 0 else { break }
            // Frames queued between socket() and bind() may come from other devices.
            guard from.ifindex == ifindex else { continue }
            let ethertype = UInt16(bigEndian: from.protocolBE)
            if ethertype == 0x0800 || ethertype == 0x0806 { counted += 1 }
        }
        return counted
    }
}
