/// A network interface as the kernel reports it (`RTM_NEWLINK`).
public struct Link: Sendable, Equatable {
    public var index: InterfaceIndex
    public var name: String
    /// ARPHRD type (1 = Ethernet, 772 = loopback).
    public var hardwareType: UInt16
    public var flags: InterfaceFlags
    public var mtu: UInt32?
    public var address: MACAddress?
    /// `IFLA_INFO_KIND`: `veth`, `bridge`, `dummy`, ...; nil for devices without one (lo, eth).
    public var kind: String?
    /// `IFLA_INFO_SLAVE_KIND` when the link has a master (`bridge`).
    public var slaveKind: String?
    public var masterIndex: InterfaceIndex?
    /// `IFLA_LINK`: for a veth, the peer's ifindex (in the peer's namespace).
    public var peerIndex: InterfaceIndex?
    /// `IFLA_LINK_NETNSID`: the namespace id (as seen from here) holding the peer.
    public var linkNetnsID: Int32?
    public var operState: UInt8?
    /// `IFLA_TSO_MAX_SIZE`: the largest GSO packet the driver takes (nil: the kernel did not say).
    public var tsoMaxSize: UInt32?
    /// `IFLA_GSO_IPV4_MAX_SIZE` / `IFLA_GRO_IPV4_MAX_SIZE`: BIG TCP for IPv4 (nil: a kernel
    /// before 6.3).
    public var gsoIPv4MaxSize: UInt32?
    public var groIPv4MaxSize: UInt32?
    public var statistics: LinkStatistics?
    /// The device's IPv4 and IPv6 settings (what `/proc/sys/net/ipv{4,6}/conf/DEV` shows).
    public var configuration: DeviceConfiguration?
    /// Attributes this decoder does not interpret, kept as received.
    public var unknownAttributes: [NetlinkAttribute]

    public var isUp: Bool { flags.contains(.up) }

    public var isNoARP: Bool { flags.contains(.noARP) }

    static let headerSize = 16
    static let known: Set<UInt16> = [
        IFLA.address, IFLA.ifname, IFLA.mtu, IFLA.link, IFLA.master, IFLA.operState, IFLA.linkInfo,
        IFLA.stats64, IFLA.linkNetnsID, IFLA.afSpec, IFLA.tsoMaxSize, IFLA.gsoIPv4MaxSize, IFLA.groIPv4MaxSize,
    ]

    /// A link value built by hand (tests, planners working from recorded state).
    public init(
        index: InterfaceIndex, name: String, kind: String? = nil, flags: InterfaceFlags = [], mtu: UInt32? = 1500,
        address: MACAddress? = nil, peerIndex: InterfaceIndex? = nil, masterIndex: InterfaceIndex? = nil
    ) {
        self.index = index
        self.name = name
        self.hardwareType = 1
        self.flags = flags
        self.mtu = mtu
        self.address = address
        self.kind = kind
        self.slaveKind = nil
        self.masterIndex = masterIndex
        self.peerIndex = peerIndex
        self.linkNetnsID = nil
        self.operState = nil
        self.statistics = nil
        self.configuration = nil
        self.unknownAttributes = []
    }

    public init(message: NetlinkMessage) throws {
        let r = ByteReader(message.payload)
        hardwareType = try r.u16(2)
        index = try r.interfaceIndex(4)
        flags = InterfaceFlags(rawValue: try r.u32(8))
        let attrs = try AttributeList(parsing: try r.slice(Self.headerSize, r.count - Self.headerSize))
        name = attrs[IFLA.ifname]?.string ?? ""
        mtu = attrs[IFLA.mtu]?.u32
        address = attrs[IFLA.address].flatMap { MACAddress(bytes: $0.payload) }
        masterIndex = attrs[IFLA.master]?.interfaceIndex
        peerIndex = attrs[IFLA.link]?.interfaceIndex
        linkNetnsID = attrs[IFLA.linkNetnsID]?.i32
        operState = attrs[IFLA.operState]?.u8
        tsoMaxSize = attrs[IFLA.tsoMaxSize]?.u32
        gsoIPv4MaxSize = attrs[IFLA.gsoIPv4MaxSize]?.u32
        groIPv4MaxSize = attrs[IFLA.groIPv4MaxSize]?.u32
        statistics = try attrs[IFLA.stats64].map { try LinkStatistics(payload: $0.payload) }
        configuration = attrs[IFLA.afSpec].flatMap(DeviceConfiguration.init(afSpec:))
        if let info = try attrs[IFLA.linkInfo]?.nested() {
            kind = info[IFLA.infoKind]?.string
            slaveKind = info[IFLA.infoSlaveKind]?.string
        }
        unknownAttributes = attrs.unknown(excluding: Self.known)
    }
}

