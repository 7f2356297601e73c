import BPF
import CNodeNetBPF
import Foundation

/// A frontend's id: slot 0 names it, the reverse-NAT, Maglev, source-range and affinity maps
/// and conntrack entries are keyed by it. `ServiceMapCapacity.frontendIDs` (0: none).
public typealias FrontendID = UInt32

/// Slot 0 of a frontend in the services map.
public struct FrontendMaster: Sendable, Equatable {
    public var count: UInt16
    public var id: FrontendID
    public var flags: FrontendFlags
    /// Session affinity's timeout in seconds (slot 0's backend_id; 0 without affinity).
    public var affinityTimeout: UInt32 = 0
}

/// A frontend's flags in slot 0 (`NODENET_SERVICE_*`, bpf/lib/maps.h).
public struct FrontendFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// A NodePort frontend (`node:nodePort` or `0.0.0.0:nodePort`), reached from outside too.
    public static let nodePort = FrontendFlags(rawValue: UInt8(NODENET_SERVICE_NODEPORT))
    /// Only this node's backends (a `Local` traffic policy): with none, traffic is dropped, not refused.
    public static let localOnly = FrontendFlags(rawValue: UInt8(NODENET_SERVICE_LOCAL_ONLY))
    /// Session affinity by client (`sessionAffinity: ClientIP`); its timeout is in slot 0.
    public static let affinity = FrontendFlags(rawValue: UInt8(NODENET_SERVICE_AFFINITY))
    /// `loadBalancerSourceRanges`: from outside, only the clients in the source-ranges map.
    public static let sourceRanges = FrontendFlags(rawValue: UInt8(NODENET_SERVICE_SOURCE_RANGES))
}

/// One of a frontend's `loadBalancerSourceRanges` in the source-ranges map (by frontend id).
public struct SourceRange: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var id: FrontendID
    public var prefix: IPPrefix
    public var description: String { "\(prefix) for frontend \(id)" }

    public static func < (a: SourceRange, b: SourceRange) -> Bool {
        (a.id, a.prefix.address.ipv4Value ?? 0, a.prefix.length) < (
            b.id, b.prefix.address.ipv4Value ?? 0, b.prefix.length
        )
    }

    /// The map key: the id's 32 bits and the prefix's length.
    var mapKey: nodenet_source_range_key {
        var key = nodenet_source_range_key()
        key.prefixlen = 32 + UInt32(prefix.length)
        key.id = id
        key.address = (prefix.address.ipv4Value ?? 0).bigEndian
        return key
    }
}

extension SourceRange {
    init?(_ key: nodenet_source_range_key) {
        guard key.prefixlen >= 32,
            let prefix = IPPrefix(IPAddress(ipv4: UInt32(bigEndian: key.address)), length: Int(key.prefixlen) - 32)
        else { return nil }
        self.init(id: key.id, prefix: prefix)
    }
}

/// A cluster node's address in the nodes map (`NODENET_NODE_*`, bpf/lib/maps.h).
public struct NodeFlags: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// This node's own address.
    public static let local = NodeFlags(rawValue: UInt32(NODENET_NODE_LOCAL))
    /// Another node's address (replies from it may need reverse translation).
    public static let remote = NodeFlags(rawValue: UInt32(NODENET_NODE_REMOTE))

    public var description: String { contains(.local) ? "this node" : "remote node" }
}

/// A frontend as the maps should hold it: its id, flags and backend ids in slot order.
public struct FrontendEntry: Sendable, Equatable {
    public var id: FrontendID
    public var flags: FrontendFlags
    public var backendIDs: [UInt32]
    public var affinityTimeout: UInt32 = 0

    /// Its slot 0.
    var master: FrontendMaster {
        FrontendMaster(count: UInt16(backendIDs.count), id: id, flags: flags, affinityTimeout: affinityTimeout)
    }

