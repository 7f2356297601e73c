/// Ids of frontends (u16, the reverse-NAT index) and backends (u32): read back from the maps
/// so they stay stable across applies and restarts; new ones take the lowest free id.
struct ServiceIDs: Sendable, Equatable {
    var frontends: [FrontendKey: UInt16] = [:]
    var backends: [BackendAddress: UInt32] = [:]

    static func assign(_ wanted: [DesiredFrontend], observed: ObservedServices) -> ServiceIDs {
        var ids = ServiceIDs()
        ids.frontends.reserveCapacity(wanted.count)
        ids.backends.reserveCapacity(wanted.count * 2)
        // Frontends: the id in slot 0, else the id its reverse-NAT entry has.
        var byKey: [FrontendKey: UInt16] = [:]
        byKey.reserveCapacity(observed.revnat.count)
        for (id, key) in observed.revnat { byKey[key] = min(id, byKey[key] ?? id) }  // lowest id on duplicates
        var used = Set(observed.revnat.keys).union(observed.masters.values.map(\.id))
        var taken: Set<UInt16> = []
        // Ids in slot 0 first, then those only a reverse-NAT entry has (a live frontend keeps
        // its id even when an inconsistent map has another frontend's revnat at it).
        for f in wanted {
            if let id = observed.masters[f.key]?.id, id != 0, taken.insert(id).inserted { ids.frontends[f.key] = id }
        }
        for f in wanted where ids.frontends[f.key] == nil {
            if let id = byKey[f.key], id != 0, taken.insert(id).inserted { ids.frontends[f.key] = id }
        }
        // New ones: the lowest id nobody has; when none is left, one only a stale frontend has
        // (it is pruned by this plan). The validator keeps wanted frontends below 65535.
        var next: UInt32 = 1
        var stale = used.subtracting(taken).sorted()[...]
        for f in wanted where ids.frontends[f.key] == nil {
            while next <= UInt32(UInt16.max), used.contains(UInt16(next)) || taken.contains(UInt16(next)) { next += 1 }
            let id: UInt16
            if next <= UInt32(UInt16.max) {
                id = UInt16(next)
                next += 1
            } else if let reused = stale.popFirst() {
                id = reused
            } else {
                break  // more frontends than ids: refused by validation before any plan
            }
            ids.frontends[f.key] = id
            taken.insert(id)
            used.insert(id)
        }
        // Backends: by address, port and protocol.
        var backendByValue: [BackendAddress: UInt32] = [:]
        backendByValue.reserveCapacity(observed.backends.count)
        for (id, b) in observed.backends { backendByValue[b] = min(id, backendByValue[b] ?? id) }
        var usedBackends = Set(observed.backends.keys)
        var nextBackend: UInt32 = 1
        for f in wanted {
            for b in f.backends + f.retained where ids.backends[b] == nil {
                if let id = backendByValue[b] {
                    ids.backends[b] = id
                } else {
                    while usedBackends.contains(nextBackend) { nextBackend += 1 }
                    ids.backends[b] = nextBackend
                    usedBackends.insert(nextBackend)
                }
            }
        }
        return ids
    }
}
