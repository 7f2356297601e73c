import BPF
import CNodeNetBPF
import Foundation

/// What the services, backends and reverse-NAT maps hold once a plan's frontends are written
/// with its ids. Verification compares the maps with it before decoding them (10 000 services
/// are 80 000 entries, and decoding them into tables to plan again cost more than writing
/// them); maps that differ in anything are decoded and planned as usual, which says what.
///
/// The comparison is exact without sorting: each map must have as many entries as the image,
/// and every entry must be one the image's encoders (`mapKey`, `mapValue`, the ones apply
/// writes with) make: values byte for byte, services-map keys field by field (the frontend's
/// address, port and protocol, the slot, padding zero). Keys in a map are unique, so a map
/// that passes holds the image and nothing else. The plan's slots are checked, not trusted: each must name, through
/// the backend ids, the frontend's backend at its place.
struct ServiceMapsImage: Sendable, Equatable {
    /// The ids the image was made with (what the maps hold when it matches): each frontend's,
    /// each backend's, and per frontend (in `frontends`' order) its backends' in slot order.
    let frontendIDs: [FrontendKey: FrontendID]
    let backendIDs: [BackendAddress: UInt32]
    let ordered: [FrontendID]
    let slotIDs: [UInt32]
    let slotStarts: [UInt32]
    /// The ids cover the frontends and their backends exactly, one id each (else no map is
    /// taken to hold it).
    private let complete: Bool
    private let frontends: [DesiredFrontend]
    /// Per frontend (in `frontends`' order) its reverse-NAT value as apply writes it.
    private let revnats: [nodenet_revnat]
    /// Each frontend's place in `frontends` by id (-1: none), and its services-map entries by
    /// key: the check reads them for every entry of the maps, in the maps' order (memory
    /// latency is its cost).
    private let frontendByID: [Int32]
    private let frontendByKey: FrontendIndex
    /// Each backend's value by id (zero: none; every backend's protocol is nonzero).
    private let backendByID: [nodenet_backend]
    /// Entries of the services map: slot 0 and the backend slots of every frontend.
    private let serviceEntries: Int

    /// Ids beyond this make an image nobody holds (the maps are decoded instead): apply hands
    /// ids out lowest first, below the largest maps' sizes (`ServiceMapCapacity.allowed`).
    static let idLimit = 2 * Int(ServiceMapCapacity.allowed.upperBound)

