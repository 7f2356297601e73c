import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Path rules for directories nodenet creates and removes as root.
public enum Paths {
    /// Whether `path` lies strictly below `root`, with no empty, `.` or `..` components (paths
    /// built from names must never escape into the rest of the filesystem).
    public static func isStrictlyBelow(_ path: String, _ root: String) -> Bool {
        guard path.hasPrefix(root + "/") else { return false }
        let rest = path.dropFirst(root.count + 1).split(separator: "/", omittingEmptySubsequences: false)
        return !rest.isEmpty && rest.allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." }
    }

    /// Creates `directory` and its parents (mode 0755); a parent that another process removes
    /// meanwhile (a lab's `down` removes the shared parent when it is empty) is created again, a
    /// few times. `what` names the directory in the error.
    public static func createDirectory(_ directory: String, what: String) throws {
        var failure: Int32 = 0
        for _ in 0..<5 {
            failure = 0
            var path = directory.hasPrefix("/") ? "" : "."
            for component in directory.split(separator: "/") {
                path += "/" + component
                if mkdir(path, 0o755) != 0 && errno != EEXIST {
                    failure = errno
                    break
                }
            }
            if failure == 0 {
                var info = stat()
                guard stat(directory, &info) == 0 else {
                    failure = errno
                    continue
                }
                if info.st_mode & S_IFMT == S_IFDIR { return }
                failure = ENOTDIR
            }
        }
        throw BPFError(failure, "creating \(what) \(directory)")
    }

    /// Creates (or adopts) a directory only root may use, for state nodenet trusts: the
    /// directory itself is not a symbolic link, is owned by this process's user and ends up mode
    /// 0700; every directory above it is owned by root (or this user) and writable by no one
    /// else unless sticky (like /tmp), and a symbolic link on the way is root's. Otherwise
    /// another user could have planted the directory, or could swap it for their own.
    public static func createPrivateDirectory(_ directory: String, what: String) throws {
        try createDirectory(directory, what: what)
        let me = geteuid()
        var path = ""
        let components = directory.split(separator: "/")
        for (i, component) in components.enumerated() {
            path += "/" + component
            var info = stat()
            guard lstat(path, &info) == 0 else { throw BPFError(errno, "checking \(what) \(directory) at \(path)") }
            let last = i == components.count - 1
            let kind = info.st_mode & S_IFMT
            if kind == S_IFLNK {
                guard !last else {
                    throw BPFError(ELOOP, "\(what) \(directory) is a symbolic link; give the real directory")
                }
                guard info.st_uid == 0 else {
                    throw BPFError(
                        EPERM, "\(what) \(directory): \(path) is a symbolic link owned by uid \(info.st_uid), not root")
                }
                continue
            }
            guard info.st_uid == 0 || info.st_uid == me else {
                throw BPFError(
                    EPERM,
                    "\(what) \(directory): \(path) is owned by uid \(info.st_uid), not root; refusing to trust it")
            }
            let othersWrite = info.st_mode & (S_IWGRP | S_IWOTH) != 0
            let sticky = info.st_mode & S_ISVTX != 0
            if !last && othersWrite && !sticky {
                throw BPFError(
                    EPERM,
                    "\(what) \(directory): \(path) is writable by others (mode \(String(info.st_mode & 0o7777, radix: 8)))"
                )
            }
            if last && info.st_mode & 0o777 != 0o700 {
                guard chmod(path, 0o700) == 0 else { throw BPFError(errno, "making \(what) \(directory) private") }
            }
        }
    }
}
