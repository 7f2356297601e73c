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
}
