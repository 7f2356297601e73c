import BPF
import CNodeNetBPF

/// What the node's service maps hold (read from its pins), decoded.
public struct ObservedServices: Sendable, Equatable {
    public var masters: [FrontendKey: FrontendMaster] = [:]
    /// Backend slots (1...) by frontend, including slots beyond the count.
    public var slots: [FrontendKey: [UInt16: UInt32]] = [:]
    public var backends: [UInt32: BackendAddress] = [:]
    public var revnat: [FrontendID: FrontendKey] = [:]
    /// Entries of the backends and reverse-NAT arrays that are not zeros and decode to nothing
    /// (nodenet never writes them: tampering), in id order per array; plans clear them.
    public var malformed: [MalformedArrayEntry] = []
    public var nodes: [IPAddress: NodeFlags] = [:]
    public var settings: NodeSettings?
    public var sourceRanges: Set<SourceRange> = []
    /// What each frontend's Maglev table was built from, by frontend id (the tables themselves
    /// are not read).
    public var maglev: [FrontendID: MaglevIndex] = [:]
    /// Set when the services, backends and reverse-NAT maps were found to hold exactly what the
    /// plan that wrote them meant: those maps are then not decoded (`masters`, `slots`,
    /// `backends` and `revnat` stay empty) and planning takes the image's ids.
    var servicesAsWritten: ServiceMapsImage?

    public init() {}

    /// The frontend as it is, when it is complete and consistent (slot 0, slots 1...count and
    /// nothing beyond); nil otherwise.
    public func entry(_ key: FrontendKey) -> FrontendEntry? {
        guard let master = masters[key] else { return nil }
        let slots = self.slots[key] ?? [:]
        guard slots.count == Int(master.count) else { return nil }
        var backendIDs: [UInt32] = []
        backendIDs.reserveCapacity(slots.count)
        for slot in 0..<master.count {
            guard let id = slots[slot + 1] else { return nil }
            backendIDs.append(id)
        }
        return FrontendEntry(
            id: master.id, flags: master.flags, backendIDs: backendIDs, affinityTimeout: master.affinityTimeout)
    }

    /// Every frontend key with anything in the services map.
    public var frontendKeys: Set<FrontendKey> { Set(masters.keys).union(slots.keys) }

    /// The snapshot of one frontend, for undo.
    func snapshot(_ key: FrontendKey) -> FrontendSnapshot? {
        let master = masters[key]
        let slots = self.slots[key] ?? [:]
        if master == nil && slots.isEmpty { return nil }
        return FrontendSnapshot(master: master, slots: slots)
    }

    /// Reads the service maps pinned in `layout`; empty when nothing is pinned yet. With
    /// `expected` (a verification, or a controller's plan after a converged one), the services,
    /// backends and reverse-NAT maps are not decoded when they hold exactly that.
    static func read(_ layout: BPFFSLayout, expected: ServiceMapsImage? = nil) throws -> ObservedServices {
        var result = ObservedServices()
        if let expected, let maps = try ServiceMaps(pinnedIn: layout), try expected.isHeld(by: maps) {
            result.servicesAsWritten = expected
        } else {
            try result.readFrontends(layout)
        }
        try result.readTheRest(layout)
        return result
    }

    /// The services, backends and reverse-NAT maps, decoded.
    private mutating func readFrontends(_ layout: BPFFSLayout) throws {
        if let map = try BPFMap<nodenet_service_key, nodenet_service>.pinned(at: layout.path(.services)) {
            let (keys, values) = try map.contents()
            // Sized once: 10 000 frontends are 40 000 entries, and growing tables (and each
            // frontend's slots one by one) cost more than reading them.
            let masterCount = keys.reduce(0) { $0 + ($1.slot == 0 ? 1 : 0) }
            self.masters.reserveCapacity(masterCount)
            self.slots.reserveCapacity(masterCount)
            for (k, v) in zip(keys, values) {
                guard let key = FrontendKey(k) else { continue }
                if k.slot == 0 {
                    let flags = FrontendFlags(rawValue: v.flags)
                    self.masters[key] = FrontendMaster(
                        count: v.count, id: v.id, flags: flags,
                        affinityTimeout: flags.contains(.affinity) ? v.backend_id : 0)
                } else {
                    self.slots[key, default: Dictionary(minimumCapacity: 4)][k.slot] = v.backend_id
                }
            }
        }
        // Arrays by id: an entry of zeros is none.
        if let map = try BPFMappedArray<nodenet_backend>.pinned(at: layout.path(.backends), writable: false) {
            self.backends = decode(map, .backends, BackendAddress.init)
        }
        if let map = try BPFMappedArray<nodenet_revnat>.pinned(at: layout.path(.revnat), writable: false) {
            self.revnat = decode(map, .revnat, FrontendKey.init)
        }
    }

    /// An array's entries that are not zeros, decoded by id; those that decode to nothing are
    /// noted as malformed.
    private mutating func decode<Value, Decoded>(
        _ map: BPFMappedArray<Value>, _ array: MalformedArrayEntry.Array, _ decode: (Value) -> Decoded?
    ) -> [UInt32: Decoded] {
        let ids = map.nonZeroIndices()
        var decoded: [UInt32: Decoded] = [:]
        decoded.reserveCapacity(ids.count)
        for id in ids {
            if let value = decode(map[id]) {
                decoded[UInt32(id)] = value
            } else {
                malformed.append(MalformedArrayEntry(array, id: UInt32(id), map[id]))
            }
        }
        return decoded
    }

    /// The nodes, source ranges, Maglev index and settings maps, decoded.
    private mutating func readTheRest(_ layout: BPFFSLayout) throws {
        if let map = try BPFMap<nodenet_node_key, nodenet_node>.pinned(at: layout.path(.nodes)) {
            for (k, v) in try map.entries() {
                self.nodes[IPAddress(ipv4: UInt32(bigEndian: k.address))] = NodeFlags(rawValue: v.flags)
            }
        }
        if let map = try BPFMap<nodenet_source_range_key, UInt8>.pinned(at: layout.path(.sourceRanges)) {
            self.sourceRanges = Set(try map.keys().compactMap(SourceRange.init))
        }
        if let map = try BPFMap<UInt32, nodenet_maglev_index>.pinned(at: layout.path(.maglevIndex)) {
            for (id, v) in try map.entries() { self.maglev[id] = MaglevIndex(v) }
        }
        if let map = try BPFMap<UInt32, nodenet_config>.pinned(at: layout.path(.settings)), let c = try map.lookup(0),
            c.node_ip != 0
        {
            self.settings = NodeSettings(c)
        }
    }
}
