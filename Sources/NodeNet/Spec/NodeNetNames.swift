/// The names and numbers by which nodenet recognises what it owns.
public enum NodeNetNames {
    /// The host side of the node's host pair; holds the router IP.
    public static let hostDevice = "cilium_host"
    public static let netDevice = "cilium_net"
    /// The pod side of every endpoint veth.
    public static let podDevice = "eth0"
    /// `rtm_protocol` of every route nodenet installs (`/etc/iproute2/rt_protos.d/nodenet.conf`:
    /// `207 nodenet`). Routes with another protocol are never changed or deleted.
    public static let routeProtocol = RouteProtocol(rawValue: 207)
    /// The node-wide sysctls nodenet sets (to 1); their values before are recorded in the
    /// ledger and restored by teardown. Nothing else is ever recorded or restored.
    static let globalSysctls: Set<String> = ["net.ipv4.ip_forward"]

    /// `lxc` + 12 hex digits of a stable hash of the pod's `namespace/name` (FNV-1a, 64 bit).
    public static func endpointDevice(for pod: PodSpec) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in pod.id.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        let hex = String(hash, radix: 16)
        return "lxc" + String((String(repeating: "0", count: max(0, 16 - hex.count)) + hex).prefix(12))
    }

    /// Whether `name` has the shape of an endpoint device (`lxc` + 12 lowercase hex digits).
    public static func isEndpointDevice(_ name: String) -> Bool {
        name.count == 15 && name.hasPrefix("lxc") && name.dropFirst(3).allSatisfy { $0.isHexDigit && !$0.isUppercase }
    }
}
