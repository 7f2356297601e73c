import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The cgroup v2 hierarchy: found from /proc/self/mountinfo (at /sys/fs/cgroup/unified on
/// hybrid systems, /sys/fs/cgroup on unified ones).
public enum CgroupV2 {
    public static let root: String? = Mounts.current().first { $0.type == "cgroup2" }?.point

    /// Creates `path` (and its parents) under the cgroup v2 root.
    public static func create(_ path: String) throws {
        guard let root, path.hasPrefix(root + "/") else {
            throw BPFError(EINVAL, "creating cgroup \(path): not under the cgroup v2 root \(root ?? "(none mounted)")")
        }
        try Paths.createDirectory(path, what: "cgroup")
    }

    /// Moves process `pid` into the cgroup at `path`.
    public static func add(pid: pid_t, to path: String) throws {
        let fd = open(path + "/cgroup.procs", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BPFError(errno, "opening \(path)/cgroup.procs") }
        defer { close(fd) }
        let text = Array("\(pid)".utf8)
        guard write(fd, text, text.count) == text.count else {
            throw BPFError(errno, "moving process \(pid) into cgroup \(path)")
        }
    }

    /// Process ids in the cgroup at `path` (empty when it does not exist).
    public static func processes(in path: String) -> [pid_t] {
        guard let text = try? String(contentsOfFile: path + "/cgroup.procs", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { pid_t($0) }
    }

    /// Removes the cgroup directories below `path` and `path` itself, deepest first; they
    /// must hold no processes.
    public static func remove(_ path: String) {
        guard let root, Paths.isStrictlyBelow(path, root) else { return }
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: path) else { return }
        for entry in entries {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: "\(path)/\(entry)", isDirectory: &isDirectory),
                isDirectory.boolValue
            {
                remove("\(path)/\(entry)")
            }
        }
        rmdir(path)
    }
}
