import CBPF

#if canImport(Glibc)
    import Glibc
#endif

extension BPFMap {
    /// Every entry, read in batches of `batchSize` (BPF_MAP_LOOKUP_BATCH: one syscall per
    /// batch instead of two per entry); falls back to walking the keys where the kernel has
    /// no batch lookup for the map type. A map changed meanwhile may show an entry twice.
    public func entries(batchSize: Int = 4096) throws -> [(key: Key, value: Value)] {
        let (keys, values) = try contents(batchSize: batchSize)
        return Array(zip(keys, values).lazy.map { (key: $0, value: $1) })
    }

    /// Every entry as two arrays, `keys[i]` holding `values[i]`: what `entries` reads, copied
    /// out of each batch whole (a caller reading tens of thousands of entries walks them
    /// with its own types, instead of this generic code touching each one).
    public func contents(batchSize: Int = 4096) throws -> (keys: [Key], values: [Value]) {
        var (resultKeys, resultValues): ([Key], [Value]) = ([], [])
        try forEachBatch(batchSize: batchSize) { keys, values in
            resultKeys.append(contentsOf: keys)
            resultValues.append(contentsOf: values)
            return true
        }
        return (resultKeys, resultValues)
    }

    /// Every entry, a batch at a time: `body` gets the batch's keys and values (`keys[i]` holds
    /// `values[i]`) where the kernel left them, valid during the call only, and returns false to
    /// read no further. A caller that only checks the entries copies none (hundreds of
    /// thousands of entries copied out first cost more than the check). Where the kernel has no
    /// batch lookup for the map type, the walked entries are one batch.
    public func forEachBatch(
        batchSize: Int = 4096, _ body: (UnsafeBufferPointer<Key>, UnsafeBufferPointer<Value>) throws -> Bool
    ) throws {
        guard !perCPU else { throw BPFError(EINVAL, "map \(name) is per-CPU: use sum(_:)") }
        let read = try BPFMapInfo.lookupBatches(
            fd, keySize: MemoryLayout<Key>.stride, valueSize: MemoryLayout<Value>.stride, batch: batchSize,
            what: "reading map \(name)"
        ) { keys, values, count in
            try body(
                UnsafeBufferPointer(start: keys.assumingMemoryBound(to: Key.self), count: count),
                UnsafeBufferPointer(start: values.assumingMemoryBound(to: Value.self), count: count))
        }
        if !read {
            let walked = try walk()
            let (keys, values) = (walked.map(\.key), walked.map(\.value))
            _ = try keys.withUnsafeBufferPointer { k in try values.withUnsafeBufferPointer { v in try body(k, v) } }
        }
    }

    /// Errors meaning "no batch operation here" (the kernel's internal ENOTSUPP is 524).
    static func unsupported(_ error: Int32) -> Bool {
        error == EINVAL || error == ENOTSUP || error == EOPNOTSUPP || error == 524
    }

    private func walk() throws -> [(key: Key, value: Value)] {
        try keys().compactMap { k in try lookup(k).map { (k, $0) } }
    }

    /// Creates or replaces many entries with BPF_MAP_UPDATE_BATCH (one system call per
    /// `batchSize` entries); falls back to one update per entry where the kernel has no
    /// batch update for the map type.
    public func update(keys: [Key], values: [Value], batchSize: Int = 8192) throws {
        precondition(keys.count == values.count)
        guard !perCPU else { throw BPFError(EINVAL, "map \(name) is per-CPU: one value per CPU, not one") }
        try forEachBatch(keys.count, batchSize) { range, count, opts in
            let rc =
                keys[range].withContiguousStorageIfAvailable { k in
                    values[range].withContiguousStorageIfAvailable { v in
                        bpf_map_update_batch(fd, k.baseAddress, v.baseAddress, &count, &opts)
                    } ?? -EINVAL
                } ?? -EINVAL
            if rc != 0 {
                let error = errno
                // Refused as a whole (count says nothing then): one update per entry; updates
                // may repeat.
                guard Self.unsupported(error) || rc == -EINVAL else {
                    throw updateFailure(error, "updating map \(name) (batch of \(range.count), \(count) written)")
                }
                for i in range { try update(keys[i], values[i]) }
            }
        }
    }

    /// Removes many entries with BPF_MAP_DELETE_BATCH; entries already gone are fine (the
    /// rest of a batch stopped by one is removed one by one).
    public func delete(keys: [Key], batchSize: Int = 8192) throws {
        try forEachBatch(keys.count, batchSize) { range, count, opts in
            let rc =
                keys[range].withContiguousStorageIfAvailable { k in
                    bpf_map_delete_batch(fd, k.baseAddress, &count, &opts)
                } ?? -EINVAL
            if rc != 0 {
                let error = errno
                if error == ENOENT {
                    // Stopped at an entry already gone: `count` were deleted before it.
                    for i in (range.lowerBound + min(Int(count), range.count))..<range.upperBound {
                        try delete(keys[i])
                    }
                } else if Self.unsupported(error) || rc == -EINVAL {
                    for i in range { try delete(keys[i]) }  // an entry already gone is fine
                } else {
                    throw BPFError(error, "deleting from map \(name) (batch of \(range.count), \(count) deleted)")
                }
            }
        }
    }

    /// Calls `body` for each run of at most `batchSize` of `total` entries, with the count and
    /// options a batch call takes (the count set to the run's length).
    private func forEachBatch(
        _ total: Int, _ batchSize: Int, _ body: (Range<Int>, inout UInt32, inout bpf_map_batch_opts) throws -> Void
    ) rethrows {
        var start = 0
        while start < total {
            let end = min(total, start + batchSize)
            var count = UInt32(end - start)
            var opts = bpf_map_batch_opts()
            opts.sz = MemoryLayout<bpf_map_batch_opts>.size
            try body(start..<end, &count, &opts)
            start = end
        }
    }
}