/// The first counters of `struct rtnl_link_stats64`.
public struct LinkStatistics: Sendable, Equatable {
    public var rxPackets: UInt64
    public var txPackets: UInt64
    public var rxBytes: UInt64
    public var txBytes: UInt64
    public var rxErrors: UInt64
    public var txErrors: UInt64
    public var rxDropped: UInt64
    public var txDropped: UInt64

    init(payload: ArraySlice<UInt8>) throws {
        let r = ByteReader(payload)
        func u64(_ i: Int) throws -> UInt64 { UInt64(try r.u32(i * 8)) | UInt64(try r.u32(i * 8 + 4)) << 32 }
        rxPackets = try u64(0)
        txPackets = try u64(1)
        rxBytes = try u64(2)
        txBytes = try u64(3)
        rxErrors = try u64(4)
        txErrors = try u64(5)
        rxDropped = try u64(6)
        txDropped = try u64(7)
    }
}

/// What kind of link to create.
public enum LinkKind: Sendable, Equatable {
    /// A veth pair; `peer` may be placed straight into another namespace.
    case veth(peer: VethPeer)
    /// A dummy device (not every kernel has the driver).
    case dummy
    case bridge

    public var name: String {
        switch self {
        case .veth: return "veth"
        case .dummy: return "dummy"
        case .bridge: return "bridge"
        }
    }
}

public struct VethPeer: Sendable, Equatable {
    public var name: String
    /// Where the peer is created; `.current` keeps it beside the first end.
    public var namespace: NamespaceReference
    public var mtu: UInt32?
    public var address: MACAddress?
    /// Create the peer with NOARP set. (A peer cannot be created *up*: the kernel opens it
    /// before the pair is linked and answers ENOTCONN; bring it up afterwards.)
    public var noARP: Bool
    /// BIG TCP for IPv4 on the peer (`IFLA_GSO_IPV4_MAX_SIZE` and `IFLA_GRO_IPV4_MAX_SIZE`);
    /// nil: the first end's, or the kernel's default.
    public var ipv4MaxSegmentSize: UInt32?

    public init(
        name: String, namespace: NamespaceReference = .current, mtu: UInt32? = nil, address: MACAddress? = nil,
        noARP: Bool = false, ipv4MaxSegmentSize: UInt32? = nil
    ) {
        self.name = name
        self.namespace = namespace
        self.mtu = mtu
        self.address = address
        self.noARP = noARP
        self.ipv4MaxSegmentSize = ipv4MaxSegmentSize
    }
}

/// A link to create with `RTM_NEWLINK`.
public struct LinkConfiguration: Sendable, Equatable {
    public var name: String
    public var kind: LinkKind
    public var mtu: UInt32?
    public var address: MACAddress?
    public var up: Bool
    public var noARP: Bool
    public var masterIndex: InterfaceIndex?
    /// BIG TCP for IPv4: the largest IPv4 GSO and GRO packets (`IFLA_GSO_IPV4_MAX_SIZE`,
    /// `IFLA_GRO_IPV4_MAX_SIZE`; kernel 6.3+); nil: the kernel's default (65536).
    public var ipv4MaxSegmentSize: UInt32?

    public init(
        name: String, kind: LinkKind, mtu: UInt32? = nil, address: MACAddress? = nil, up: Bool = false,
        noARP: Bool = false, masterIndex: InterfaceIndex? = nil, ipv4MaxSegmentSize: UInt32? = nil
    ) {
        self.name = name
        self.kind = kind
        self.mtu = mtu
        self.address = address
        self.up = up
        self.noARP = noARP
        self.masterIndex = masterIndex
        self.ipv4MaxSegmentSize = ipv4MaxSegmentSize
    }

