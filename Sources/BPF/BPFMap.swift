import CBPF

#if canImport(Glibc)
    import Glibc
#endif

/// Typed access to a BPF map by fd (bpf(2) through libbpf's low-level calls).
public final class BPFMap<Key: BitwiseCopyable, Value: BitwiseCopyable>: @unchecked Sendable {
    public let fd: Int32
    public let name: String
    let perCPU: Bool
    private let owned: Bool

    init(fd: Int32, name: String, perCPU: Bool, owned: Bool) {
        self.fd = fd
        self.name = name
        self.perCPU = perCPU
        self.owned = owned
    }

    deinit { if owned { close(fd) } }

    /// The map pinned at `path` (bpffs), or nil when nothing is pinned there. Throws when the
    /// pinned map's key or value size differs from `Key`/`Value` (a map of another layout,
    /// e.g. pinned by an older build) or `perCPU` does not match its type.
    public static func pinned(at path: String, perCPU: Bool = false) throws -> BPFMap? {
        let fd = bpf_obj_get(path)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw BPFError(errno, "opening pinned map \(path)")
        }
        do {
            let info = try BPFMapInfo(fd: fd, what: path)
            try info.check(key: Key.self, value: Value.self, perCPU: perCPU, what: "pinned map \(path)")
        } catch {
            close(fd)
            throw error
        }
        return BPFMap(fd: fd, name: path, perCPU: perCPU, owned: true)
    }

    /// Creates or replaces `key`'s value.
    public func update(_ key: Key, _ value: Value) throws {
        guard !perCPU else { throw BPFError(EINVAL, "map \(name) is per-CPU: one value per CPU, not one") }
        var k = key
        var v = value
        let rc = bpf_map_update_elem(fd, &k, &v, UInt64(BPF_ANY))
        guard rc == 0 else { throw updateFailure(rc < -1 ? -rc : errno, "updating map \(name)") }
    }

    /// An update's failure, in words: E2BIG from a hash map means it is full (a new key past its
    /// `max_entries`), which strerror's "Argument list too long" does not say.
    func updateFailure(_ error: Int32, _ context: String) -> BPFError {
        guard error == E2BIG, let info = try? BPFMapInfo(fd: fd, what: name) else { return BPFError(error, context) }
        return BPFError(error, "\(context): the map is full (it holds at most \(info.maxEntries) entries)")
    }

    public func lookup(_ key: Key) throws -> Value? {
        guard !perCPU else { throw BPFError(EINVAL, "map \(name) is per-CPU: use sum(_:)") }
        var k = key
        let v = UnsafeMutablePointer<Value>.allocate(capacity: 1)
        defer { v.deallocate() }
        let rc = bpf_map_lookup_elem(fd, &k, v)
        if rc != 0 {
            if errno == ENOENT || rc == -ENOENT { return nil }
            throw BPFError.libbpf(rc, "looking up in map \(name)")
        }
        return v.pointee
    }

    /// Removes `key`; true when it was there.
    @discardableResult
    public func delete(_ key: Key) throws -> Bool {
        var k = key
        let rc = bpf_map_delete_elem(fd, &k)
        if rc != 0 {
            if errno == ENOENT || rc == -ENOENT { return false }
            throw BPFError.libbpf(rc, "deleting from map \(name)")
        }
        return true
    }

    /// Every key, by walking the map (a map changed meanwhile may show a key twice or not at all).
    public func keys() throws -> [Key] {
        var result: [Key] = []
        let next = UnsafeMutablePointer<Key>.allocate(capacity: 1)
        defer { next.deallocate() }
        var rc = bpf_map_get_next_key(fd, nil, next)
        while rc == 0 {
            result.append(next.pointee)
            var current = next.pointee
            rc = bpf_map_get_next_key(fd, &current, next)
            if result.count > 10_000_000 { break }
        }
        return result
    }
}

extension BPFMap where Value == UInt64 {
    /// For per-CPU counters: the sum over all CPUs.
    public func sum(_ key: Key) throws -> UInt64 {
        let cpus = Int(libbpf_num_possible_cpus())
        var k = key
        var values = [UInt64](repeating: 0, count: max(1, perCPU ? cpus : 1))
        let rc = bpf_map_lookup_elem(fd, &k, &values)
        guard rc == 0 else { throw BPFError.libbpf(rc, "reading counters in map \(name)") }
        return values.reduce(0, +)
    }
}

/// What the kernel says about a map (bpf_map_info).
public struct BPFMapInfo: Sendable, Equatable {
    public var type: UInt32
    public var keySize: UInt32
    public var valueSize: UInt32
    public var maxEntries: UInt32
    /// `map_flags` (BPF_F_NO_PREALLOC, BPF_F_MMAPABLE, ...).
    public var flags: UInt32
    public var id: UInt32
    public var name: String

    public var isPerCPU: Bool {
        [BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH].map(\.rawValue).contains(
            type)
    }

    /// The map behind `fd` (any map fd).
    public init(fd: Int32, what: String) throws {
        let info = try objectInfo(bpf_map_info(), fd: fd, what: "map info of \(what)")
        type = info.type
        keySize = info.key_size
        valueSize = info.value_size
        maxEntries = info.max_entries
        flags = info.map_flags
        id = info.id
        name = infoName(info.name)
    }

