import BPF
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The one owner of a node's bpffs directory: where every map and link is pinned, what their
/// names look like, where maps of another layout wait while they are replaced, and which
/// entries of the directory are nodenet's (it may be shared, e.g. /sys/fs/bpf/tc/globals).
///
/// ```
/// <directory>/nodenet_<map>                 maps, pinned by name (bpf/lib/*.h, LIBBPF_PIN_BY_NAME)
/// <directory>/nodenet_<map>_old             a map of another layout, set aside during a migration
/// <directory>/links/<program>@<dev>@<ifindex>@<build>   tcx links (from-container, from-netdev)
/// <directory>/sock/<hook>@<cgroup id>@<build>           socket-LB cgroup links
/// ```
public struct BPFFSLayout: Sendable, Hashable, CustomStringConvertible {
    /// Every map the datapath pins (a unit test checks this list against the embedded objects).
    public enum Map: String, CaseIterable, Sendable, Comparable {
        // Pods and what the datapath reports (endpoints.h, events.h).
        case endpoints = "nodenet_endpoints", verdicts = "nodenet_verdicts", events = "nodenet_events", monitor =
            "nodenet_monitor"
        // Per-packet translation state (conntrack.h, fragments.h).
        case conntrack = "nodenet_ct", fragments = "nodenet_fragments", conntrackQuota = "nodenet_ct_quota",
            conntrackClients = "nodenet_ct_client"
        // Services (lb.h, services.h) and socket LB's reverse entries (bpf_sock.c).
        case services = "nodenet_services", backends = "nodenet_backends", revnat = "nodenet_revnat", nodes =
            "nodenet_nodes"
        case settings = "nodenet_settings", socketRevNat = "nodenet_sock_revnat", socketSent = "nodenet_sock_sent"
        // loadBalancerSourceRanges by frontend id (services.h).
        case sourceRanges = "nodenet_source_ranges"
        // Session affinity: each client's backend per frontend (lb.h), written by the datapath.
        case affinity = "nodenet_affinity"
        // Maglev: each frontend's lookup table, and what it was built from (maglev.h).
        case maglev = "nodenet_maglev", maglevIndex = "nodenet_maglev_index"

        /// The maps apply writes for services, and the datapath's affinity entries keyed by their
        /// ids. They are replaced together: ids in one refer to entries of the others (and the
        /// new maps number their frontends and backends afresh).
        public static let serviceTables: [Map] = [
            .services, .backends, .revnat, .nodes, .settings, .sourceRanges, .maglev, .maglevIndex, .affinity,
        ]

        public static func < (a: Map, b: Map) -> Bool { a.rawValue < b.rawValue }
    }

    public let directory: String
    /// How large the service tables are made here (what the pinned ones must be to be kept).
    public let serviceCapacity: ServiceMapCapacity

    public init(directory: String, serviceCapacity: ServiceMapCapacity = .default) {
        self.directory = directory
        self.serviceCapacity = serviceCapacity
    }

    public var description: String { directory }

    public func path(_ map: Map) -> String { "\(directory)/\(map.rawValue)" }

    /// Where a pinned map of another layout waits while this build's replaces it.
    public func setAsidePath(_ map: Map) -> String { "\(directory)/\(Self.setAsideName(map))" }

    /// The name a map of another layout is pinned under while it is set aside.
    public static func setAsideName(_ map: Map) -> String { map.rawValue + setAsideSuffix }

    public var tcxLinkDirectory: String { directory + "/links" }
    public var socketLinkDirectory: String { directory + "/sock" }
    public func tcxLinkPath(_ name: String) -> String { "\(tcxLinkDirectory)/\(name)" }
    public func socketLinkPath(_ name: String) -> String { "\(socketLinkDirectory)/\(name)" }

    private static let setAsideSuffix = "_old"

    // MARK: Link pin names

    /// `from-container@lxc1a2b3c4d5e6f@7@1a2b3c4d`: what, where (name and ifindex, so a
    /// recreated device is noticed) and which build.
    static func tcxLinkName(_ program: DatapathProgram, device: String, ifindex: InterfaceIndex) -> String {
        "\(program.rawValue)@\(device)@\(ifindex)@\(program.buildDigest)"
    }

    /// Whether `name` is a link of `program` on this device and ifindex, of any build.
    static func isTCXLink(_ name: String, of program: DatapathProgram, device: String, ifindex: InterfaceIndex) -> Bool
    {
        name.hasPrefix("\(program.rawValue)@\(device)@\(ifindex)@")
    }

    /// `from-container@lxc…@7@1a2b3c4d` → (program, device, ifindex).
    static func parseTCXLinkName(_ name: String) -> (DatapathProgram, device: String, ifindex: UInt32)? {
        let parts = name.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 4, let program = DatapathProgram(rawValue: String(parts[0])), let index = UInt32(parts[2])
        else { return nil }
        return (program, String(parts[1]), index)
    }

    /// `connect4@1234@1a2b3c4d`: hook, cgroup id (a recreated cgroup is noticed) and build.
    static func socketLinkName(_ hook: CgroupLink.Hook, cgroupID: UInt64) -> String {
        "\(hook.rawValue)@\(cgroupID)@\(BPFObject.digest(embedded: CgroupLink.Hook.object) ?? "0")"
    }