    init(
        _ frontends: [DesiredFrontend], frontendIDs: [FrontendKey: FrontendID], backendIDs: [BackendAddress: UInt32],
        ordered: [FrontendID], slotIDs: [UInt32], slotStarts: [UInt32]
    ) {
        (self.frontendIDs, self.backendIDs, self.ordered) = (frontendIDs, backendIDs, ordered)
        (self.slotIDs, self.slotStarts) = (slotIDs, slotStarts)
        self.frontends = frontends
        // Tables by id, not hashes: the maps are checked entry by entry against them (hash
        // lookups into tables of 100 000 frontends were most of a verification).
        // (Each frontend's id is the plan's `ordered` one: ids the plan's prune took for stale
        // would leave the maps other than this, and the check sees it.)
        var complete =
            slotStarts.count == frontends.count + 1 && ordered.count == frontends.count
            && frontendIDs.count == frontends.count && slotStarts.first == 0
            && slotStarts.last == UInt32(slotIDs.count)
            && zip(slotStarts, slotStarts.dropFirst()).allSatisfy { $0 <= $1 }
        let maxFrontendID = ordered.max() ?? 0
        if Int(maxFrontendID) >= Self.idLimit { complete = false }
        let ids = complete ? ordered : []
        var frontendByID = [Int32](repeating: -1, count: complete ? Int(maxFrontendID) + 1 : 0)
        for (i, id) in ids.enumerated() {
            if id != 0, frontendByID[Int(id)] < 0 {
                frontendByID[Int(id)] = Int32(i)
            } else {
                complete = false  // none, out of range, or another frontend's
            }
        }
        let maxBackendID = backendIDs.values.max() ?? 0
        if Int(maxBackendID) >= Self.idLimit { complete = false }
        var backendByID = [nodenet_backend](repeating: nodenet_backend(), count: complete ? Int(maxBackendID) + 1 : 0)
        if complete {
            for (backend, id) in backendIDs {
                if backendByID[Int(id)].proto != 0 { complete = false }  // two backends, one id
                backendByID[Int(id)] = backend.mapValue
            }
        }
        // Each slot names, by the backend ids, the frontend's backend at its place (the slots
        // are checked, not trusted), and every backend id is one of theirs.
        var referenced = [Bool](repeating: false, count: backendByID.count)
        var referencedCount = 0
        func reference(_ id: UInt32) {
            if !referenced[Int(id)] {
                referenced[Int(id)] = true
                referencedCount += 1
            }
        }
        if complete {
            check: for (i, frontend) in frontends.enumerated() {
                let ids = slotIDs[Int(slotStarts[i])..<Int(slotStarts[i + 1])]
                guard ids.count == frontend.backends.count else {
                    complete = false
                    break
                }
                for (backend, id) in zip(frontend.backends, ids) {
                    guard id < backendByID.count, Self.same(backendByID[Int(id)], backend.mapValue) else {
                        complete = false
                        break check
                    }
                    reference(id)
                }
                for backend in frontend.retained {
                    guard let id = backendIDs[backend] else {
                        complete = false
                        break check
                    }
                    reference(id)
                }
            }
        }
        self.complete = complete && referencedCount == backendIDs.count
        revnats = ids.isEmpty ? [] : frontends.map(\.key.revnat)  // (IPv4 only: complete)
        self.frontendByID = frontendByID
        self.backendByID = backendByID
        frontendByKey = FrontendIndex(frontends, ids: ids, slotStarts: slotStarts)
        serviceEntries = frontends.count + slotIDs.count
    }

    /// Whether `maps` hold exactly this image: nothing missing, nothing more.
    func isHeld(by maps: ServiceMaps) throws -> Bool {
        // A frontend given twice (refused by validation) makes the counts differ: not held.
        guard complete, frontendByKey.count == frontends.count else { return false }
        return try revnatIsHeld(maps.revnat) && backendsAreHeld(maps.backends) && servicesAreHeld(maps.services)
    }

    /// Every frontend's id, under its frontend (the array's entries that are not zeros).
    private func revnatIsHeld(_ map: BPFMappedArray<nodenet_revnat>) throws -> Bool {
        let ids = map.nonZeroIndices()
        guard ids.count == frontends.count else { return false }
        for id in ids {
            guard id < frontendByID.count, case let i = frontendByID[id], i >= 0,
                Self.same(revnats[Int(i)], map[id])
            else { return false }
        }
        return true
    }

    /// Every backend, under its id (the array's entries that are not zeros).
    private func backendsAreHeld(_ map: BPFMappedArray<nodenet_backend>) throws -> Bool {
        let ids = map.nonZeroIndices()
        guard ids.count == backendIDs.count else { return false }
        for id in ids {
            guard id < backendByID.count, backendByID[id].proto != 0, Self.same(backendByID[id], map[id]) else {
                return false
            }
        }
        return true
    }

    /// Every frontend's slot 0 and backend slots, key and value as apply writes them, read a
    /// batch at a time where the kernel leaves them (none copied out).
    private func servicesAreHeld(_ map: BPFMap<nodenet_service_key, nodenet_service>) throws -> Bool {
        var (entries, held) = (0, true)
        try map.forEachBatch { keys, values in
            entries += keys.count
            held = entries <= serviceEntries && zip(keys, values).allSatisfy(holds)
            return held
        }
        return held && entries == serviceEntries
    }