    /// The create request. `peerNamespace` must be an open namespace file when the veth
    /// peer goes to another namespace, and stay open until the request has been sent.
    public func createRequest(peerNamespace: FileDescriptor? = nil, replace: Bool = false) -> NetlinkRequest {
        var m = MessageBuilder(type: RTM.newLink, flags: replace ? [.create, .replace] : [.create, .exclusive])
        var flags: InterfaceFlags = []
        if up { flags.insert(.up) }
        if noARP { flags.insert(.noARP) }
        m.append(familyHeader: ifinfomsg(index: 0, flags: flags, change: flags))
        m.attribute(IFLA.ifname, string: name)
        if let mtu { m.attribute(IFLA.mtu, u32: mtu) }
        if let address { m.attribute(IFLA.address, address.bytes) }
        if let masterIndex { m.attribute(IFLA.master, index: masterIndex) }
        m.ipv4MaxSizes(gso: ipv4MaxSegmentSize)
        m.nested(IFLA.linkInfo) { info in
            info.attribute(IFLA.infoKind, string: kind.name)
            if case .veth(let peer) = kind {
                info.nested(IFLA.infoData) { data in
                    data.nested(IFLA.vethInfoPeer) { p in
                        let peerFlags: InterfaceFlags = peer.noARP ? [.noARP] : []
                        p.append(familyHeader: ifinfomsg(index: 0, flags: peerFlags, change: peerFlags))
                        p.attribute(IFLA.ifname, string: peer.name)
                        if let mtu = peer.mtu ?? mtu { p.attribute(IFLA.mtu, u32: mtu) }
                        if let address = peer.address { p.attribute(IFLA.address, address.bytes) }
                        p.ipv4MaxSizes(gso: peer.ipv4MaxSegmentSize ?? ipv4MaxSegmentSize)
                        if let peerNamespace {
                            p.attribute(IFLA.netNsFD, u32: UInt32(bitPattern: peerNamespace.rawValue))
                        }
                    }
                }
            }
        }
        var what = "creating \(kind.name) \(name)"
        if case .veth(let peer) = kind {
            what += " with peer \(peer.name)" + (peer.namespace == .current ? "" : " in \(peer.namespace)")
        }
        return NetlinkRequest(m, context: what)
    }
}

/// Changes to an existing link; nil fields are left alone.
public struct LinkChange: Sendable, Equatable {
    public var up: Bool?
    public var noARP: Bool?
    public var mtu: UInt32?
    public var address: MACAddress?
    /// A new master's ifindex; 0 releases the link from its master.
    public var masterIndex: InterfaceIndex?
    public var name: String?
    /// BIG TCP for IPv4: sets both `IFLA_GSO_IPV4_MAX_SIZE` and `IFLA_GRO_IPV4_MAX_SIZE`.
    public var ipv4MaxSegmentSize: UInt32?
    /// `IFLA_GRO_IPV4_MAX_SIZE` when it is to differ from `ipv4MaxSegmentSize` (restoring a link
    /// whose two sizes differed).
    public var ipv4GROMaxSize: UInt32?

    public init(
        up: Bool? = nil, noARP: Bool? = nil, mtu: UInt32? = nil, address: MACAddress? = nil,
        masterIndex: InterfaceIndex? = nil, name: String? = nil, ipv4MaxSegmentSize: UInt32? = nil,
        ipv4GROMaxSize: UInt32? = nil
    ) {
        self.up = up
        self.noARP = noARP
        self.mtu = mtu
        self.address = address
        self.masterIndex = masterIndex
        self.name = name
        self.ipv4MaxSegmentSize = ipv4MaxSegmentSize
        self.ipv4GROMaxSize = ipv4GROMaxSize
    }

    /// The request for the link called `name` (the kernel looks it up; no ifindex needed).
    public func request(named linkName: String) -> NetlinkRequest {
        var r = request(index: 0, describing: "changing link \(linkName)")
        r.message.attribute(IFLA.ifname, string: linkName)
        return r
    }

    /// The request. `namespace`, when given (an open namespace file), moves the link into it.
    public func request(
        index: InterfaceIndex, namespace: FileDescriptor? = nil, describing what: String? = nil
    ) -> NetlinkRequest {
        var m = MessageBuilder(type: RTM.newLink, flags: [])
        var flags: InterfaceFlags = []
        var change: InterfaceFlags = []
        if let up {
            change.insert(.up)
            if up { flags.insert(.up) }
        }
        if let noARP {
            change.insert(.noARP)
            if noARP { flags.insert(.noARP) }
        }
        m.append(familyHeader: ifinfomsg(index: index, flags: flags, change: change))
        if let name { m.attribute(IFLA.ifname, string: name) }
        if let mtu { m.attribute(IFLA.mtu, u32: mtu) }
        if let address { m.attribute(IFLA.address, address.bytes) }
        if let masterIndex { m.attribute(IFLA.master, index: masterIndex) }
        m.ipv4MaxSizes(gso: ipv4MaxSegmentSize, gro: ipv4GROMaxSize)
        if let namespace { m.attribute(IFLA.netNsFD, u32: UInt32(bitPattern: namespace.rawValue)) }
        return NetlinkRequest(m, context: what ?? "changing link \(index)")
    }
}