    /// What writing it over `previous` does to the services map: the keys it adds (slot 0 when
    /// there was none, slot numbers there were not) and those it frees (slots beyond its count).
    /// The one count of a write's entries: the batch's order and the plan's groups use it.
    func servicesMapKeys(over previous: FrontendSnapshot?) -> (added: Int, freed: Int) {
        let slots = previous?.slots ?? [:]
        var added = previous?.master == nil ? 1 : 0
        for slot in 0..<backendIDs.count where slots[UInt16(slot + 1)] == nil { added += 1 }
        return (added, slots.keys.count { Int($0) > backendIDs.count })
    }
}

/// A frontend's Maglev table exactly as it was (undo).
struct MaglevSnapshot: Sendable {
    var index: MaglevIndex
    var chunks: [UInt32: nodenet_maglev_chunk]
}

/// A frontend's entries exactly as they were (undo).
struct FrontendSnapshot: Sendable, Equatable {
    var master: FrontendMaster?
    var slots: [UInt16: UInt32]
}

// MARK: C layouts

extension FrontendKey {
    init?(_ k: nodenet_service_key) {
        guard let proto = TransportProtocol(ipProtocol: k.proto) else { return nil }
        self.init(
            address: IPAddress(ipv4: UInt32(bigEndian: k.address)), port: UInt16(bigEndian: k.port), protocol: proto)
    }

    /// The frontend a reverse-NAT entry names; nil for a protocol this build never writes.
    init?(_ v: nodenet_revnat) {
        guard let proto = TransportProtocol(ipProtocol: v.proto) else { return nil }
        self.init(
            address: IPAddress(ipv4: UInt32(bigEndian: v.address)), port: UInt16(bigEndian: v.port), protocol: proto)
    }

    /// The services-map key of this frontend's slot (0: the frontend itself, 1...: backends).
    func mapKey(slot: UInt16) -> nodenet_service_key {
        var k = nodenet_service_key()
        k.address = address.ipv4Value!.bigEndian
        k.port = port.bigEndian
        k.proto = `protocol`.ipProtocol
        k.slot = slot
        return k
    }

    var revnat: nodenet_revnat {
        nodenet_revnat(
            address: address.ipv4Value!.bigEndian, port: port.bigEndian, proto: `protocol`.ipProtocol, pad: 0)
    }
}

extension BackendAddress {
    /// The backend a backends-map value names; nil for a protocol this build never writes.
    init?(_ v: nodenet_backend) {
        guard let proto = TransportProtocol(ipProtocol: v.proto) else { return nil }
        self.init(
            address: IPAddress(ipv4: UInt32(bigEndian: v.address)), port: UInt16(bigEndian: v.port), protocol: proto)
    }

    /// As the pinned map stores it (the layout of bpf/lib/maps.h).
    var mapValue: nodenet_backend {
        nodenet_backend(
            address: address.ipv4Value!.bigEndian, port: port.bigEndian, proto: `protocol`.ipProtocol, flags: 0)
    }
}

extension FrontendMaster {
    /// As the pinned map stores it (the layout of bpf/lib/maps.h).
    var mapValue: nodenet_service {
        var v = nodenet_service()
        v.count = count
        v.id = id
        v.flags = flags.rawValue
        v.backend_id = affinityTimeout
        return v
    }
}

func slotValue(_ backendID: UInt32) -> nodenet_service {
    var v = nodenet_service()
    v.backend_id = backendID
    return v
}

/// The node's service maps, opened from its loaded objects, with the writes apply makes.
final class ServiceMaps {
    let services: BPFMap<nodenet_service_key, nodenet_service>
    /// Backends and frontends' reverse-NAT values by id, written in place (bpf/lib/lb.h): an
    /// entry of zeros is none.
    let backends: BPFMappedArray<nodenet_backend>
    let revnat: BPFMappedArray<nodenet_revnat>
    let nodes: BPFMap<nodenet_node_key, nodenet_node>
    let settings: BPFMap<UInt32, nodenet_config>
    let sourceRanges: BPFMap<nodenet_source_range_key, UInt8>
    let maglev: BPFMap<nodenet_maglev_key, nodenet_maglev_chunk>
    let maglevIndex: BPFMap<UInt32, nodenet_maglev_index>

