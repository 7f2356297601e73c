import BPF
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// One writer per node: an exclusive lock on `<stateDirectory>/nodenetd.lock`, held by
/// `nodenetd run` for its lifetime and by `apply` and `teardown` while they work. It is an
/// open-file-description lock (`F_OFD_SETLK`): it dies with its holder, so a `kill -9`
/// leaves nothing to clean up, and anyone can ask who holds it without taking it.
public final class NodeLock: @unchecked Sendable {
    /// Who holds a node's lock, as the holder wrote it into the lock file.
    public struct Holder: Sendable, Equatable, Codable, CustomStringConvertible {
        public var pid: Int32
        /// `run`, `apply`, `teardown`, ...
        public var command: String
        /// When it took the lock (UTC, ISO 8601).
        public var since: String

        public var description: String { "pid \(pid), nodenetd \(command), since \(since)" }
    }

    public let stateDirectory: String
    public var path: String { Self.path(stateDirectory: stateDirectory) }
    private let fd: Int32

    private init(stateDirectory: String, fd: Int32) {
        self.stateDirectory = stateDirectory
        self.fd = fd
    }

    deinit { close(fd) }

    public static func path(stateDirectory: String) -> String { stateDirectory + "/nodenetd.lock" }

    /// Takes the lock of the node whose state lives in `stateDirectory`. Throws
    /// `NodeNetError.conflict` naming the holder when another process has it.
    public static func acquire(stateDirectory: String, node: String, command: String) throws -> NodeLock {
        try Paths.createPrivateDirectory(stateDirectory, what: "state directory")
        let path = path(stateDirectory: stateDirectory)
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw NodeNetError.state("opening the node lock \(path): \(String(cString: strerror(errno)))")
        }
        var request = Self.writeLock()
        guard fcntl(fd, ofdSetLock, &request) == 0 else {
            let busy = errno == EAGAIN || errno == EACCES
            let why = String(cString: strerror(errno))
            close(fd)
            guard busy else { throw NodeNetError.state("locking \(path): \(why)") }
            // The holder writes who it is right after it locks: give it a moment to.
            var holder = Self.holder(stateDirectory: stateDirectory)
            for _ in 0..<50 where holder == nil {
                usleep(10_000)
                holder = Self.holder(stateDirectory: stateDirectory)
            }
            throw NodeNetError.conflict(
                "another nodenetd (\(holder.map { "\($0)" } ?? "its pid not yet written")) owns node \(node)")
        }
        let holder = Holder(pid: getpid(), command: command, since: Date().formatted(.iso8601))
        let text = Array(((try? JSONEncoder().encode(holder)) ?? Data()) + Data("\n".utf8))
        ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        return NodeLock(stateDirectory: stateDirectory, fd: fd)
    }

    /// Who holds the node's lock now; nil when nobody does (never takes the lock itself).
    public static func holder(stateDirectory: String) -> Holder? {
        let path = path(stateDirectory: stateDirectory)
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var query = Self.writeLock()
        guard fcntl(fd, ofdGetLock, &query) == 0, query.l_type != Int16(F_UNLCK) else { return nil }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        let written = n > 0 ? (try? JSONDecoder().decode(Holder.self, from: Data(bytes.prefix(n)))) : nil
        return written ?? Holder(pid: 0, command: "unknown", since: "unknown")
    }

    private static func writeLock() -> flock {
        var l = flock()
        l.l_type = Int16(F_WRLCK)
        l.l_whence = Int16(SEEK_SET)
        return l
    }

    // <fcntl.h> behind _GNU_SOURCE, which the Glibc module does not define.
    private static let ofdGetLock: Int32 = 36
    private static let ofdSetLock: Int32 = 37
}
