import CBPF

#if canImport(Glibc)
    import Glibc
    import Foundation
#endif

/// A BPF object (ELF) opened from memory with libbpf: configure it, pin its maps, load it,
/// then take its programs and maps. Closing it (deinit) drops our references; programs
/// attached to tc hooks and pinned maps live on.
public final class BPFObject: @unchecked Sendable {
    private let handle: OpaquePointer
    private let bytes: [UInt8]
    public let name: String
    public private(set) var isLoaded = false

    /// An object compiled from bpf/NAME.c into this binary at build time. Maps declared
    /// with pinning by name are pinned (or reused) under `pinRoot`, a bpffs directory.
    public convenience init(embedded name: String, pinRoot: String? = nil) throws {
        guard let b64 = EmbeddedBPFObjects.base64[name], let data = Data(base64Encoded: b64) else {
            throw BPFError(
                ENOENT,
                "no embedded BPF object \(name) (have: \(EmbeddedBPFObjects.base64.keys.sorted().joined(separator: ", ")))"
            )
        }
        try self.init(bytes: [UInt8](data), name: name, pinRoot: pinRoot)
    }

    /// 8 hex digits identifying an embedded object's build: part of attached filters' names,
    /// so an upgraded program is recognised without loading anything.
    public static func digest(embedded name: String) -> String? { digests[name] }

    /// Computed once per process: plans name programs by digest many times.
    private static let digests: [String: String] = EmbeddedBPFObjects.base64.compactMapValues { computeDigest($0) }

    private static func computeDigest(_ b64: String) -> String? {
        var hash: UInt32 = 0x811C_9DC5
        for byte in b64.utf8 { hash = (hash ^ UInt32(byte)) &* 0x0100_0193 }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 8 - hex.count) + hex
    }

    public init(bytes: [UInt8], name: String, pinRoot: String? = nil) throws {
        self.bytes = bytes
        self.name = name
        var opts = bpf_object_open_opts()
        opts.sz = MemoryLayout<bpf_object_open_opts>.size
        let handle: OpaquePointer? = name.withCString { cname in
            opts.object_name = cname
            return (pinRoot ?? "").withCString { root in
                if pinRoot != nil { opts.pin_root_path = root }
                return bytes.withUnsafeBytes { bpf_object__open_mem($0.baseAddress, $0.count, &opts) }
            }
        }
        guard let handle else { throw BPFError(errno, "opening BPF object \(name)") }
        self.handle = handle
        if pinRoot == nil {
            // No pin root: pin nothing (libbpf would otherwise pin "by name" maps in the root
            // of /sys/fs/bpf, outside any directory of ours).
            for map in maps { _ = bpf_map__set_pin_path(map, nil) }
        }
    }

    deinit { bpf_object__close(handle) }

    var handleForShapes: OpaquePointer { handle }

    /// All maps of the object.
    private var maps: [OpaquePointer] {
        var result: [OpaquePointer] = []
        var map = bpf_object__next_map(handle, nil)
        while let m = map {
            result.append(m)
            map = bpf_object__next_map(handle, m)
        }
        return result
    }

    /// Sets the object's read-only configuration (its `.rodata`: one `const volatile`
    /// struct) before load. `value` must have exactly the C struct's layout.
    public func setConfiguration<T: BitwiseCopyable>(_ value: T) throws {
        guard !isLoaded else { throw BPFError(EBUSY, "configuring \(name) after load") }
        guard let rodata = maps.first(where: { String(cString: bpf_map__name($0)).hasSuffix(".rodata") }) else {
            throw BPFError(ENOENT, "\(name) has no .rodata to configure")
        }
        var copy = value
        let rc = withUnsafeBytes(of: &copy) { bpf_map__set_initial_value(rodata, $0.baseAddress, $0.count) }
        guard rc == 0 else { throw BPFError.libbpf(rc, "setting the configuration of \(name)") }
    }

    /// Sizes a map before load (its declared `max_entries` otherwise). False when the object
    /// declares no such map. A pinned map is reused only when its size is the same.
    @discardableResult
    public func setMaxEntries(_ entries: UInt32, ofMap mapName: String) throws -> Bool {
        guard !isLoaded else { throw BPFError(EBUSY, "sizing map \(mapName) of \(name) after load") }
        guard let m = bpf_object__find_map_by_name(handle, mapName) else { return false }
        let rc = bpf_map__set_max_entries(m, entries)
        guard rc == 0 else { throw BPFError.libbpf(rc, "sizing map \(mapName) of \(name) to \(entries) entries") }
        return true
    }

    /// Leaves a program out of the load (one the kernel cannot verify, e.g. a build for a newer kernel).
    public func setAutoload(program: String, _ load: Bool) throws {
        guard !isLoaded else { throw BPFError(EBUSY, "choosing programs of \(name) after load") }
        guard let p = bpf_object__find_program_by_name(handle, program) else {
            throw BPFError(ENOENT, "no program \(program) in \(name)")
        }
        let rc = bpf_program__set_autoload(p, load)
        guard rc == 0 else { throw BPFError.libbpf(rc, "choosing program \(program) of \(name)") }
    }

    /// Loads (and verifies) the programs and creates or reuses the maps.
    public func load() throws {
        let rc = bpf_object__load(handle)
        guard rc == 0 else { throw BPFError.libbpf(rc, "loading BPF object \(name) (the verifier's log is on stderr)") }
        isLoaded = true
    }

    /// The file descriptor of a loaded program.
    public func programFD(named program: String) throws -> Int32 {
        guard isLoaded else { throw BPFError(EINVAL, "\(name) is not loaded") }
        guard let p = bpf_object__find_program_by_name(handle, program) else {
            throw BPFError(ENOENT, "no program \(program) in \(name)")
        }
        let fd = bpf_program__fd(p)
        guard fd >= 0 else { throw BPFError.libbpf(fd, "program \(program) of \(name)") }
        return fd
    }

    /// A typed view of a loaded map. `Key` and `Value` must match the C layouts (bpf/lib/maps.h).
    public func map<Key: BitwiseCopyable, Value: BitwiseCopyable>(
        named mapName: String, key: Key.Type, value: Value.Type
    ) throws -> BPFMap<Key, Value> {
        guard isLoaded else { throw BPFError(EINVAL, "\(name) is not loaded") }
        guard let m = bpf_object__find_map_by_name(handle, mapName) else {
            throw BPFError(ENOENT, "no map \(mapName) in \(name)")
        }
        guard bpf_map__key_size(m) == MemoryLayout<Key>.size,
            bpf_map__value_size(m) == MemoryLayout<Value>.size || bpf_map__type(m) == BPF_MAP_TYPE_PERCPU_ARRAY
        else {
            throw BPFError(
                EINVAL,
                "map \(mapName): key/value sizes \(bpf_map__key_size(m))/\(bpf_map__value_size(m)) do not match \(Key.self)/\(Value.self)"
            )
        }
        return BPFMap(
            fd: bpf_map__fd(m), name: mapName,
            perCPU: bpf_map__type(m) == BPF_MAP_TYPE_PERCPU_ARRAY || bpf_map__type(m) == BPF_MAP_TYPE_PERCPU_HASH,
            owned: false)
    }
}

