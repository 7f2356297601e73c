import BPF

/// One kernel change of a plan. Each case is a domain, and each domain has one executor
/// (`Apply/`): a new kind of change is a case of its domain's enum and an arm in its executor
/// only.
enum Change: Sendable, Equatable {
    /// Links, addresses and routes, in the node's or a pod's namespace.
    case netlink(NetlinkChange)
    /// A `/proc/sys` value in the node's namespace.
    indirect case sysctl(SysctlChange)
    /// Endpoint map entries, attached programs and the node's pins.
    case datapath(DatapathChange)
    /// Service maps and socket LB.
    case service(ServiceChange)

    var netlink: NetlinkChange? { if case .netlink(let c) = self { c } else { nil } }
    var sysctl: SysctlChange? { if case .sysctl(let c) = self { c } else { nil } }
    var datapath: DatapathChange? { if case .datapath(let c) = self { c } else { nil } }
    var service: ServiceChange? { if case .service(let c) = self { c } else { nil } }

    enum Domain { case netlink, sysctl, datapath, service }

    /// Its case alone (its change not copied out).
    var domain: Domain {
        switch self {
        case .netlink: .netlink
        case .sysctl: .sysctl
        case .datapath: .datapath
        case .service: .service
        }
    }
}

/// A domain's change, as a case of `Change` holds it.
protocol DomainChange {
    static var domain: Change.Domain { get }
    /// `change`'s, which is of this domain.
    static func of(_ change: Change) -> Self
}

extension NetlinkChange: DomainChange {
    static var domain: Change.Domain { .netlink }
    static func of(_ change: Change) -> Self { change.netlink! }
}

extension SysctlChange: DomainChange {
    static var domain: Change.Domain { .sysctl }
    static func of(_ change: Change) -> Self { change.sysctl! }
}

extension DatapathChange: DomainChange {
    static var domain: Change.Domain { .datapath }
    static func of(_ change: Change) -> Self { change.datapath! }
}

extension ServiceChange: DomainChange {
    static var domain: Change.Domain { .service }
    static func of(_ change: Change) -> Self { change.service! }
}

/// A netlink change, with enough of the prior state to undo it. Indirect: routes and links are
/// large (two routes: 256 bytes) and every change of a plan is as large as its largest case
/// (a plan of 100 000 services holds 400 000 changes).
indirect enum NetlinkChange: Sendable, Equatable {
    case createHostPair(mtu: UInt32, ipv4SegmentSize: UInt32?)
    case setLink(NamespaceScope, device: String, LinkChange, undo: LinkChange)
    case addAddress(NamespaceScope, device: String, prefix: IPPrefix, scope: RouteScope)
    case deleteAddress(NamespaceScope, device: String, InterfaceAddress)
    /// Add-exclusive when `previous` is nil (a foreign route in the way fails with EEXIST
    /// rather than being overwritten); replace of our own route otherwise.
    case putRoute(NamespaceScope, RouteIntent, previous: Route?)
    case deleteRoute(NamespaceScope, Route)
    case createEndpoint(hostDevice: String, netns: String, mtu: UInt32, ipv4SegmentSize: UInt32?)
    case deleteLink(NamespaceScope, device: String)

    /// The namespace the change works in.
    var scope: NamespaceScope {
        switch self {
        case .createHostPair, .createEndpoint: .node
        case .setLink(let s, _, _, _), .addAddress(let s, _, _, _), .deleteAddress(let s, _, _), .putRoute(let s, _, _),
            .deleteRoute(let s, _), .deleteLink(let s, _):
            s
        }
    }
}

/// A sysctl write; `previous` is the value found (nil: the key did not exist).
struct SysctlChange: Sendable, Equatable {
    var setting: SysctlSetting
    var previous: String?
}

/// A change to the node's BPF datapath: endpoint entries, programs and pins (indirect, as
/// `NetlinkChange`).
indirect enum DatapathChange: Sendable, Equatable {
    /// Puts a pod's entry (resolved at execution: lxc ifindex and MACs) into the endpoints map.
    case putEndpointEntry(ip: IPAddress, hostDevice: String, netns: String, previous: EndpointEntry?)
    case deleteEndpointEntry(ip: IPAddress, previous: EndpointEntry)
    /// Attaches (or replaces) a datapath program on a device's ingress (clsact added if missing).
    case attachProgram(device: String, DatapathProgram, replacing: Bool)
    /// Removes one of our tc filters.
    case detachProgram(device: String, priority: UInt16, handle: UInt32)
    /// Removes a pinned tcx link (which detaches its program).
    case unpinLink(name: String)
    /// Moves pinned maps of another layout aside (`BPFFSLayout.setAsidePath`): attached
    /// programs keep using them while this build's maps are created, filled and its programs
    /// attached.
    case setAsideMaps([BPFFSLayout.Map])
    /// Drops the maps set aside, once every program uses the new ones.
    case dropSetAsideMaps([BPFFSLayout.Map])
    /// Unpins nodenet's entries in a bpffs directory the spec no longer uses (its maps and
    /// links), once every program uses the new directory's.
    case dropFormerDirectory(BPFFSLayout)
}

/// One services change of a plan, with what it replaces (for undo). The rare large cases are
/// indirect: a plan holds one change per frontend and backend, each as large as the largest case.
enum ServiceChange: Sendable, Equatable {
    indirect case putSettings(NodeSettings, previous: NodeSettings?)
    case putNode(IPAddress, NodeFlags, previous: NodeFlags?)
    case deleteNode(IPAddress, previous: NodeFlags)
    case putBackend(id: UInt32, BackendAddress, previous: BackendAddress?)
    case deleteBackend(id: UInt32, previous: BackendAddress)
    /// Writes a frontend make-before-break (revnat, new slots, slot 0, extra slots removed).
    case putFrontend(FrontendKey, FrontendEntry, previous: FrontendSnapshot?, previousRevnat: FrontendKey?)
    /// Removes a frontend: slot 0 first (no new connections), then its slots.
    case deleteFrontend(FrontendKey, previous: FrontendSnapshot)
    case deleteRevNat(id: FrontendID, previous: FrontendKey)
    /// Zeroes a backends or reverse-NAT entry that decodes to nothing (undo puts its bytes back).
    case clearMalformed(MalformedArrayEntry)
    /// A client prefix a LoadBalancer frontend takes (written before the frontend's flag).
    case putSourceRange(SourceRange)
    case deleteSourceRange(SourceRange)
    /// Writes a frontend's Maglev table (its chunks, then its index), after its backends.
    indirect case putMaglevTable(id: FrontendID, MaglevTable, previous: MaglevIndex?)
    /// Removes a frontend's Maglev table (its index first), before its backends go.
    case deleteMaglevTable(id: FrontendID, previous: MaglevIndex)
    /// Attaches a socket-LB program to the cgroup (`replacing`: the pin of the same hook and
    /// cgroup from another build, whose link gets the new program).
    indirect case attachSocket(CgroupLink.Hook, cgroup: String, cgroupID: UInt64, replacing: String?)
    case unpinSocket(name: String)
}
