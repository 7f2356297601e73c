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
}
