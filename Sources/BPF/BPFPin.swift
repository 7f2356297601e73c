import CBPF

#if canImport(Glibc)
    import Glibc
#endif

/// Pinned BPF objects (bpffs files).
public enum BPFPin {
    /// Moves a pin: bpffs does not support rename(2) here (EPERM), so the object is opened,
    /// pinned at `to`, and only then unpinned at `from` (it stays referenced throughout).
    public static func move(from: String, to: String) throws {
        let fd = bpf_obj_get(from)
        guard fd >= 0 else { throw BPFError(errno, "opening pin \(from)") }
        defer { close(fd) }
        unlink(to)
        let rc = bpf_obj_pin(fd, to)
        guard rc == 0 else { throw BPFError.libbpf(rc, "pinning \(to)") }
        guard unlink(from) == 0 else { throw BPFError(errno, "unpinning \(from)") }
    }

    /// The object pinned at `path` (closed with the handle), nil when nothing is pinned there.
    public static func open(_ path: String) throws -> BPFHandle? {
        let fd = bpf_obj_get(path)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw BPFError(errno, "opening pin \(path)")
        }
        return BPFHandle(adopting: fd)
    }

    /// Unpins whatever is pinned at `path` (nothing pinned there is fine).
    public static func remove(_ path: String) throws {
        guard unlink(path) == 0 || errno == ENOENT else { throw BPFError(errno, "removing pin \(path)") }
    }

    /// Pins the object behind `fd` at `path`.
    public static func pin(fd: Int32, at path: String) throws {
        let rc = bpf_obj_pin(fd, path)
        guard rc == 0 else { throw BPFError.libbpf(rc, "pinning \(path)") }
    }
}

/// A BPF object (map, program or link) this process holds by file descriptor, closed when the
/// last reference goes. Holding it keeps the object alive even with no pin.
public final class BPFHandle: @unchecked Sendable {
    public let fd: Int32

    /// Takes ownership of `fd`.
    public init(adopting fd: Int32) { self.fd = fd }

    deinit { close(fd) }
}
