import Foundation
import NodeNet

/// Counts the IPv4 and ARP frames a device sends and receives from the moment it is opened:
/// what the seed read with tcpdump on cilium_host. The link's packet counters are no
/// substitute: they also count the IPv6 router solicitations and MLD reports the kernel sends
/// on a fresh device by itself, seconds after it comes up.
public final class FrameTap {
    private let socket: PacketSocket
    private var counted = 0

    public var device: String { socket.device }

    public init(device: String, in namespace: NamespaceReference) throws {
        socket = try PacketSocket(device: device, in: namespace)
    }

    /// IPv4 and ARP frames seen so far, in both directions (reads what is queued; never waits).
    public func ipv4Frames() -> Int {
        while let (_, address) = socket.receive(capacity: 64, wait: false) {
            let ethertype = UInt16(bigEndian: address.protocolBE)
            if ethertype == 0x0800 || ethertype == 0x0806 { counted += 1 }
        }
        return counted
    }
}
