import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Files nodenet reads and writes as root: specs, the ledger. Reading never trusts the path
/// (a directory, a device, a huge or binary file each get one clear sentence); writing is
/// atomic (temporary file, rename), so a crash of the process or a full disk leaves either
/// the old file or the new one, never half of one.
///
/// Writes are not synced to disk (no fsync): every file written here describes kernel state
/// (the ledger: devices, routes, sysctls, pins; the endpoint store: pods' devices and
/// addresses) or caches what another source keeps (the cluster cache, the audit record), and
/// none of that outlives the power loss that could lose a file's last version. A file a
/// power loss left damaged is what reading is for: it is named, moved aside and rebuilt. A
/// CNI ADD and DEL write two of them; two fsyncs each cost them 1 ms on an idle disk and
/// whatever a busy one makes them wait.
public enum StateFile {
    /// Why a file could not be read, in a sentence that names it.
    public struct ReadError: Error, Sendable, Equatable, CustomStringConvertible {
        public enum Reason: Sendable, Equatable {
            case missing, directory, notRegular, empty, tooLarge(Int), binary(Int), unreadable(String)
        }
        public let path: String
        public let reason: Reason

        public var description: String {
            switch reason {
            case .missing: "\(path) does not exist"
            case .directory: "\(path) is a directory, not a file"
            case .notRegular: "\(path) is not a regular file"
            case .empty: "\(path) is empty"
            case .tooLarge(let limit): "\(path) is larger than \(limit / (1 << 20)) MiB"
            case .binary(let offset): "\(path) is not text (binary data at byte \(offset))"
            case .unreadable(let why): "cannot read \(path): \(why)"
            }
        }
    }

    /// The bytes of the regular file at `path`, at most `limit` bytes, UTF-8 text without NUL.
    public static func readText(_ path: String, limit: Int) throws(ReadError) -> Data {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
        guard fd >= 0 else {
            throw ReadError(
                path: path, reason: errno == ENOENT ? .missing : .unreadable(String(cString: strerror(errno))))
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw ReadError(path: path, reason: .unreadable(String(cString: strerror(errno))))
        }
        switch info.st_mode & S_IFMT {
        case S_IFDIR: throw ReadError(path: path, reason: .directory)
        case S_IFREG: break
        default: throw ReadError(path: path, reason: .notRegular)
        }
        guard info.st_size <= limit else { throw ReadError(path: path, reason: .tooLarge(limit)) }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size) + 1)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw ReadError(path: path, reason: .unreadable(String(cString: strerror(errno)))) }
            if n == 0 { break }
            count += n
        }
        // The file may have grown since fstat: what was read decides.
        guard count <= limit else { throw ReadError(path: path, reason: .tooLarge(limit)) }
        bytes.removeLast(bytes.count - count)
        guard !bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) else {
            throw ReadError(path: path, reason: .empty)
        }
        if let nul = bytes.firstIndex(of: 0) { throw ReadError(path: path, reason: .binary(nul)) }
        if String(validatingUTF8: bytes.map { CChar(bitPattern: $0) } + [0]) == nil {
            throw ReadError(path: path, reason: .binary(firstInvalidUTF8(bytes)))
        }
        return Data(bytes)
    }

    /// Writes `data` to `path` atomically: a temporary file beside it (mode 0600), renamed
    /// over `path`. `what` names the file in errors.
    public static func writeAtomically(_ data: Data, to path: String, what: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let temporary = "\(directory)/.\((path as NSString).lastPathComponent).\(getpid()).tmp"
        func failure(_ step: String) -> NodeNetError {
            NodeNetError.state("writing \(what) \(path): \(step): \(String(cString: strerror(errno)))")
        }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw failure("creating \(temporary)") }
        var written = 0
        let ok = data.withUnsafeBytes { raw -> Bool in
            while written < raw.count {
                let n = write(fd, raw.baseAddress! + written, raw.count - written)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return false }
                written += n
            }
            return true
        }
        guard ok else {
            let error = failure("writing \(temporary)")
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let error = failure("renaming \(temporary)")
            unlink(temporary)
            throw error
        }
    }

    /// Moves a file nodenet cannot trust aside as `NAME.corrupt-<UTC time>` (kept for a
    /// person to read); returns the new path, nil when it could not be moved.
    public static func moveAside(_ path: String) -> String? {
        let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
        // Two in one second get -1, -2, ...: an earlier one is never overwritten.
        for n in 0..<100 {
            let aside = "\(path).corrupt-\(stamp)" + (n == 0 ? "" : "-\(n)")
            if access(aside, F_OK) == 0 { continue }
            return rename(path, aside) == 0 ? aside : nil
        }
        return nil
    }

    private static func firstInvalidUTF8(_ bytes: [UInt8]) -> Int {
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            let length = b < 0x80 ? 1 : b >> 5 == 0b110 ? 2 : b >> 4 == 0b1110 ? 3 : b >> 3 == 0b11110 ? 4 : 0
            guard length > 0, i + length <= bytes.count, bytes[(i + 1)..<(i + length)].allSatisfy({ $0 >> 6 == 0b10 })
            else { return i }
            i += length
        }
        return i
    }
}