    /// The maps pinned in `layout`; nil unless all of them are.
    init?(pinnedIn layout: BPFFSLayout) throws {
        guard let services = try BPFMap<nodenet_service_key, nodenet_service>.pinned(at: layout.path(.services)),
            let backends = try BPFMappedArray<nodenet_backend>.pinned(at: layout.path(.backends)),
            let revnat = try BPFMappedArray<nodenet_revnat>.pinned(at: layout.path(.revnat)),
            let nodes = try BPFMap<nodenet_node_key, nodenet_node>.pinned(at: layout.path(.nodes)),
            let settings = try BPFMap<UInt32, nodenet_config>.pinned(at: layout.path(.settings)),
            let sourceRanges = try BPFMap<nodenet_source_range_key, UInt8>.pinned(at: layout.path(.sourceRanges)),
            let maglev = try BPFMap<nodenet_maglev_key, nodenet_maglev_chunk>.pinned(at: layout.path(.maglev)),
            let maglevIndex = try BPFMap<UInt32, nodenet_maglev_index>.pinned(at: layout.path(.maglevIndex))
        else { return nil }
        (self.services, self.backends, self.revnat, self.nodes, self.settings) = (
            services, backends, revnat, nodes, settings
        )
        (self.sourceRanges, self.maglev, self.maglevIndex) = (sourceRanges, maglev, maglevIndex)
    }

    init(_ object: BPFObject) throws {
        services = try object.map(
            named: BPFFSLayout.Map.services.rawValue, key: nodenet_service_key.self, value: nodenet_service.self)
        backends = try BPFMappedArray(
            fd: object.map(named: BPFFSLayout.Map.backends.rawValue, key: UInt32.self, value: nodenet_backend.self).fd,
            name: BPFFSLayout.Map.backends.rawValue)
        revnat = try BPFMappedArray(
            fd: object.map(named: BPFFSLayout.Map.revnat.rawValue, key: UInt32.self, value: nodenet_revnat.self).fd,
            name: BPFFSLayout.Map.revnat.rawValue)
        nodes = try object.map(
            named: BPFFSLayout.Map.nodes.rawValue, key: nodenet_node_key.self, value: nodenet_node.self)
        settings = try object.map(
            named: BPFFSLayout.Map.settings.rawValue, key: UInt32.self, value: nodenet_config.self)
        sourceRanges = try object.map(
            named: BPFFSLayout.Map.sourceRanges.rawValue, key: nodenet_source_range_key.self, value: UInt8.self)
        maglev = try object.map(
            named: BPFFSLayout.Map.maglev.rawValue, key: nodenet_maglev_key.self, value: nodenet_maglev_chunk.self)
        maglevIndex = try object.map(
            named: BPFFSLayout.Map.maglevIndex.rawValue, key: UInt32.self, value: nodenet_maglev_index.self)
    }

    /// Writes backend `id` (nil: none, an entry of zeros).
    func setBackend(_ id: UInt32, _ backend: BackendAddress?) throws {
        try backends.store(backend?.mapValue ?? nodenet_backend(), at: id)
    }

    /// Writes frontend `id`'s reverse-NAT value (nil: none, an entry of zeros).
    func setRevNat(_ id: FrontendID, _ key: FrontendKey?) throws {
        try revnat.store(key?.revnat ?? nodenet_revnat(), at: UInt32(id))
    }

    /// Writes an array entry's 8 bytes as they are (0: none): clearing a malformed entry, or
    /// putting it back.
    func setBytes(_ bytes: UInt64, of entry: MalformedArrayEntry) throws {
        switch entry.array {
        case .backends: try backends.store(unsafeBitCast(bytes, to: nodenet_backend.self), at: entry.id)
        case .revnat: try revnat.store(unsafeBitCast(bytes, to: nodenet_revnat.self), at: entry.id)
        }
    }