    /// Throws a clear error unless the map's layout fits `Key`/`Value` (for per-CPU maps the
    /// value size is the size of one CPU's value).
    func check<Key, Value>(key: Key.Type, value: Value.Type, perCPU: Bool, what: String) throws {
        var problems: [String] = []
        if keySize != MemoryLayout<Key>.size {
            problems.append("key size \(keySize) B, \(Key.self) has \(MemoryLayout<Key>.size) B")
        }
        if valueSize != MemoryLayout<Value>.size {
            problems.append("value size \(valueSize) B, \(Value.self) has \(MemoryLayout<Value>.size) B")
        }
        if isPerCPU != perCPU {
            problems.append(isPerCPU ? "it is per-CPU (type \(type))" : "it is not per-CPU (type \(type))")
        }
        guard problems.isEmpty else {
            throw BPFError(
                EINVAL,
                "\(what) does not have the expected layout: \(problems.joined(separator: "; ")) (pinned by another build? re-apply to migrate it)"
            )
        }
    }
}

extension BPFMapInfo {
    /// Identity and size of the map pinned at `path`, read without knowing its layout: its id
    /// (a map replaced by another has a new one) and how many keys it holds (a mmapable array:
    /// how many entries are not all zeros). nil when nothing is pinned there.
    public static func census(pinnedAt path: String) throws -> (id: UInt32, entries: Int)? {
        guard let handle = try BPFPin.open(path) else { return nil }
        let info = try BPFMapInfo(fd: handle.fd, what: path)
        if MappedArrayRegion.canMap(info) {
            // An array holds every index: its entries are those that are not all zeros (a mmapable
            // one is read in place, 4 MiB in about a millisecond).
            let region = try withExtendedLifetime(handle) {
                try MappedArrayRegion(fd: handle.fd, info: info, what: path, writable: false)
            }
            var count = 0
            region.forEachNonZero { _ in count += 1 }
            return (info.id, count)
        }
        if let count = try batchCount(handle.fd, info, path) { return (info.id, count) }
        var current = [UInt8](repeating: 0, count: Int(info.keySize))
        var next = current
        var count = 0
        var rc = bpf_map_get_next_key(handle.fd, nil, &next)
        while rc == 0 {
            count += 1
            swap(&current, &next)
            rc = bpf_map_get_next_key(handle.fd, &current, &next)
        }
        guard errno == ENOENT || rc == -ENOENT else { throw BPFError(errno, "counting the entries of \(path)") }
        return (info.id, count)
    }

    /// The entries of a map counted in batches (BPF_MAP_LOOKUP_BATCH, 4 096 a call: a fifth of
    /// the time of a key walk, which an audit of 800 000 entries a second made a third of a
    /// core); nil where the kernel has no batch lookup for the map's type.
    private static func batchCount(_ fd: Int32, _ info: BPFMapInfo, _ path: String) throws -> Int? {
        guard !info.isPerCPU else { return nil }  // (a value per CPU: walked)
        var total = 0
        let read = try lookupBatches(
            fd, keySize: Int(info.keySize), valueSize: Int(info.valueSize), batch: 4096,
            what: "counting the entries of \(path)"
        ) { _, _, count in
            total += count
            return true
        }
        return read ? total : nil
    }

    /// Reads a map's entries in batches of `batch` (BPF_MAP_LOOKUP_BATCH), handing each to
    /// `body` as raw keys, values and their count; `body` returns false to read no further.
    /// False, before any batch, where the kernel has no batch lookup for the map's type.
    static func lookupBatches(
        _ fd: Int32, keySize: Int, valueSize: Int, batch: Int, what: @autoclosure () -> String,
        _ body: (UnsafeRawPointer, UnsafeRawPointer, Int) throws -> Bool
    ) throws -> Bool {
        let keys = UnsafeMutableRawPointer.allocate(byteCount: batch * keySize, alignment: 8)
        let values = UnsafeMutableRawPointer.allocate(byteCount: batch * valueSize, alignment: 8)
        let cursorSize = max(keySize, 8)  // opaque: a bucket index for hash maps, else a key
        let inBatch = UnsafeMutableRawPointer.allocate(byteCount: cursorSize, alignment: 8)
        let outBatch = UnsafeMutableRawPointer.allocate(byteCount: cursorSize, alignment: 8)
        defer { [keys, values, inBatch, outBatch].forEach { $0.deallocate() } }
        var first = true
        while true {
            var count = UInt32(batch)
            var opts = bpf_map_batch_opts()
            opts.sz = MemoryLayout<bpf_map_batch_opts>.size
            let rc = bpf_map_lookup_batch(fd, first ? nil : inBatch, outBatch, keys, values, &count, &opts)
            let error = rc == 0 ? 0 : errno
            if rc != 0 && error != ENOENT {
                if first && BPFMap<UInt8, UInt8>.unsupported(error) { return false }
                throw BPFError(error, what())
            }
            guard try body(keys, values, Int(count)) else { return true }
            if rc != 0 { return true }  // ENOENT: that was the last batch
            inBatch.copyMemory(from: outBatch, byteCount: cursorSize)
            first = false
        }
    }
}
