import CNodeNetBPF

/// Ids of frontends (`FrontendID`, the reverse-NAT index) and backends: read back from the
/// maps so they stay stable across applies and restarts; new ones take the lowest free id.
struct ServiceIDs: Sendable, Equatable {
    var frontends: [FrontendKey: FrontendID] = [:]
    var backends: [BackendAddress: UInt32] = [:]
    /// Per wanted frontend (in the order given), its id (0: none) and its backends' ids in slot
    /// order.
    var ordered: [FrontendID] = []
    /// The backends' ids of every frontend one after the other, and where each frontend's start
    /// (`slots(i)`): flat, so that ids a controller keeps between plans are a few buffers, not
    /// one array per frontend pinning heap pages all over (245 MiB at 100 000 services).
    var slotIDs: [UInt32] = []
    var slotStarts: [UInt32] = [0]

    /// Frontend `i`'s backends' ids, in slot order.
    func slots(_ i: Int) -> ArraySlice<UInt32> { slotIDs[Int(slotStarts[i])..<Int(slotStarts[i + 1])] }

    /// `capacity`: the ids are its `frontendIDs`.
    static func assign(
        _ wanted: [DesiredFrontend], observed: ObservedServices, capacity: ServiceMapCapacity
    ) -> ServiceIDs {
        var ids = ServiceIDs()
        ids.frontends.reserveCapacity(wanted.count)
        ids.ordered = Array(repeating: 0, count: wanted.count)
        // Frontends: the id in slot 0, else the id its reverse-NAT entry has (ids outside
        // `capacity.frontendIDs` are not kept). On a converged node every frontend has its slot 0
        // and the tables below are never built.
        var taken = FrontendIDSet(capacity.frontendIDs)
        var missing: [Int] = []
        if observed.masters.isEmpty {
            missing = Array(wanted.indices)  // (a node without services: no lookups)
        } else {
            for (i, f) in wanted.enumerated() {
                if let id = observed.masters[f.key]?.id, id != 0, taken.insert(id) {
                    ids.frontends[f.key] = id
                    ids.ordered[i] = id
                } else {
                    missing.append(i)
                }
            }
        }
        if !missing.isEmpty && !observed.revnat.isEmpty {
            // Ids only a reverse-NAT entry has next (a live frontend keeps its id even when an
            // inconsistent map has another frontend's revnat at it).
            var byKey: [FrontendKey: FrontendID] = [:]
            byKey.reserveCapacity(observed.revnat.count)
            for (id, key) in observed.revnat { byKey[key] = min(id, byKey[key] ?? id) }  // lowest id on duplicates
            missing.removeAll { i in
                if ids.frontends[wanted[i].key] != nil { return true }  // a key given twice
                guard let id = byKey[wanted[i].key], id != 0, taken.insert(id) else { return false }
                ids.frontends[wanted[i].key] = id
                ids.ordered[i] = id
                return true
            }
        }
        if !missing.isEmpty {
            // New ones: the lowest id nobody has; when none is left, one only a stale frontend
            // has (it is pruned by this plan). The validator keeps wanted frontends within the ids.
            var used = taken
            for id in observed.revnat.keys { _ = used.insert(id) }
            for master in observed.masters.values { _ = used.insert(master.id) }
            var stale: [FrontendID]?  // listed when the ids run out
            var next = taken.ids.lowerBound
            for i in missing {
                while next < taken.ids.upperBound, used.contains(next) { next += 1 }
                let id: FrontendID
                if next < taken.ids.upperBound {
                    id = next
                } else if let reused = Self.popStale(&stale, used: used, taken: taken) {
                    id = reused
                } else {
                    break  // more frontends than ids: refused by validation before any plan
                }
                // One lookup: a key given twice keeps its first place's id (and this one is
                // not used).
                if let first = ids.frontends.updateValue(id, forKey: wanted[i].key) {
                    ids.frontends[wanted[i].key] = first
                    if id != next { stale!.append(id) }
                    continue
                }
                if id == next { next += 1 }
                ids.ordered[i] = id
                _ = taken.insert(id)
                _ = used.insert(id)
            }
        }
        // A key given twice has its first place's id.
        for i in ids.ordered.indices where ids.ordered[i] == 0 { ids.ordered[i] = ids.frontends[wanted[i].key] ?? 0 }
        // Backends: by address, port and protocol, the id a frontend's slot has for it first (a
        // converged node needs nothing else); new ones take the lowest id the maps do not have
        // (ids handed out here are all below the next one): never one a backend still has, so
        // every frontend changes to backends written next to its old ones. They stay within the
        // backends array (`capacity.backendIDs`, twice the backends a node may have): at most
        // `entries` backends are held while at most `maxBackends` are wanted.
        let backendCount = wanted.reduce(0) { $0 + $1.backends.count + $1.retained.count }
        ids.backends.reserveCapacity(backendCount)
        ids.slotIDs.reserveCapacity(wanted.reduce(0) { $0 + $1.backends.count })
        ids.slotStarts.reserveCapacity(wanted.count + 1)
        var backendByValue: [BackendAddress: UInt32]?  // built at the first backend no slot names
        var nextBackend: UInt32 = capacity.backendIDs.lowerBound
        func backendID(_ b: BackendAddress, _ id: inout UInt32?, slot: UInt32?) -> UInt32 {
            if let id { return id }
            if let slot, observed.backends[slot] == b {
                id = slot
                return slot
            }
            if observed.backends.isEmpty {  // (a node without services: no lookups)
                id = nextBackend
                nextBackend += 1
                return id!
            }
            if backendByValue == nil {
                var byValue: [BackendAddress: UInt32] = [:]
                byValue.reserveCapacity(observed.backends.count)
                for (id, b) in observed.backends { byValue[b] = min(id, byValue[b] ?? id) }  // lowest on duplicates
                backendByValue = byValue
            }
            if let existing = backendByValue![b] {
                id = existing
                return existing
            }
            while observed.backends[nextBackend] != nil { nextBackend += 1 }
            id = nextBackend
            nextBackend += 1
            return id!
        }
        for f in wanted.indices {  // (by index: a copy of each frontend cost as much as its ids)
            let observedSlots = observed.slots.isEmpty ? nil : observed.slots[wanted[f].key]
            for (i, b) in wanted[f].backends.enumerated() {
                ids.slotIDs.append(backendID(b, &ids.backends[b], slot: observedSlots?[UInt16(i + 1)]))
            }
            for b in wanted[f].retained { _ = backendID(b, &ids.backends[b], slot: nil) }
            ids.slotStarts.append(UInt32(ids.slotIDs.count))
        }
        return ids
    }