    /// Whether `name` is a link of `hook` on this cgroup, of any build.
    static func isSocketLink(_ name: String, of hook: CgroupLink.Hook, cgroupID: UInt64) -> Bool {
        name.hasPrefix("\(hook.rawValue)@\(cgroupID)@")
    }

    /// Whether `name` has the shape of our socket-LB link pins (`hook@cgroupID@build`).
    static func isSocketLinkName(_ name: String) -> Bool {
        let parts = name.split(separator: "@")
        return parts.count == 3 && CgroupLink.Hook(rawValue: String(parts[0])) != nil && UInt64(parts[1]) != nil
    }

    // MARK: What is pinned

    /// Our tcx link pins, sorted (names of another shape are not ours).
    func tcxLinks() -> [String] { Self.list(tcxLinkDirectory).filter { Self.parseTCXLinkName($0) != nil } }

    /// Our socket-LB link pins, sorted.
    func socketLinks() -> [String] { Self.list(socketLinkDirectory).filter(Self.isSocketLinkName) }

    /// Maps set aside by a migration that did not finish.
    func setAsideMaps() -> [Map] {
        Self.list(directory).compactMap { name in
            name.hasSuffix(Self.setAsideSuffix) ? Map(rawValue: String(name.dropLast(Self.setAsideSuffix.count))) : nil
        }.sorted()
    }

    /// The shape every map is made with here: as this build declares it, sized by
    /// `serviceCapacity`.
    func wantedShapes() throws -> [Map: BPFMapShape] {
        var shapes = try DatapathObjects.declaredShapes.get()
        for (map, entries) in serviceCapacity.maxEntries { shapes[map]?.maxEntries = entries }
        return shapes
    }

    /// Pinned maps whose shape differs from what this build declares (an upgrade that changed
    /// a layout) or from `serviceCapacity`, with why. One service table of another layout sets
    /// all of them aside.
    func incompatibleMaps() throws -> [Map: String] {
        var result: [Map: String] = [:]
        for (map, wanted) in try wantedShapes() {
            if let pinned = try BPFMapShape.pinned(at: path(map)), pinned != wanted {
                result[map] = "pinned \(pinned); wanted \(wanted)"
            }
        }
        if let first = Map.serviceTables.filter({ result[$0] != nil }).min() {
            for map in Map.serviceTables where result[map] == nil && FileManager.default.fileExists(atPath: path(map)) {
                result[map] = "replaced together with \(first.rawValue)"
            }
        }
        return result
    }

    /// nodenet's own entries in the directory: maps pinned by name (`nodenet_*`, with those set
    /// aside by a migration) and our link pins in `links/` and `sock/`. Nothing else.
    func ownedPins() -> [String] {
        var result = tcxLinks().map { "links/\($0)" } + socketLinks().map { "sock/\($0)" }
        for name in Self.list(directory) where name.hasPrefix("nodenet_") {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: "\(directory)/\(name)", isDirectory: &isDirectory),
                !isDirectory.boolValue
            {
                result.append(name)
            }
        }
        return result
    }

    /// Unpins nodenet's own entries (`ownedPins`), then removes `links/`, `sock/` and the
    /// directory itself only if they are empty. Never recursive; only below /sys/fs/bpf. True
    /// when anything went.
    @discardableResult
    func removeOwnedPins() -> Bool {
        guard Paths.isStrictlyBelow(directory, BPFFS.root) else { return false }
        var removed = false
        for entry in ownedPins() where unlink("\(directory)/\(entry)") == 0 { removed = true }
        for empty in [tcxLinkDirectory, socketLinkDirectory, directory] where rmdir(empty) == 0 { removed = true }
        return removed
    }

    /// Everything of the directory a plan compares, read once.
    func observe(datapath: DatapathMode) throws -> ObservedPins {
        var pins = ObservedPins()
        if datapath == .bpf {
            pins.incompatibleMaps = try incompatibleMaps()
            pins.setAsideMaps = setAsideMaps()
        }
        pins.socketLinks = Set(socketLinks())
        pins.tcxLinks = Set(tcxLinks())
        // A pin is not proof: the link may be detached, elsewhere, or run another program.
        for name in pins.tcxLinks {
            if let problem = TCXLinkProblem.check(self, name: name) { pins.tcxLinkProblems[name] = problem }
        }
        return pins
    }

    private static func list(_ directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
    }
}

/// What a node's bpffs directory holds, as `BPFFSLayout.observe` read it.
public struct ObservedPins: Sendable, Equatable {
    /// Pinned maps whose layout differs from this build's, with why.
    public var incompatibleMaps: [BPFFSLayout.Map: String] = [:]
    /// Maps set aside by an interrupted migration.
    public var setAsideMaps: [BPFFSLayout.Map] = []
    /// Names of our pinned tcx links.
    public var tcxLinks: Set<String> = []
    /// Pinned tcx links that do not carry this build's program where their name says
    /// (bpf_link_info), by pin name: not converged.
    public var tcxLinkProblems: [String: TCXLinkProblem] = [:]
    /// Names of our pinned socket-LB links.
    public var socketLinks: Set<String> = []
}

extension NodeSpec {
    /// The node's bpffs directory and everything pinned in it.
    public var bpffs: BPFFSLayout {
        BPFFSLayout(directory: bpffsDirectory, serviceCapacity: loadBalancer.mapCapacity)
    }
}
