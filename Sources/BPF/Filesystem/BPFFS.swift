import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The BPF filesystem, mounted at /sys/fs/bpf when it is not.
public enum BPFFS {
    public static let root = "/sys/fs/bpf"
    public static var isMounted: Bool { Mounts.current().contains { $0.point == root && $0.type == "bpf" } }

    /// Mounts bpffs at /sys/fs/bpf if needed, then creates `directory` (and parents).
    public static func prepare(_ directory: String) throws {
        try mountIfNeeded()
        try Paths.createDirectory(directory, what: "bpffs directory")
    }

    /// Mounts bpffs at /sys/fs/bpf when nothing is mounted there. Two processes doing this at
    /// once would stack two instances (pins in the lower one then vanish from view), so the
    /// check and the mount happen under a lock file.
    public static func mountIfNeeded() throws {
        if isMounted { return }
        let lock = open("/run/nodenet-bpffs.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        if lock >= 0 { flock(lock, LOCK_EX) }
        defer { if lock >= 0 { close(lock) } }
        if isMounted { return }
        guard mount("bpf", root, "bpf", 0, nil) == 0 else {
            throw BPFError(errno, "mounting bpffs on \(root)")
        }
    }

    /// Removes `directory` and everything pinned below it. Only a directory strictly below
    /// /sys/fs/bpf with no `..` is ever removed.
    public static func remove(_ directory: String) {
        guard Paths.isStrictlyBelow(directory, root) else { return }
        try? FileManager.default.removeItem(atPath: directory)
    }
}
