import BPF
import CNodeNetBPF

/// What the services, backends and reverse-NAT maps hold once a plan's frontends are written
/// with its ids. Verification compares the maps with it before decoding them (10 000 services
/// are 80 000 entries, and decoding them into tables to plan again cost more than writing
/// them); maps that differ in anything are decoded and planned as usual, which says what.
///
/// The comparison is exact without sorting: each map must have as many entries as the image,
/// and every entry must be, byte for byte, one the image's encoders (`mapKey`, `mapValue`, the
/// ones apply writes with) make. Keys in a map are unique, so a map that passes holds the
/// image and nothing else. The slots are worked out again from the frontends' backends and the
/// backend ids, not taken from the plan that wrote them.
struct ServiceMapsImage: Sendable, Equatable {
    /// The ids the image was made with (what the maps hold when it matches): each frontend's,
    /// each backend's, and per frontend (in `frontends`' order) its backends' in slot order.
    let frontendIDs: [FrontendKey: FrontendID]
    let backendIDs: [BackendAddress: UInt32]
    let slots: [[UInt32]]
    /// The ids cover the frontends and their backends exactly (else no map is taken to hold it).
    private let complete: Bool
    private let frontends: [DesiredFrontend]
    /// Each frontend's place in `frontends` (and `slots`).
    private let index: [FrontendKey: Int]
    /// Entries of the services map: slot 0 and the backend slots of every frontend.
    private let serviceEntries: Int

    init(_ frontends: [DesiredFrontend], frontendIDs: [FrontendKey: FrontendID], backendIDs: [BackendAddress: UInt32]) {
        (self.frontendIDs, self.backendIDs) = (frontendIDs, backendIDs)
        self.frontends = frontends
        // Every frontend and backend has an id, and every backend id is one of theirs.
        var complete = frontends.allSatisfy { frontendIDs[$0.key] != nil }
        var referenced = Set<UInt32>(minimumCapacity: backendIDs.count)
        slots = frontends.map { frontend in
            frontend.backends.map { backend in
                guard let id = backendIDs[backend] else {
                    complete = false
                    return 0
                }
                referenced.insert(id)
                return id
            }
        }
        for frontend in frontends {
            for backend in frontend.retained {
                if let id = backendIDs[backend] { referenced.insert(id) } else { complete = false }
            }
        }
        self.complete = complete && referenced.count == backendIDs.count
        var index: [FrontendKey: Int] = [:]
        index.reserveCapacity(frontends.count)
        for (i, frontend) in frontends.enumerated() { index[frontend.key] = i }
        self.index = index
        serviceEntries = frontends.count + slots.reduce(0) { $0 + $1.count }
    }

    /// Whether `maps` hold exactly this image: nothing missing, nothing more.
    func isHeld(by maps: ServiceMaps) throws -> Bool {
        // A frontend given twice (refused by validation) makes the counts differ: not held.
        guard complete, index.count == frontends.count else { return false }
        return try revnatIsHeld(maps.revnat) && backendsAreHeld(maps.backends) && servicesAreHeld(maps.services)
    }

    /// Every frontend's id, under its frontend.
    private func revnatIsHeld(_ map: BPFMap<UInt32, nodenet_revnat>) throws -> Bool {
        let (ids, values) = try map.contents()
        guard ids.count == frontends.count else { return false }
        for (id, v) in zip(ids, values) {
            guard let key = FrontendKey(v), let want = frontendIDs[key], UInt32(want) == id, Self.same(key.revnat, v)
            else { return false }
        }
        return true
    }

    /// Every backend, under its id.
    private func backendsAreHeld(_ map: BPFMap<UInt32, nodenet_backend>) throws -> Bool {
        let (ids, values) = try map.contents()
        guard ids.count == backendIDs.count else { return false }
        for (id, v) in zip(ids, values) {
            guard let backend = BackendAddress(v), backendIDs[backend] == id, Self.same(backend.mapValue, v) else {
                return false
            }
        }
        return true
    }

    /// Every frontend's slot 0 and backend slots, key and value as apply writes them.
    private func servicesAreHeld(_ map: BPFMap<nodenet_service_key, nodenet_service>) throws -> Bool {
        let (keys, values) = try map.contents()
        guard keys.count == serviceEntries else { return false }
        for (k, v) in zip(keys, values) {
            guard let key = FrontendKey(k), let i = index[key], Self.same(key.mapKey(slot: k.slot), k) else {
                return false
            }
            let want: nodenet_service
            if k.slot == 0 {
                let frontend = frontends[i]
                want =
                    FrontendEntry(
                        id: frontendIDs[key]!, flags: frontend.flags, backendIDs: slots[i],
                        affinityTimeout: frontend.affinityTimeout ?? 0
                    ).master.mapValue
            } else {
                guard Int(k.slot) <= slots[i].count else { return false }
                want = slotValue(slots[i][Int(k.slot) - 1])
            }
            guard Self.same(want, v) else { return false }
        }
        return true
    }

    /// Whether two map keys or values are the same bytes (padding included: apply writes zeros).
    private static func same<T>(_ a: T, _ b: T) -> Bool {
        withUnsafeBytes(of: a) { a in withUnsafeBytes(of: b) { b in a.elementsEqual(b) } }
    }
}
