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
        guard let root, path.hasPrefix(root + "/") else { throw NodeNetError.state("\(path) is not under the cgroup v2 root") }
        try createDirectory(path, what: "cgroup")
    }

    /// Moves process `pid` into the cgroup at `path`.
    public static func add(pid: pid_t, to path: String) throws {
        let fd = open(path + "/cgroup.procs", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw NodeNetError.state("opening \(path)/cgroup.procs: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let text = Array("\(pid)".utf8)
        guard write(fd, text, text.count) == text.count else {
            throw NodeNetError.state("moving \(pid) into \(path): \(String(cString: strerror(errno)))")
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
        guard let root, isSafeSubdirectory(path, of: root) else { return }
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: path) else { return }
        for entry in entries {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: "\(path)/\(entry)", isDirectory: &isDirectory), isDirectory.boolValue {
                remove("\(path)/\(entry)")
            }
        }
        rmdir(path)
    }
}

/// The BPF filesystem, mounted at /sys/fs/bpf when it is not.
public enum BPFFS {
    public static let root = "/sys/fs/bpf"
    public static var isMounted: Bool { Mounts.current().contains { $0.point == root && $0.type == "bpf" } }

    /// Mounts bpffs at /sys/fs/bpf if needed, then creates `directory` (and parents).
    public static func prepare(_ directory: String) throws {
        try mountIfNeeded()
        try createDirectory(directory, what: "bpffs directory")
    }

    /// Mounts bpffs at /sys/fs/bpf when nothing is mounted there. Two processes doing this at
    /// once would stack two instances (pins in the lower one then vanish from view), so the
    /// check and the mount happen under a lock file.
    static func mountIfNeeded() throws {
        if isMounted { return }
        let lock = open("/run/nodenet-bpffs.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        if lock >= 0 { flock(lock, LOCK_EX) }
        defer { if lock >= 0 { close(lock) } }
        if isMounted { return }
        guard mount("bpf", root, "bpf", 0, nil) == 0 else {
            throw NodeNetError.state("mounting bpffs on \(root): \(String(cString: strerror(errno)))")
        }
    }

    /// Removes `directory` and everything pinned below it. Only a directory strictly below
    /// /sys/fs/bpf with no `..` is ever removed.
    public static func remove(_ directory: String) {
        guard isSafeSubdirectory(directory, of: root) else { return }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// The calling process's mount table (/proc/self/mountinfo).
enum Mounts {
    struct Entry {
        var point: String
        var type: String
    }

    static func current() -> [Entry] {
        guard let info = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
        return info.split(separator: "\n").compactMap { line in
            // "id parent major:minor root mountpoint options [optional...] - fstype source superoptions"
            let halves = line.components(separatedBy: " - ")
            let fields = halves[0].split(separator: " ")
            guard halves.count == 2, fields.count >= 5, let type = halves[1].split(separator: " ").first else { return nil }
            return Entry(point: String(fields[4]), type: String(type))
        }
    }
}

/// Whether `path` lies strictly below `root`, with no `.` or `..` components (paths built
/// from names must never escape into the rest of the filesystem).
func isSafeSubdirectory(_ path: String, of root: String) -> Bool {
    guard path.hasPrefix(root + "/") else { return false }
    let rest = path.dropFirst(root.count + 1).split(separator: "/", omittingEmptySubsequences: false)
    return !rest.isEmpty && rest.allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." }
}

/// Creates `directory` and its parents; a parent that another process removes meanwhile (a
/// lab's `down` removes the shared parent when it is empty) is created again, a few times.
func createDirectory(_ directory: String, what: String) throws {
    var attempt = 0
    while true {
        attempt += 1
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            return
        } catch {
            if attempt < 5 { continue }
            throw NodeNetError.state("creating \(what) \(directory): \(error)")
        }
    }
}
