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
        for f in wanted {
            if let id = observed.masters[f.key]?.id ?? byKey[f.key], id != 0, taken.insert(id).inserted { ids.frontends[f.key] = id }
        }
        var next: UInt16 = 1
        for f in wanted where ids.frontends[f.key] == nil {
            while used.contains(next) || taken.contains(next) { next &+= 1 }
            ids.frontends[f.key] = next
            used.insert(next)
        }
        // Backends: by address, port and protocol.
        var backendByValue: [BackendAddress: UInt32] = [:]
        backendByValue.reserveCapacity(observed.backends.count)
        for (id, b) in observed.backends { backendByValue[b] = min(id, backendByValue[b] ?? id) }
        var usedBackends = Set(observed.backends.keys)
        var nextBackend: UInt32 = 1
        for f in wanted {
            for b in f.backends where ids.backends[b] == nil {
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
