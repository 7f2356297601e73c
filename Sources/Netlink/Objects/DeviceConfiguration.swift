/// A device's per-protocol settings as a link dump carries them (`IFLA_AF_SPEC`: the IPv4
/// `IFLA_INET_CONF` and IPv6 `IFLA_INET6_CONF` arrays): the values
/// `/proc/sys/net/ipv4/conf/DEV/*` and `/proc/sys/net/ipv6/conf/DEV/*` show, read with the
/// link instead of a file each.
public struct DeviceConfiguration: Sendable, Equatable {
    /// `IPV4_DEVCONF_*` values: element k-1 holds devconf k (the kernel's `cnf.data`).
    public var ipv4: [Int32]
    /// IPv6 `DEVCONF_*` values, element k for devconf k; empty when the device has no IPv6.
    public var ipv6: [Int32]

    public init(ipv4: [Int32] = [], ipv6: [Int32] = []) {
        self.ipv4 = ipv4
        self.ipv6 = ipv6
    }

    static let afInet: UInt16 = 2
    static let afInet6: UInt16 = 10
    static let inetConf: UInt16 = 1  // IFLA_INET_CONF
    static let inet6Conf: UInt16 = 2  // IFLA_INET6_CONF

    /// From the payload of `IFLA_AF_SPEC`; nil when it holds neither array.
    init?(afSpec: NetlinkAttribute) {
        guard let families = try? afSpec.nested() else { return nil }
        func values(_ family: UInt16, _ type: UInt16) -> [Int32] {
            guard let conf = (try? families[family]?.nested())?[type] else { return [] }
            let r = conf.reader
            return (0..<conf.payload.count / 4).compactMap { try? r.i32($0 * 4) }
        }
        ipv4 = values(Self.afInet, Self.inetConf)
        ipv6 = values(Self.afInet6, Self.inet6Conf)
        if ipv4.isEmpty && ipv6.isEmpty { return nil }
    }

    /// `IPV4_DEVCONF_*` by sysctl name (include/uapi/linux/ip.h).
    static let ipv4Names: [String: Int] = [
        "forwarding": 1, "mc_forwarding": 2, "proxy_arp": 3, "accept_redirects": 4, "secure_redirects": 5,
        "send_redirects": 6, "shared_media": 7, "rp_filter": 8, "accept_source_route": 9, "bootp_relay": 10,
        "log_martians": 11, "tag": 12, "arp_filter": 13, "medium_id": 14, "disable_xfrm": 15, "disable_policy": 16,
        "force_igmp_version": 17, "arp_announce": 18, "arp_ignore": 19, "promote_secondaries": 20, "arp_accept": 21,
        "arp_notify": 22, "accept_local": 23, "src_valid_mark": 24, "proxy_arp_pvlan": 25, "route_localnet": 26,
        "ignore_routes_with_linkdown": 29, "drop_unicast_in_l2_multicast": 30, "drop_gratuitous_arp": 31,
        "bc_forwarding": 32,
    ]

    /// IPv6 `DEVCONF_*` by sysctl name (include/uapi/linux/ipv6.h), those with a plain integer.
    static let ipv6Names: [String: Int] = [
        "forwarding": 0, "hop_limit": 1, "mtu": 2, "accept_ra": 3, "accept_redirects": 4, "autoconf": 5,
        "dad_transmits": 6, "router_solicitations": 7, "use_tempaddr": 10, "max_addresses": 15,
        "force_mld_version": 16, "accept_ra_defrtr": 17, "accept_ra_pinfo": 18, "accept_ra_rtr_pref": 19,
        "accept_ra_rt_info_max_plen": 21, "proxy_ndp": 22, "optimistic_dad": 23, "accept_source_route": 24,
        "mc_forwarding": 25, "disable_ipv6": 26, "accept_dad": 27,
    ]

    /// What the per-device sysctl `key` (`net/ipv4/conf/DEV/NAME` or `net.ipv6.conf.DEV.NAME`)
    /// shows, when this configuration holds it; nil for other keys (read those from `/proc/sys`).
    public func value(ofSysctl key: String) -> String? {
        guard let (family, _, name) = Self.deviceKey(key) else { return nil }
        return value(ipv6: family == "ipv6", name: name)
    }

    /// The value of the IPv4 or IPv6 setting `name` (`rp_filter`, `disable_ipv6`), when held.
    public func value(ipv6: Bool, name: String) -> String? {
        if !ipv6, let k = Self.ipv4Names[name], k - 1 < ipv4.count { return "\(ipv4[k - 1])" }
        if ipv6, let k = Self.ipv6Names[name], k < self.ipv6.count { return "\(self.ipv6[k])" }
        return nil
    }

    /// The family, device and setting of a per-device key (`net/ipv4/conf/eth0/rp_filter`);
    /// nil for other keys and for `all`/`default`. (Scanned as bytes: plans ask it of every
    /// setting of a node.)
    public static func deviceKey(_ key: String) -> (family: String, device: String, name: String)? {
        let bytes = Array(key.utf8)
        guard bytes.count > 14 else { return nil }
        let separator = bytes[3]
        guard separator == UInt8(ascii: "/") || separator == UInt8(ascii: ".") else { return nil }
        let family: String
        switch String(decoding: bytes[0..<14], as: UTF8.self) {
        case "net/ipv4/conf/", "net.ipv4.conf.": family = "ipv4"
        case "net/ipv6/conf/", "net.ipv6.conf.": family = "ipv6"
        default: return nil
        }
        let rest = bytes[14...]
        guard let cut = rest.firstIndex(of: separator), cut > rest.startIndex,
            !bytes[(cut + 1)...].contains(separator), cut + 1 < bytes.count
        else { return nil }
        let device = String(decoding: rest[..<cut], as: UTF8.self)
        guard device != "all", device != "default", separator == UInt8(ascii: "/") || !device.contains(".")
        else { return nil }
        return (family, device, String(decoding: bytes[(cut + 1)...], as: UTF8.self))
    }
}