    /// Frontend `id`'s Maglev table as it is (index and chunks), for undo; nil when it has none.
    func maglevSnapshot(_ id: FrontendID, index: MaglevIndex?) throws -> MaglevSnapshot? {
        guard let index else { return nil }
        var chunks: [UInt32: nodenet_maglev_chunk] = [:]
        for chunk in 0..<index.chunks {
            let key = nodenet_maglev_key(id: id, chunk: UInt32(chunk))
            if let value = try maglev.lookup(key) { chunks[UInt32(chunk)] = value }
        }
        return MaglevSnapshot(index: index, chunks: chunks)
    }

    /// Writes frontend `id`'s table: its chunks, each whole (a flow reads one entry of one
    /// chunk: old or new, always a backend of the frontend's), then its index; chunks beyond
    /// the new table's go last.
    func putMaglev(_ id: FrontendID, _ table: MaglevTable, previous: MaglevIndex?) throws {
        let chunks = table.index.chunks
        try maglev.update(
            keys: (0..<chunks).map { nodenet_maglev_key(id: id, chunk: UInt32($0)) },
            values: (0..<chunks).map(table.chunk))
        try maglevIndex.update(UInt32(id), table.index.mapValue)
        for chunk in chunks..<max(chunks, previous?.chunks ?? 0) {
            _ = try maglev.delete(nodenet_maglev_key(id: id, chunk: UInt32(chunk)))
        }
    }

    /// Removes frontend `id`'s table (the datapath then chooses at random for it): its chunks,
    /// then its index (stopped halfway, the index is still there for the next plan to see).
    func removeMaglev(_ id: FrontendID, chunks: Int) throws {
        for chunk in 0..<chunks { _ = try maglev.delete(nodenet_maglev_key(id: id, chunk: UInt32(chunk))) }
        _ = try maglevIndex.delete(UInt32(id))
    }

    /// Puts a table back as `snapshot` was (nil: none), over one of `currentChunks`.
    func restoreMaglev(_ id: FrontendID, _ snapshot: MaglevSnapshot?, currentChunks: Int) throws {
        let keep = snapshot?.chunks ?? [:]
        for (chunk, value) in keep { try maglev.update(nodenet_maglev_key(id: id, chunk: chunk), value) }
        if let snapshot {
            try maglevIndex.update(UInt32(id), snapshot.index.mapValue)
        } else {
            _ = try maglevIndex.delete(UInt32(id))
        }
        for chunk in 0..<currentChunks where keep[UInt32(chunk)] == nil {
            _ = try maglev.delete(nodenet_maglev_key(id: id, chunk: UInt32(chunk)))
        }
    }

    /// Slot 0 first (no new choices), then the slots.
    func remove(_ key: FrontendKey, slots: [UInt16: UInt32]) throws {
        try services.delete(key.mapKey(slot: 0))
        for slot in slots.keys.sorted() { try services.delete(key.mapKey(slot: slot)) }
    }

    /// Puts a frontend back exactly as `snapshot` (nil: absent).
    func restore(_ key: FrontendKey, _ snapshot: FrontendSnapshot?, currentSlots: [UInt16: UInt32]) throws {
        guard let snapshot else { return try remove(key, slots: currentSlots) }
        for (slot, id) in snapshot.slots { try services.update(key.mapKey(slot: slot), slotValue(id)) }
        if let master = snapshot.master {
            try services.update(key.mapKey(slot: 0), master.mapValue)
        } else {
            try services.delete(key.mapKey(slot: 0))
        }
        for slot in currentSlots.keys where snapshot.slots[slot] == nil { try services.delete(key.mapKey(slot: slot)) }
    }

    /// Writes of several frontends and backends, collected to go out as batched map updates
    /// in the order that keeps every frontend make-before-break.
    struct Batch {
        fileprivate var backendKeys: [UInt32] = [], backendValues: [nodenet_backend] = []
        fileprivate var revnatKeys: [UInt32] = [], revnatValues: [nodenet_revnat] = []
        /// Frontends whose write adds no entry (it replaces values, frees surplus slots), then
        /// those that add some: the first wave frees room before the second takes it.
        fileprivate var settling = FrontendWrites(), growing = FrontendWrites()
        fileprivate var masterRemovals: [nodenet_service_key] = [], slotRemovals: [nodenet_service_key] = []
        fileprivate var revnatRemovals: [UInt32] = [], backendRemovals: [UInt32] = []

