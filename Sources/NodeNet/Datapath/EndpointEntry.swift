import CNodeNetBPF

/// An endpoints-map entry as plain values (the C struct is not Equatable).
public struct EndpointEntry: Sendable, Equatable, CustomStringConvertible {
    public var ifindex: UInt32
    public var hostMAC: MACAddress
    public var podMAC: MACAddress

    /// An entry as the pinned map stores it.
    public init(_ e: nodenet_endpoint) {
        ifindex = e.ifindex
        hostMAC = MACAddress(bytes: withUnsafeBytes(of: e.host_mac) { Array($0) })!
        podMAC = MACAddress(bytes: withUnsafeBytes(of: e.pod_mac) { Array($0) })!
    }

    init(ifindex: UInt32, hostMAC: MACAddress, podMAC: MACAddress) {
        self.ifindex = ifindex
        self.hostMAC = hostMAC
        self.podMAC = podMAC
    }

    /// As the pinned map stores it (the layout of bpf/lib/maps.h).
    var mapValue: nodenet_endpoint {
        let h = hostMAC.bytes
        let p = podMAC.bytes
        return nodenet_endpoint(
            ifindex: ifindex, host_mac: (h[0], h[1], h[2], h[3], h[4], h[5]),
            pod_mac: (p[0], p[1], p[2], p[3], p[4], p[5]), flags: 0)
    }

    public var description: String { "ifindex \(ifindex), lxc \(hostMAC), pod \(podMAC)" }

    /// The map's key of a pod's (IPv4) address.
    public static func key(_ ip: IPAddress) -> nodenet_endpoint_key {
        nodenet_endpoint_key(ip: ip.ipv4Value!.bigEndian)
    }
}
