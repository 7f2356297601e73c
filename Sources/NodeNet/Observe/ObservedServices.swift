import BPF
import CNodeNetBPF

/// What the node's service maps hold (read from its pins), decoded.
public struct ObservedServices: Sendable, Equatable {
    public var masters: [FrontendKey: FrontendMaster] = [:]
    /// Backend slots (1...) by frontend, including slots beyond the count.
    public var slots: [FrontendKey: [UInt16: UInt32]] = [:]
    public var backends: [UInt32: BackendAddress] = [:]
    public var revnat: [UInt16: FrontendKey] = [:]
    public var nodes: [IPAddress: NodeFlags] = [:]
    public var settings: NodeSettings?
    public var sourceRanges: Set<SourceRange> = []
    /// What each frontend's Maglev table was built from, by frontend id (the tables themselves
    /// are not read).
    public var maglev: [UInt16: MaglevIndex] = [:]

    public init() {}

    /// The frontend as it is, when it is complete and consistent (slot 0, slots 1...count and
    /// nothing beyond); nil otherwise.
    public func entry(_ key: FrontendKey) -> FrontendEntry? {
        guard let master = masters[key] else { return nil }
        let slots = self.slots[key] ?? [:]
        guard slots.count == Int(master.count), master.count == 0 || (1...master.count).allSatisfy({ slots[$0] != nil })
        else { return nil }
        return FrontendEntry(
            id: master.id, flags: master.flags,
            backendIDs: master.count == 0 ? [] : (1...master.count).map { slots[$0]! },
            affinityTimeout: master.affinityTimeout)
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

    /// Reads the service maps pinned in `layout`; empty when nothing is pinned yet.
    static func read(_ layout: BPFFSLayout) throws -> ObservedServices {
        var result = ObservedServices()
        if let map = try BPFMap<nodenet_service_key, nodenet_service>.pinned(at: layout.path(.services)) {
            for (k, v) in try map.entries() {
                guard let key = FrontendKey(k) else { continue }
                if k.slot == 0 {
                    let flags = FrontendFlags(rawValue: v.flags)
                    result.masters[key] = FrontendMaster(
                        count: v.count, id: v.id, flags: flags,
                        affinityTimeout: flags.contains(.affinity) ? v.backend_id : 0)
                } else {
                    result.slots[key, default: [:]][k.slot] = v.backend_id
                }
            }
        }
        if let map = try BPFMap<UInt32, nodenet_backend>.pinned(at: layout.path(.backends)) {
            for (id, v) in try map.entries() {
                guard let proto = TransportProtocol(ipProtocol: v.proto) else { continue }
                result.backends[id] = BackendAddress(
                    address: IPAddress(ipv4: UInt32(bigEndian: v.address)), port: UInt16(bigEndian: v.port),
                    protocol: proto)
            }
        }
        if let map = try BPFMap<UInt32, nodenet_revnat>.pinned(at: layout.path(.revnat)) {
            for (id, v) in try map.entries() {
                guard let proto = TransportProtocol(ipProtocol: v.proto), id <= UInt32(UInt16.max) else { continue }
                result.revnat[UInt16(id)] = FrontendKey(
                    address: IPAddress(ipv4: UInt32(bigEndian: v.address)), port: UInt16(bigEndian: v.port),
                    protocol: proto)
            }
        }
        if let map = try BPFMap<nodenet_node_key, nodenet_node>.pinned(at: layout.path(.nodes)) {
            for (k, v) in try map.entries() {
                result.nodes[IPAddress(ipv4: UInt32(bigEndian: k.address))] = NodeFlags(rawValue: v.flags)
            }
        }
        if let map = try BPFMap<nodenet_source_range_key, UInt8>.pinned(at: layout.path(.sourceRanges)) {
            result.sourceRanges = Set(try map.keys().compactMap(SourceRange.init))
        }
        if let map = try BPFMap<UInt32, nodenet_maglev_index>.pinned(at: layout.path(.maglevIndex)) {
            for (id, v) in try map.entries() where id <= UInt32(UInt16.max) {
                result.maglev[UInt16(id)] = MaglevIndex(v)
            }
        }
        if let map = try BPFMap<UInt32, nodenet_config>.pinned(at: layout.path(.settings)), let c = try map.lookup(0),
            c.node_ip != 0
        {
            result.settings = NodeSettings(c)
        }
        return result
    }
}