        /// One wave of frontend writes: new slots, every slot 0, surplus slots.
        fileprivate struct FrontendWrites {
            var slotKeys: [nodenet_service_key] = [], slotValues: [nodenet_service] = []
            var masterKeys: [nodenet_service_key] = [], masterValues: [nodenet_service] = []
            var surplus: [nodenet_service_key] = []
        }

        mutating func putBackend(_ id: UInt32, _ backend: BackendAddress) {
            backendKeys.append(id)
            backendValues.append(backend.mapValue)
        }

        /// A frontend's write goes in the second wave when it adds any entry to the services
        /// map (`FrontendEntry.servicesMapKeys`): the first wave only replaces and frees.
        mutating func putFrontend(_ key: FrontendKey, _ entry: FrontendEntry, previous: FrontendSnapshot?) {
            revnatKeys.append(entry.id)
            revnatValues.append(key.revnat)
            let previousSlots = previous?.slots ?? [:]
            let count = entry.backendIDs.count
            func write(_ wave: inout FrontendWrites) {
                for (i, id) in entry.backendIDs.enumerated() where previousSlots[UInt16(i + 1)] != id {
                    wave.slotKeys.append(key.mapKey(slot: UInt16(i + 1)))
                    wave.slotValues.append(slotValue(id))
                }
                wave.masterKeys.append(key.mapKey(slot: 0))
                wave.masterValues.append(entry.master.mapValue)
                for slot in previousSlots.keys where Int(slot) > count { wave.surplus.append(key.mapKey(slot: slot)) }
            }
            if entry.servicesMapKeys(over: previous).added > 0 { write(&growing) } else { write(&settling) }
        }

        mutating func removeFrontend(_ key: FrontendKey, slots: [UInt16: UInt32]) {
            masterRemovals.append(key.mapKey(slot: 0))
            for slot in slots.keys.sorted() { slotRemovals.append(key.mapKey(slot: slot)) }
        }

        mutating func removeRevNat(_ id: FrontendID) { revnatRemovals.append(id) }
        mutating func removeBackend(_ id: UInt32) { backendRemovals.append(id) }
    }

    /// Removals first (slot 0 of every frontend, so no new choices, then their slots, ids and
    /// backends), then backends and ids, then each wave of frontends: new slots, every slot 0,
    /// and surplus slots last. The services map never holds more than before the batch or
    /// after it (a spec that fits the map never meets a full one halfway).
    func write(_ b: Batch) throws {
        for step in b.steps { try step.write(self) }
    }
}

extension ServiceMaps.Batch {
    /// One write of a batch: a map, put or delete, and its keys in the order they go out.
    struct Step: CustomStringConvertible {
        enum Map: String { case services, revnat, backends }
        var map: Map
        var put: Bool
        /// How many keys it writes.
        var count: Int
        /// Readable keys, made only when asked (a test, a message): `10.96.0.1:80/TCP#0` (a
        /// frontend's slot), `7` (an id).
        var keys: [String] { names() }
        private let names: () -> [String]
        fileprivate let write: (ServiceMaps) throws -> Void

        fileprivate init(
            _ map: Map, put: Bool, count: Int, keys: @autoclosure @escaping () -> [String],
            write: @escaping (ServiceMaps) throws -> Void
        ) {
            (self.map, self.put, self.count, self.names, self.write) = (map, put, count, keys, write)
        }

        var description: String { "\(put ? "put" : "delete") \(map) \(keys.joined(separator: " "))" }
    }