    /// Whether a services-map entry is one of the image's. The key is checked field by field
    /// (its word, its slot, its padding zero as apply writes it): every one of its 12 bytes.
    private func holds(_ key: nodenet_service_key, _ value: nodenet_service) -> Bool {
        assert(MemoryLayout<nodenet_service_key>.size == 12, "a field of the key this check does not read")
        guard key.pad == 0, key.pad2 == 0, let frontend = frontendByKey.entries(of: key) else { return false }
        if key.slot == 0 { return Self.same(frontend.master, value) }
        let slot = frontend.slots.lowerBound + UInt32(key.slot) - 1
        return slot < frontend.slots.upperBound && Self.same(slotValue(slotIDs[Int(slot)]), value)
    }

    /// Whether two map keys or values are the same bytes (padding included: apply writes zeros).
    private static func same<T>(_ a: T, _ b: T) -> Bool {
        withUnsafeBytes(of: a) { a in
            withUnsafeBytes(of: b) { b in memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0 }
        }
    }

    static func == (a: ServiceMapsImage, b: ServiceMapsImage) -> Bool {
        a.frontendIDs == b.frontendIDs && a.backendIDs == b.backendIDs && a.ordered == b.ordered
            && a.slotIDs == b.slotIDs
            && a.slotStarts == b.slotStarts
            && a.frontends == b.frontends
    }
}

/// Frontends' services-map entries by their IPv4 address, port and protocol (a services-map
/// key without its slot): open addressing over one word each, the entries beside the word, so
/// that an entry of the map costs a probe or two and the read of its backend's id (a dictionary
/// of `FrontendKey`s took several cache misses, a separate table of places one more).
private struct FrontendIndex: Sendable {
    /// A frontend's entries: slot 0's value as apply writes it and where its backends' ids are
    /// in the image's `slotIDs` (slot `n` is `slots.lowerBound + n - 1`).
    struct Entries {
        var word: UInt64  // 0: empty (every frontend's protocol is nonzero)
        var master: nodenet_service
        var slots: Range<UInt32>
    }
    private var table: [Entries]
    private let shift: UInt64
    /// Frontends indexed (a key given twice counts once).
    private(set) var count = 0

    /// `ids`: each frontend's id (in `frontends`' order); `slotStarts`: where each one's
    /// backends' ids start.
    init(_ frontends: [DesiredFrontend], ids: [FrontendID], slotStarts: [UInt32]) {
        var bits: UInt64 = 4
        while 1 << bits < 2 * max(frontends.count, 1) { bits += 1 }
        shift = 64 - bits
        table = Array(repeating: Entries(word: 0, master: nodenet_service(), slots: 0..<0), count: 1 << bits)
        for (i, id) in ids.enumerated() {
            let frontend = frontends[i]
            guard let word = Self.word(frontend.key) else { continue }
            var place = self.place(word)
            while table[place].word != 0 && table[place].word != word { place = (place + 1) & (table.count - 1) }
            guard table[place].word == 0 else { continue }
            let slots = slotStarts[i]..<slotStarts[i + 1]
            let master = FrontendMaster(
                count: UInt16(truncatingIfNeeded: slots.count), id: id, flags: frontend.flags,
                affinityTimeout: frontend.affinityTimeout ?? 0)
            table[place] = Entries(word: word, master: master.mapValue, slots: slots)
            count += 1
        }
    }

    /// The entries of the frontend a services-map key belongs to.
    func entries(of key: nodenet_service_key) -> Entries? {
        let word =
            UInt64(UInt32(bigEndian: key.address)) << 32 | UInt64(UInt16(bigEndian: key.port)) << 8 | UInt64(key.proto)
        guard word != 0 else { return nil }
        var place = self.place(word)
        while table[place].word != 0 {
            if table[place].word == word { return table[place] }
            place = (place + 1) & (table.count - 1)
        }
        return nil
    }

    private static func word(_ key: FrontendKey) -> UInt64? {
        guard let address = key.address.ipv4Value else { return nil }
        return UInt64(address) << 32 | UInt64(key.port) << 8 | UInt64(key.protocol.ipProtocol)
    }

    private func place(_ word: UInt64) -> Int { Int((word &* 0x9E37_79B9_7F4A_7C15) >> shift) }
}
