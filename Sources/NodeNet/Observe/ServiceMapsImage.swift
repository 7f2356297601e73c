import BPF
import CNodeNetBPF

/// What the services, backends and reverse-NAT maps hold once a plan's frontends are written
/// with its ids. Verification compares the maps with it before decoding them (10 000 services
/// are 80 000 entries, and decoding them into tables to plan again cost more than writing
/// them); maps that differ in anything are decoded and planned as usual, which says what.
///
/// The comparison is exact without sorting: each map must have as many entries as the image,
/// and every entry must be one of the image's. Keys in a map are unique, and no two of them can
/// stand for the same entry of the image (the services key's padding must be zero), so a map
/// that passes holds the image and nothing else (values' padding aside, which neither the
/// datapath nor the decoder reads). The slots are worked out again from the frontends'
/// backends and the backend ids, not taken from the plan that wrote them.
struct ServiceMapsImage: Sendable, Equatable {
    /// The ids the image was made with (what the maps hold when it matches): each frontend's,
    /// each backend's, and per frontend (in `frontends`' order) its backends' in slot order.
    let frontendIDs: [FrontendKey: UInt16]
    let backendIDs: [BackendAddress: UInt32]
    let slots: [[UInt32]]
    /// The ids cover the frontends and their backends exactly (else no map is taken to hold it).
    private let complete: Bool
    private let frontends: [DesiredFrontend]
    /// Each frontend's place in `frontends` (and `slots`).
    private let index: [FrontendKey: Int]
    /// Entries of the services map: slot 0 and the backend slots of every frontend.
    private let serviceEntries: Int

    init(_ frontends: [DesiredFrontend], frontendIDs: [FrontendKey: UInt16], backendIDs: [BackendAddress: UInt32]) {
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
            guard v.pad == 0, id <= UInt32(UInt16.max), let proto = TransportProtocol(ipProtocol: v.proto) else {
                return false
            }
            let key = FrontendKey(
                address: IPAddress(ipv4: UInt32(bigEndian: v.address)), port: UInt16(bigEndian: v.port),
                protocol: proto)
            guard frontendIDs[key] == UInt16(id) else { return false }
        }
        return true
    }

    /// Every backend, under its id.
    private func backendsAreHeld(_ map: BPFMap<UInt32, nodenet_backend>) throws -> Bool {
        let (ids, values) = try map.contents()
        guard ids.count == backendIDs.count else { return false }
        for (id, v) in zip(ids, values) {
            guard v.flags == 0, let proto = TransportProtocol(ipProtocol: v.proto) else { return false }
            let backend = BackendAddress(
                address: IPAddress(ipv4: UInt32(bigEndian: v.address)), port: UInt16(bigEndian: v.port),
                protocol: proto)
            guard backendIDs[backend] == id else { return false }
        }
        return true
    }

    /// Every frontend's slot 0 (count, id, flags, affinity timeout) and backend slots.
    private func servicesAreHeld(_ map: BPFMap<nodenet_service_key, nodenet_service>) throws -> Bool {
        let (keys, values) = try map.contents()
        guard keys.count == serviceEntries else { return false }
        for (k, v) in zip(keys, values) {
            guard k.pad == 0, k.pad2 == 0, let key = FrontendKey(k), let i = index[key] else { return false }
            if k.slot == 0 {
                guard Int(v.count) == slots[i].count, v.id == frontendIDs[key],
                    v.flags == frontends[i].flags.rawValue, v.backend_id == frontends[i].affinityTimeout ?? 0
                else { return false }
            } else {
                guard Int(k.slot) <= slots[i].count, v.backend_id == slots[i][Int(k.slot) - 1], v.count == 0,
                    v.id == 0, v.flags == 0
                else { return false }
            }
        }
        return true
    }
}
