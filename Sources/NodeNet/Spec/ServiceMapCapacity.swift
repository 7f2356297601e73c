import CNodeNetBPF

/// How large the service tables are made (`loadBalancer.mapEntries`, as Cilium's
/// `bpf-lb-map-max`): `nodenet_services` holds `entries`, the node `maxBackends` backends
/// (`nodenet_backends`, an array of twice as many ids), `nodenet_revnat` and
/// `nodenet_maglev_index` (one entry per frontend id) a quarter of it.
///
/// The hash maps are not preallocated, but their buckets are (16 bytes each), and the backends
/// and reverse-NAT arrays by id are made whole (8 bytes an entry; the backends array has twice
/// `entries`): the default costs every BPF node about 2.4 MiB of kernel memory, 1 048 576
/// entries 38 MiB; and every full read of a map walks its buckets or entries, used or not. A
/// node pays only for the size it asks for. Another size is another layout: the pinned service
/// tables are replaced together (`BPFFSLayout.incompatibleMaps`), and the new maps number their
/// frontends afresh.
public struct ServiceMapCapacity: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Entries of `nodenet_services` (a frontend's slot 0 and a slot per backend), and how many
    /// backends a node holds at most (`nodenet_backends` has twice as many ids).
    public let entries: UInt32

    /// `entries` as they are: `isValid` says whether a spec may ask for them.
    public init(entries: UInt32) { self.entries = entries }

    /// What bpf/lib/maps.h declares (Cilium's default, 65 536), unless a spec says otherwise.
    public static let `default` = ServiceMapCapacity(entries: UInt32(NODENET_SERVICES_MAX))

    /// The sizes a spec may ask for: powers of two in this range (the kernel rounds a hash
    /// map's buckets up to one anyway).
    public static let allowed: ClosedRange<UInt32> = 4096...1_048_576

    /// A power of two within `allowed`.
    public var isValid: Bool { Self.allowed.contains(entries) && entries & (entries - 1) == 0 }

    /// Entries of `nodenet_revnat` and `nodenet_maglev_index`: one per frontend id (0 is none).
    public var frontendMapEntries: UInt32 { entries / 4 }

    /// The most frontends a spec may have at this size.
    public var maxFrontends: Int { Int(frontendMapEntries) - 1 }

    /// The most distinct backends a spec may have: `entries` are held at most (old and new
    /// together while frontends change), less one so that their ids (from 1, new ones beside
    /// the old ones) stay within the backends array of twice `entries`. (Every backend takes a
    /// services-map entry besides its frontend's slot 0: a spec within `entries` has fewer
    /// anyway.)
    public var maxBackends: Int { Int(entries) - 1 }

    /// The smallest size a spec may ask for that holds this many frontends, services map
    /// entries and distinct backends; nil when even the largest does not.
    public static func smallest(frontends: Int, entries: Int, backends: Int) -> ServiceMapCapacity? {
        let needed = max(4 * (frontends + 1), entries, backends + 1, Int(allowed.lowerBound))
        let size = 1 << (Int.bitWidth - (needed - 1).leadingZeroBitCount)  // a power of two ≥ needed
        return size <= Int(allowed.upperBound) ? ServiceMapCapacity(entries: UInt32(size)) : nil
    }

    public static func < (a: Self, b: Self) -> Bool { a.entries < b.entries }

    public var description: String { "\(entries) entries (\(maxFrontends) frontends)" }
}

/// What services take of the service tables, counted as apply writes them: a frontend per
/// port for the ClusterIP, two more for node ports (`node:port` and `0.0.0.0:port`), one per
/// external and load balancer address; a services-map entry for each frontend and each of its
/// backends; the distinct backends (address, port, protocol).
struct ServiceMapDemand {
    private(set) var frontends = 0
    private(set) var entries = 0
    private(set) var backends: Set<BackendAddress> = []

    /// The frontends one port of `service` makes.
    static func frontends(of service: ServiceSpec, _ port: ServicePort) -> Int {
        1 + (service.type.hasNodePorts && port.nodePort != nil ? 2 : 0) + service.externalIPs.count
            + service.loadBalancerIPs.count
    }

    mutating func add(_ service: ServiceSpec) {
        for port in service.ports {
            let count = Self.frontends(of: service, port)
            frontends += count
            entries += count * (1 + service.backends.count)
            for b in service.backends {
                backends.insert(
                    BackendAddress(address: b.ip, port: UInt16(b.port ?? port.targetPort), protocol: port.protocol))
            }
        }
    }

    func fits(_ capacity: ServiceMapCapacity) -> Bool {
        frontends <= capacity.maxFrontends && entries <= Int(capacity.entries)
            && backends.count <= capacity.maxBackends
    }

    /// The smallest size that holds it (nil: none does).
    var smallest: ServiceMapCapacity? {
        ServiceMapCapacity.smallest(frontends: frontends, entries: entries, backends: backends.count)
    }
}
