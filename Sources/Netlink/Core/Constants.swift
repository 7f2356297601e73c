// Kernel UAPI constants used by the Netlink module, in one place and typed.
// Values come from linux/netlink.h, linux/rtnetlink.h, linux/if_link.h,
// linux/if_addr.h, linux/neighbour.h, linux/pkt_sched.h and linux/pkt_cls.h.
// They are ABI and never change; keeping them here (rather than importing the
// C macros) gives one type per field and keeps function-like macros out.

/// Netlink message types shared by every family (`NLMSG_*`).
public enum NetlinkMessageType {
    public static let noop: UInt16 = 1
    public static let error: UInt16 = 2
    public static let done: UInt16 = 3
    public static let overrun: UInt16 = 4
}

/// `nlmsg_flags` bits.
public struct NetlinkFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let request = NetlinkFlags(rawValue: 0x01)
    public static let multi = NetlinkFlags(rawValue: 0x02)
    public static let ack = NetlinkFlags(rawValue: 0x04)
    public static let echo = NetlinkFlags(rawValue: 0x08)
    public static let dumpInterrupted = NetlinkFlags(rawValue: 0x10)
    public static let dumpFiltered = NetlinkFlags(rawValue: 0x20)
    // GET requests
    public static let root = NetlinkFlags(rawValue: 0x100)
    public static let match = NetlinkFlags(rawValue: 0x200)
    public static let dump: NetlinkFlags = [.root, .match]
    // NEW requests
    public static let replace = NetlinkFlags(rawValue: 0x100)
    public static let exclusive = NetlinkFlags(rawValue: 0x200)
    public static let create = NetlinkFlags(rawValue: 0x400)
    public static let append = NetlinkFlags(rawValue: 0x800)
    // ACK messages
    public static let capped = NetlinkFlags(rawValue: 0x100)
    public static let ackTLVs = NetlinkFlags(rawValue: 0x200)
}

enum SocketOption {
    static let solNetlink: Int32 = 270
    static let addMembership: Int32 = 1
    static let capAck: Int32 = 10
    static let extAck: Int32 = 11
    static let getStrictCheck: Int32 = 12
    static let netlinkRoute: Int32 = 0
}

enum ExtAckAttribute {
    static let message: UInt16 = 1
    static let offset: UInt16 = 2
    static let cookie: UInt16 = 3
    static let policy: UInt16 = 4
    static let missingType: UInt16 = 5
    static let missingNest: UInt16 = 6
}

/// rtnetlink message types (`RTM_*`).
public enum RTM {
    public static let newLink: UInt16 = 16
    public static let delLink: UInt16 = 17
    public static let getLink: UInt16 = 18
    public static let setLink: UInt16 = 19
    public static let newAddress: UInt16 = 20
    public static let delAddress: UInt16 = 21
    public static let getAddress: UInt16 = 22
    public static let newRoute: UInt16 = 24
    public static let delRoute: UInt16 = 25
    public static let getRoute: UInt16 = 26
    public static let newNeighbour: UInt16 = 28
    public static let delNeighbour: UInt16 = 29
    public static let getNeighbour: UInt16 = 30
    public static let newQdisc: UInt16 = 36
    public static let delQdisc: UInt16 = 37
    public static let getQdisc: UInt16 = 38
    public static let newNetconf: UInt16 = 80
    public static let newFilter: UInt16 = 44
    public static let delFilter: UInt16 = 45
    public static let getFilter: UInt16 = 46
}

/// Legacy multicast group bits for `bind(2)` (`RTMGRP_*`).
public struct MulticastGroups: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let link = MulticastGroups(rawValue: 0x1)
    public static let neighbour = MulticastGroups(rawValue: 0x4)
    public static let ipv4Address = MulticastGroups(rawValue: 0x10)
    public static let ipv4Route = MulticastGroups(rawValue: 0x40)
    public static let ipv6Address = MulticastGroups(rawValue: 0x100)
    public static let ipv6Route = MulticastGroups(rawValue: 0x400)
    /// `RTNLGRP_IPV4_NETCONF`: per-device IPv4 settings (forwarding, rp_filter, ...) changed.
    public static let ipv4Netconf = MulticastGroups(rawValue: 1 << 23)
    /// `RTMGRP_TC`: qdiscs and tc filters.
    public static let trafficControl = MulticastGroups(rawValue: 0x8)
    public static let all: MulticastGroups = [
        .link, .neighbour, .ipv4Address, .ipv4Route, .ipv6Address, .ipv6Route, .ipv4Netconf,
    ]
}

