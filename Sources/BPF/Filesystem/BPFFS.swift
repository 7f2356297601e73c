import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The BPF filesystem, mounted at /sys/fs/bpf when it is not.
public enum BPFFS {
    public static let root = "/sys/fs/bpf"
    public static var isMounted: Bool { Mounts.current().contains { $0.point == root && $0.type == "bpf" } }

    /// Mounts bpffs at /sys/fs/bpf if needed, then creates `directory` (and parents) as a
    /// private directory: root's, 0700, not a symbolic link, nothing above it writable by others
    /// unless sticky (a bpffs mounted by someone else may be world-writable, and pins placed in a
    /// directory another user controls could be swapped).
    public static func prepare(_ directory: String) throws {
        try mountIfNeeded()
        try Paths.createPrivateDirectory(directory, what: "bpffs directory")
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
        // Root's only: mounted without a mode, bpffs is world-writable (sticky).
        guard mount("bpf", root, "bpf", 0, "mode=0700") == 0 else {
            throw BPFError(errno, "mounting bpffs on \(root)")
        }
    }

    /// Removes `directory` and everything pinned below it. Only a directory strictly below
    /// /sys/fs/bpf with no `..`, reached without a symbolic link and through directories owned
    /// by root, is ever removed (a link planted on the way would point the removal elsewhere).
    public static func remove(_ directory: String) {
        guard Paths.isStrictlyBelow(directory, root) else { return }
        var path = root
        for component in directory.dropFirst(root.count + 1).split(separator: "/") {
            path += "/" + component
            var info = stat()
            guard lstat(path, &info) == 0 else { return }
            guard info.st_mode & S_IFMT == S_IFDIR, info.st_uid == 0 else { return }
        }
        try? FileManager.default.removeItem(atPath: directory)
    }
}
