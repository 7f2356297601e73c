import BPF
import CNodeNetBPF
import Foundation

/// The loaded programs of one node for one apply; maps are pinned under the node's bpffs
/// directory and shared between the objects.
final class DatapathObjects {
    /// Every embedded object of the datapath (tc programs and socket LB).
    static let objectNames = DatapathProgram.allCases.map(\.object) + [CgroupLink.Hook.object]

    let objects: [DatapathProgram: BPFObject]
    let socket: BPFObject
    let endpoints: BPFMap<nodenet_endpoint_key, nodenet_endpoint>
    let services: ServiceMaps

    init(layout: BPFFSLayout) throws {
        try BPFFS.prepare(layout.directory)
        var objects: [DatapathProgram: BPFObject] = [:]
        for program in DatapathProgram.allCases {
            let o = try BPFObject(embedded: program.object, pinRoot: layout.directory)
            try layout.serviceCapacity.size(o)
            try o.load()
            objects[program] = o
        }
        self.objects = objects
        socket = try BPFObject(embedded: CgroupLink.Hook.object, pinRoot: layout.directory)
        try layout.serviceCapacity.size(socket)
        for hook in CgroupLink.Hook.allCases {
            if let unused = hook.unusedFunction { try socket.setAutoload(program: unused, false) }
        }
        try socket.load()
        endpoints = try objects[.fromContainer]!.map(
            named: BPFFSLayout.Map.endpoints.rawValue, key: nodenet_endpoint_key.self, value: nodenet_endpoint.self)
        services = try ServiceMaps(objects[.fromContainer]!)
    }

    func programFD(_ p: DatapathProgram) throws -> Int32 { try objects[p]!.programFD(named: p.function) }

    /// The objects loaded for `layout`, reused while the maps pinned there are the very maps
    /// they were loaded with (same map ids): loading runs the verifier on every program, which
    /// would be most of a CNI ADD. A map replaced, removed or migrated means a fresh load.
    static func loaded(_ layout: BPFFSLayout) throws -> DatapathObjects {
        let ids = try pinnedMapIDs(layout)
        if let cached = Cache.shared.objects(for: layout, ids: ids) { return cached }
        let objects = try DatapathObjects(layout: layout)
        Cache.shared.keep(objects, for: layout, ids: try pinnedMapIDs(layout))
        return objects
    }

    /// The ids of the maps pinned under the layout (absent ones left out).
    static func pinnedMapIDs(_ layout: BPFFSLayout) throws -> [String: UInt32] {
        var ids: [String: UInt32] = [:]
        for map in BPFFSLayout.Map.allCases {
            guard let handle = try BPFPin.open(layout.path(map)) else { continue }
            ids[map.rawValue] = try BPFMapInfo(fd: handle.fd, what: layout.path(map)).id
        }
        return ids
    }

    /// The few most recently loaded objects, by layout (a process drives one node, a test
    /// process a handful at a time: older entries are closed).
    final class Cache: @unchecked Sendable {
        static let shared = Cache()
        static let capacity = 4
        private let lock = NSLock()
        private var entries: [(layout: BPFFSLayout, ids: [String: UInt32], objects: DatapathObjects)] = []

        func objects(for layout: BPFFSLayout, ids: [String: UInt32]) -> DatapathObjects? {
            lock.lock()
            defer { lock.unlock() }
            guard !ids.isEmpty, let i = entries.firstIndex(where: { $0.layout.directory == layout.directory }) else {
                return nil
            }
            let entry = entries.remove(at: i)
            guard entry.ids == ids, entry.layout == layout else { return nil }
            entries.append(entry)
            return entry.objects
        }

        func keep(_ objects: DatapathObjects, for layout: BPFFSLayout, ids: [String: UInt32]) {
            lock.lock()
            defer { lock.unlock() }
            entries.removeAll { $0.layout.directory == layout.directory }
            entries.append((layout, ids, objects))
            if entries.count > Self.capacity { entries.removeFirst(entries.count - Self.capacity) }
        }
    }

    func programFD(_ hook: CgroupLink.Hook) throws -> Int32 { try socket.programFD(named: hook.function) }

    /// Entries of the pinned endpoints map of a node, by pod IP (empty when nothing is pinned
    /// yet): all of them, or (`only`) those of these addresses, looked up one by one (what a
    /// plan scoped to some endpoints compares, at a cost that does not grow with the node's pods).
    static func pinnedEntries(_ layout: BPFFSLayout, only: [IPAddress]? = nil) throws -> [IPAddress: EndpointEntry] {
        guard let map = try BPFMap<nodenet_endpoint_key, nodenet_endpoint>.pinned(at: layout.path(.endpoints)) else {
            return [:]
        }
        var result: [IPAddress: EndpointEntry] = [:]
        if let only {
            for ip in only where ip.ipv4Value != nil {
                if let value = try map.lookup(EndpointEntry.key(ip)) { result[ip] = EndpointEntry(value) }
            }
            return result
        }
        for key in try map.keys() {
            if let value = try map.lookup(key) {
                result[IPAddress(ipv4: UInt32(bigEndian: key.ip))] = EndpointEntry(value)
            }
        }
        return result
    }

    /// The maps this build's objects declare, by name (shared maps once). Read once per
    /// process: the embedded objects do not change, and opening them parses their ELF.
    static let declaredShapes: Result<[BPFFSLayout.Map: BPFMapShape], Error> = Result {
        var shapes: [BPFFSLayout.Map: BPFMapShape] = [:]
        for object in objectNames {
            for (name, shape) in try BPFMapShape.declared(inEmbedded: object) {
                // A map BPFFSLayout.Map does not list is not compared (a unit test keeps the list
                // complete); it must not stop every plan.
                guard let map = BPFFSLayout.Map(rawValue: name) else { continue }
                shapes[map] = shapes[map] ?? shape
            }
        }
        return shapes
    }
}
