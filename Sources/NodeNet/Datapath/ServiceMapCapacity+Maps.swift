import BPF

extension ServiceMapCapacity {
    /// The frontend ids apply hands out (0 is none): as many as the reverse-NAT map holds.
    var frontendIDs: Range<FrontendID> { 1..<frontendMapEntries }

    /// The backend ids apply hands out (0 is none): the indexes of the backends array, twice
    /// `entries` (new backends take ids none of the old ones has, and old and new may be held
    /// together up to `entries`).
    var backendIDs: Range<UInt32> { 1..<backendMapEntries }

    /// Entries of the backends array.
    var backendMapEntries: UInt32 { 2 * entries }

    /// The maps this sizes, with their entries (the others keep what bpf/lib/*.h declares).
    var maxEntries: [BPFFSLayout.Map: UInt32] {
        [
            .services: entries, .backends: backendMapEntries, .revnat: frontendMapEntries,
            .maglevIndex: frontendMapEntries,
        ]
    }

    /// Sizes the maps of an object, before it is loaded (libbpf reuses a pinned map only when
    /// its size is the one asked for; every object sharing a map must ask alike).
    func size(_ object: BPFObject) throws {
        for (map, entries) in maxEntries { try object.setMaxEntries(entries, ofMap: map.rawValue) }
    }
}