    /// The lowest id only a stale frontend has (it is pruned by the plan), listed at first use.
    private static func popStale(
        _ stale: inout [FrontendID]?, used: FrontendIDSet, taken: FrontendIDSet
    )
        -> FrontendID?
    {
        if stale == nil { stale = taken.ids.filter { used.contains($0) && !taken.contains($0) }.reversed() }
        return stale!.popLast()
    }
}

extension ServiceIDs {
    /// The ids an image of the service maps was made with.
    init(_ image: ServiceMapsImage) {
        self.init(
            frontends: image.frontendIDs, backends: image.backendIDs, ordered: image.ordered, slotIDs: image.slotIDs,
            slotStarts: image.slotStarts)
    }
}

extension ServiceMapsImage {
    /// What the maps hold once `frontends` are written with `ids`.
    init(_ frontends: [DesiredFrontend], ids: ServiceIDs) {
        self.init(
            frontends, frontendIDs: ids.frontends, backendIDs: ids.backends, ordered: ids.ordered,
            slotIDs: ids.slotIDs, slotStarts: ids.slotStarts)
    }
}

/// Which frontend ids are in use, a bit each (hashing tens of thousands of ids cost more than
/// the rest of the plan).
struct FrontendIDSet {
    /// The ids apply hands out (`ServiceMapCapacity.frontendIDs`); others are never in.
    let ids: Range<FrontendID>
    private var words: [UInt64]

    init(_ ids: Range<FrontendID>) {
        self.ids = ids
        words = [UInt64](repeating: 0, count: (Int(ids.upperBound) + 63) / 64)
    }

    func contains(_ id: FrontendID) -> Bool {
        ids.contains(id) && words[Int(id) >> 6] & (1 << UInt64(id & 63)) != 0
    }

    /// False when it was already in, or is not one of `ids` (it cannot be kept).
    mutating func insert(_ id: FrontendID) -> Bool {
        guard ids.contains(id) else { return false }
        let bit: UInt64 = 1 << UInt64(id & 63)
        guard words[Int(id) >> 6] & bit == 0 else { return false }
        words[Int(id) >> 6] |= bit
        return true
    }
}