enum IFLA {
    static let address: UInt16 = 1
    static let broadcast: UInt16 = 2
    static let ifname: UInt16 = 3
    static let mtu: UInt16 = 4
    static let link: UInt16 = 5
    static let qdisc: UInt16 = 6
    static let stats: UInt16 = 7
    static let master: UInt16 = 10
    static let txqlen: UInt16 = 13
    static let operState: UInt16 = 16
    static let linkInfo: UInt16 = 18
    static let afSpec: UInt16 = 26
    static let stats64: UInt16 = 23
    static let netNsFD: UInt16 = 28
    static let extMask: UInt16 = 29
    static let linkNetnsID: UInt16 = 37
    /// The largest GSO packet the device's driver accepts (kernel 5.19+).
    static let tsoMaxSize: UInt16 = 59
    /// BIG TCP for IPv4: the largest IPv4 GSO packet the stack builds for the device, and the
    /// largest GRO packet it aggregates (kernel 6.3+; 65536 by default).
    static let gsoIPv4MaxSize: UInt16 = 63
    static let groIPv4MaxSize: UInt16 = 64
    static let infoKind: UInt16 = 1
    static let infoData: UInt16 = 2
    static let infoSlaveKind: UInt16 = 4
    static let vethInfoPeer: UInt16 = 1
}

/// Interface flags (`IFF_*`) as seen in `ifi_flags`.
public struct InterfaceFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let up = InterfaceFlags(rawValue: 0x1)
    public static let broadcast = InterfaceFlags(rawValue: 0x2)
    public static let loopback = InterfaceFlags(rawValue: 0x8)
    public static let pointToPoint = InterfaceFlags(rawValue: 0x10)
    public static let running = InterfaceFlags(rawValue: 0x40)
    public static let noARP = InterfaceFlags(rawValue: 0x80)
    public static let promiscuous = InterfaceFlags(rawValue: 0x100)
    public static let multicast = InterfaceFlags(rawValue: 0x1000)
    public static let lowerUp = InterfaceFlags(rawValue: 0x10000)
}

enum IFA {
    static let address: UInt16 = 1
    static let local: UInt16 = 2
    static let label: UInt16 = 3
    static let broadcast: UInt16 = 4
    static let cacheInfo: UInt16 = 6
    static let flags: UInt16 = 8
}

enum RTA {
    static let dst: UInt16 = 1
    static let src: UInt16 = 2
    static let iif: UInt16 = 3
    static let oif: UInt16 = 4
    static let gateway: UInt16 = 5
    static let priority: UInt16 = 6
    static let prefSrc: UInt16 = 7
    static let metrics: UInt16 = 8
    static let table: UInt16 = 15
    static let pref: UInt16 = 20
    static let metricMTU: UInt16 = 2  // RTAX_MTU
    static let flagOnLink: UInt32 = 4  // RTNH_F_ONLINK
}

enum NDA {
    static let dst: UInt16 = 1
    static let linkLayerAddress: UInt16 = 2
}

enum TCA {
    static let kind: UInt16 = 1
    static let options: UInt16 = 2
    static let chain: UInt16 = 11
    // TCA_BPF_*
    static let bpfFD: UInt16 = 6
    static let bpfName: UInt16 = 7
    static let bpfFlags: UInt16 = 8
    static let bpfTag: UInt16 = 10
    static let bpfID: UInt16 = 11
    static let bpfFlagDirectAction: UInt32 = 1
    // handles
    static let clsactParent: UInt32 = 0xFFFF_FFF1
    static let clsactHandle: UInt32 = 0xFFFF_0000
    static let minIngress: UInt32 = 0xFFF2
    static let minEgress: UInt32 = 0xFFF3
    static let ethPAll: UInt16 = 0x0003
}

enum AttributeFlags {
    static let nested: UInt16 = 0x8000
    static let networkByteOrder: UInt16 = 0x4000
    static let typeMask: UInt16 = 0x3FFF
}

@inline(__always) func netlinkAlign(_ n: Int) -> Int { (n + 3) & ~3 }