extension MessageBuilder {
    /// BIG TCP for IPv4: `IFLA_GSO_IPV4_MAX_SIZE` and `IFLA_GRO_IPV4_MAX_SIZE` (`gro` nil: the
    /// same as `gso`; both nil: neither).
    mutating func ipv4MaxSizes(gso: UInt32?, gro: UInt32? = nil) {
        if let gso { attribute(IFLA.gsoIPv4MaxSize, u32: gso) }
        if let size = gro ?? gso { attribute(IFLA.groIPv4MaxSize, u32: size) }
    }
}

func ifinfomsg(
    index: InterfaceIndex, flags: InterfaceFlags, change: InterfaceFlags, family: AddressFamily = .unspecified
) -> [UInt8] {
    var b: [UInt8] = [family.rawValue, 0]
    b.appendU16(0)
    b.appendIndex(index)
    b.appendU32(flags.rawValue)
    b.appendU32(change.rawValue)
    return b
}

extension NetlinkSocket {
    /// Every link in the socket's namespace.
    public func links() throws -> [Link] {
        var m = MessageBuilder(type: RTM.getLink, flags: [])
        m.append(familyHeader: ifinfomsg(index: 0, flags: [], change: []))
        return try dump(NetlinkRequest(m, context: "listing links")) { try Link(message: $0) }
    }

    /// The link called `name`, or nil when there is none.
    public func link(named name: String) throws -> Link? {
        var m = MessageBuilder(type: RTM.getLink, flags: [])
        m.append(familyHeader: ifinfomsg(index: 0, flags: [], change: []))
        m.attribute(IFLA.ifname, string: name)
        return try getLink(m, context: "looking up link \(name)")
    }

    /// The link with ifindex `index`, or nil when there is none.
    public func link(interfaceIndex: InterfaceIndex) throws -> Link? {
        var m = MessageBuilder(type: RTM.getLink, flags: [])
        m.append(familyHeader: ifinfomsg(index: interfaceIndex, flags: [], change: []))
        return try getLink(m, context: "looking up link \(interfaceIndex)")
    }

    private func getLink(_ m: MessageBuilder, context: String) throws -> Link? {
        do {
            return try execute(NetlinkRequest(m, context: context)).first.map(Link.init(message:))
        } catch let e as NetlinkError where e == NetlinkError(.noSuchDevice) {
            return nil
        }
    }

    /// Creates a link (add-exclusive: `EEXIST` when the name is taken).
    public func add(_ link: LinkConfiguration) throws {
        try withPeerNamespace(link) { peer in _ = try execute(link.createRequest(peerNamespace: peer)) }
    }

    /// Applies `change` to the link with ifindex `index`.
    public func setLink(interfaceIndex: InterfaceIndex, _ change: LinkChange) throws {
        try execute(change.request(index: interfaceIndex))
    }

    /// Applies `change` to the link called `name`.
    public func setLink(named name: String, _ change: LinkChange) throws {
        guard let link = try link(named: name) else {
            throw NetlinkError(.noSuchDevice, context: "changing link \(name)")
        }
        try execute(change.request(index: link.index, describing: "changing link \(name)"))
    }

    /// Moves a link into another namespace (it keeps its name unless it clashes there).
    public func moveLink(interfaceIndex: InterfaceIndex, to namespace: NamespaceReference) throws {
        let target = try NetworkNamespace.open(namespace)
        try execute(
            LinkChange().request(
                index: interfaceIndex, namespace: target, describing: "moving link \(interfaceIndex) to \(namespace)"))
    }

    private func withPeerNamespace(_ link: LinkConfiguration, _ body: (FileDescriptor?) throws -> Void) throws {
        guard case .veth(let peer) = link.kind, peer.namespace != .current else { return try body(nil) }
        return try body(try NetworkNamespace.open(peer.namespace))
    }
}