    /// The writes in the order they go out (make-before-break for every frontend); empty ones left out.
    var steps: [Step] {
        func slots(_ keys: [nodenet_service_key]) -> [String] {
            keys.map { "\(FrontendKey($0).map(\.description) ?? "?")#\($0.slot)" }
        }
        let (masterRemovals, slotRemovals, revnatRemovals, backendRemovals) = (
            self.masterRemovals, self.slotRemovals, self.revnatRemovals, self.backendRemovals
        )
        let (backendKeys, backendValues, revnatKeys, revnatValues) = (
            self.backendKeys, self.backendValues, self.revnatKeys, self.revnatValues
        )
        func frontends(_ wave: FrontendWrites) -> [Step] {
            let (slotKeys, slotValues, masterKeys, masterValues, surplus) = (
                wave.slotKeys, wave.slotValues, wave.masterKeys, wave.masterValues, wave.surplus
            )
            return [
                Step(.services, put: true, count: slotKeys.count, keys: slots(slotKeys)) {
                    try $0.services.update(keys: slotKeys, values: slotValues)
                },
                Step(.services, put: true, count: masterKeys.count, keys: slots(masterKeys)) {
                    try $0.services.update(keys: masterKeys, values: masterValues)
                },
                Step(.services, put: false, count: surplus.count, keys: slots(surplus)) { maps in
                    for key in surplus { try maps.services.delete(key) }
                },
            ]
        }
        let all: [Step] =
            [
                Step(.services, put: false, count: masterRemovals.count, keys: slots(masterRemovals)) {
                    try $0.services.delete(keys: masterRemovals)
                },
                Step(.services, put: false, count: slotRemovals.count, keys: slots(slotRemovals)) {
                    try $0.services.delete(keys: slotRemovals)
                },
                Step(.revnat, put: false, count: revnatRemovals.count, keys: revnatRemovals.map(String.init)) { maps in
                    for id in revnatRemovals { try maps.setRevNat(id, nil) }
                },
                Step(.backends, put: false, count: backendRemovals.count, keys: backendRemovals.map(String.init)) {
                    maps in
                    for id in backendRemovals { try maps.setBackend(id, nil) }
                },
                Step(.backends, put: true, count: backendKeys.count, keys: backendKeys.map(String.init)) { maps in
                    for (id, value) in zip(backendKeys, backendValues) { try maps.backends.store(value, at: id) }
                },
                Step(.revnat, put: true, count: revnatKeys.count, keys: revnatKeys.map(String.init)) { maps in
                    for (id, value) in zip(revnatKeys, revnatValues) { try maps.revnat.store(value, at: id) }
                },
            ] + frontends(settling) + frontends(growing)
        return all.filter { $0.count > 0 }
    }
}

/// An entry of the backends or reverse-NAT array (8 bytes by id) that is not zeros and decodes
/// to nothing: a protocol of 0 (none to the datapath) or one nodenet never writes. Only
/// something else writing the maps makes one; left in place it would stay for good (no plan
/// names it), and every verification would decode the maps instead of comparing them.
public struct MalformedArrayEntry: Sendable, Hashable, CustomStringConvertible {
    public enum Array: String, Sendable { case backends, revnat }
    public var array: Array
    public var id: UInt32
    /// Its bytes as found, in memory order (what undo puts back).
    public var bytes: UInt64

    public init(_ array: Array, id: UInt32, bytes: UInt64) {
        (self.array, self.id, self.bytes) = (array, id, bytes)
    }

    init<Value: BitwiseCopyable>(_ array: Array, id: UInt32, _ value: Value) {
        precondition(MemoryLayout<Value>.size == 8, "the arrays' values are 8 bytes")
        self.init(array, id: id, bytes: withUnsafeBytes(of: value) { $0.loadUnaligned(as: UInt64.self) })
    }

    /// `backend 7`, `frontend id 7`: the entry as the plan names it.
    public var subject: String { array == .backends ? "backend \(id)" : "frontend id \(id)" }

    /// `bytes 00 00 00 00 00 00 09 00` (in memory order).
    public var found: String {
        "bytes "
            + withUnsafeBytes(of: bytes) { $0.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) } }.joined(
                separator: " ")
    }

    public var description: String { "\(array.rawValue)[\(id)]: \(found)" }
}
