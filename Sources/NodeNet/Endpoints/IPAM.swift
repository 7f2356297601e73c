/// Addresses for CNI endpoints from the node's `podCIDR`: never the network or broadcast
/// address, the router IP, a spec pod's or another endpoint's address. Like host-local, it
/// hands out the address after the last one it gave (wrapping), so a released address is not
/// reused at once (a new pod would inherit the old one's flows and caches).
public enum IPAM {
    public static func next(
        in cidr: IPPrefix, routerIP: IPAddress, taken: Set<IPAddress>, after last: IPAddress?
    ) -> IPAddress? {
        guard let base = cidr.network.address.ipv4Value, cidr.length <= 30 else { return nil }
        let size = UInt32(1) << UInt32(32 - cidr.length)
        let first = base + 1
        let final = base + size - 2
        var candidate = first
        if let last = last?.ipv4Value, last >= first, last < final { candidate = last + 1 }
        for _ in 0..<(size - 2) {
            let ip = IPAddress(ipv4: candidate)
            if ip != routerIP && !taken.contains(ip) { return ip }
            candidate = candidate == final ? first : candidate + 1
        }
        return nil
    }

    /// How many addresses endpoints can still get.
    public static func free(in cidr: IPPrefix, routerIP: IPAddress, taken: Set<IPAddress>) -> Int {
        guard cidr.length <= 30 else { return 0 }
        let hosts = (1 << (32 - Int(cidr.length))) - 2
        let used = taken.filter { cidr.contains($0) && !isNetworkOrBroadcast($0, cidr) }.union([routerIP]).count
        return max(0, hosts - used)
    }

    private static func isNetworkOrBroadcast(_ ip: IPAddress, _ cidr: IPPrefix) -> Bool {
        guard let v = ip.ipv4Value, let base = cidr.network.address.ipv4Value else { return true }
        return v == base || v == base | (UInt32.max >> UInt32(cidr.length))
    }
}
