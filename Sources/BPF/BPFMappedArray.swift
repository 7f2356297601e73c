import CBPF

#if canImport(Glibc)
    import Glibc
#endif

/// An array map made with `BPF_F_MMAPABLE`, its values mapped into this process: read and
/// written in place, without a system call per entry (the kernel's own copy: programs see a
/// write at once). Writing 300 000 backends through `BPF_MAP_UPDATE_BATCH` into a hash map took
/// a quarter of a second; through the mapping, the time to touch 2.4 MB.
///
/// A value of 8 bytes is written with a single aligned 8-byte store: a program that reads it
/// with one load sees the old value or the new one (one that reads its fields one by one may
/// see both, so a caller changes no entry a program may be reading). An array has no absent
/// entries: what "absent" is (a zero field) is the caller's convention.
public final class BPFMappedArray<Value: BitwiseCopyable>: @unchecked Sendable {
    public let name: String
    /// The array's entries (its `max_entries`): indexes 0..<count.
    public var count: Int { region.count }
    private let region: MappedArrayRegion

    /// Maps the array behind `fd` (kept open by the mapping, not by this type), for reading
    /// only unless `writable`. Throws unless it is a mmapable array of 4-byte keys and `Value`'s
    /// size.
    public init(fd: Int32, name: String, writable: Bool = true) throws {
        let info = try BPFMapInfo(fd: fd, what: "map \(name)")
        try info.check(key: UInt32.self, value: Value.self, perCPU: false, what: "map \(name)")
        self.region = try MappedArrayRegion(fd: fd, info: info, what: "map \(name)", writable: writable)
        self.name = name
        self.writable = writable
    }

    /// The array pinned at `path`, mapped (for reading only unless `writable`); nil when nothing
    /// is pinned there.
    public static func pinned(at path: String, writable: Bool = true) throws -> BPFMappedArray? {
        guard let handle = try BPFPin.open(path) else { return nil }
        return try withExtendedLifetime(handle) { try BPFMappedArray(fd: handle.fd, name: path, writable: writable) }
    }

    /// Whether `store` may write (a mapping made for reading only refuses).
    public let writable: Bool

    /// The indexes of the entries that are not all zeros (an array's "absent" entries are
    /// zeros), in order.
    public func nonZeroIndices() -> [Int] {
        var result: [Int] = []
        region.forEachNonZero { result.append($0) }
        return result
    }

    /// The value at `index` (0..<count).
    public subscript(index: Int) -> Value {
        precondition(index >= 0 && index < count, "index \(index) beyond map \(name)'s \(count) entries")
        return region.base.load(fromByteOffset: index * region.stride, as: Value.self)
    }

    /// Writes `value` at `index`; throws when the array has no such entry.
    public func store(_ value: Value, at index: UInt32) throws {
        guard writable else {
            throw BPFError(EPERM, "writing entry \(index) of map \(name): it is mapped for reading only")
        }
        guard Int(index) < count else {
            throw BPFError(E2BIG, "writing entry \(index) of map \(name): it has \(count) entries (0..<\(count))")
        }
        let offset = Int(index) * region.stride
        if MemoryLayout<Value>.size == 8 {
            // One store: a program reading the entry meanwhile sees the old or the new value.
            let word = withUnsafeBytes(of: value) { $0.loadUnaligned(as: UInt64.self) }
            region.base.storeBytes(of: word, toByteOffset: offset, as: UInt64.self)
        } else {
            region.base.storeBytes(of: value, toByteOffset: offset, as: Value.self)
        }
    }
}

/// The mapped memory of a mmapable array: `stride` bytes an entry (the value size rounded up to
/// 8, as the kernel lays it out), unmapped when this goes.
final class MappedArrayRegion: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let stride: Int
    let count: Int
    private let length: Int

    /// Whether the map `info` describes can be mapped (an array made with BPF_F_MMAPABLE).
    static func canMap(_ info: BPFMapInfo) -> Bool {
        info.type == BPF_MAP_TYPE_ARRAY.rawValue && info.flags & UInt32(BPF_F_MMAPABLE) != 0
    }

    init(fd: Int32, info: BPFMapInfo, what: @autoclosure () -> String, writable: Bool) throws {
        guard Self.canMap(info) else {
            throw BPFError(
                EINVAL,
                "\(what()) is not a mmapable array (type \(info.type), flags \(info.flags)): pinned by another build? re-apply to migrate it"
            )
        }
        let stride = (Int(info.valueSize) + 7) & ~7
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let length = max(page, (stride * Int(info.maxEntries) + page - 1) / page * page)
        let protection = writable ? (PROT_READ | PROT_WRITE) : PROT_READ
        guard let base = mmap(nil, length, protection, MAP_SHARED, fd, 0), base != MAP_FAILED else {
            throw BPFError(errno, "mapping \(what()) into memory")
        }
        (self.base, self.stride, self.count, self.length) = (base, stride, Int(info.maxEntries), length)
    }

    /// Calls `body` with the index of every entry that holds anything but zero bytes, in order.
    func forEachNonZero(_ body: (Int) -> Void) {
        let words = stride / 8
        for i in 0..<count {
            var bits: UInt64 = 0
            for w in 0..<words { bits |= base.load(fromByteOffset: i * stride + w * 8, as: UInt64.self) }
            if bits != 0 { body(i) }
        }
    }

    deinit { munmap(base, length) }
}