/// The shape of a map: what must match for a pinned map to be reused.
public struct BPFMapShape: Sendable, Equatable, CustomStringConvertible {
    public var type: UInt32
    public var keySize: UInt32
    public var valueSize: UInt32
    public var maxEntries: UInt32

    public var description: String { "type \(type), key \(keySize) B, value \(valueSize) B, \(maxEntries) entries" }

    /// The shapes of the maps an embedded object declares (opened, not loaded).
    public static func declared(inEmbedded name: String) throws -> [String: BPFMapShape] {
        let object = try BPFObject(embedded: name)
        return object.declaredShapes()
    }

    /// The shape of the map pinned at `path`, or nil when nothing is pinned there.
    public static func pinned(at path: String) throws -> BPFMapShape? {
        let fd = bpf_obj_get(path)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw BPFError(errno, "opening pinned map \(path)")
        }
        defer { close(fd) }
        let info = try objectInfo(bpf_map_info(), fd: fd, what: "map info of \(path)")
        return BPFMapShape(
            type: info.type, keySize: info.key_size, valueSize: info.value_size, maxEntries: info.max_entries)
    }
}

extension BPFObject {
    func declaredShapes() -> [String: BPFMapShape] {
        var result: [String: BPFMapShape] = [:]
        var map = bpf_object__next_map(handleForShapes, nil)
        while let m = map {
            let name = String(cString: bpf_map__name(m))
            if !name.contains(".") {
                result[name] = BPFMapShape(
                    type: bpf_map__type(m).rawValue, keySize: bpf_map__key_size(m),
                    valueSize: bpf_map__value_size(m), maxEntries: bpf_map__max_entries(m))
            }
            map = bpf_object__next_map(handleForShapes, m)
        }
        return result
    }
}
