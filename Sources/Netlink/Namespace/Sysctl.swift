#if canImport(Glibc)
    import Glibc
#endif

/// Reads and writes `/proc/sys` values, in any network namespace.
///
/// `/proc/sys/net` shows the namespace of the thread that opens the file, so for another
/// namespace the file is opened on a thread inside it.
public enum Sysctl {
    /// `net.ipv4.ip_forward` or `net/ipv4/conf/lxc1.2/rp_filter` (use slashes when an
    /// interface name contains a dot).
    public static func path(for key: String) -> String {
        let relative = key.contains("/") ? key : key.replacingDots()
        return "/proc/sys/" + relative
    }

    public static func read(_ key: String, in namespace: NamespaceReference = .current) throws -> String {
        let path = path(for: key)
        return try NetworkNamespace.run(in: namespace) {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                throw NetlinkError.syscall("open(\(path))", context: "reading sysctl \(key) in \(namespace)")
            }
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            guard n >= 0 else {
                throw NetlinkError.syscall("read(\(path))", context: "reading sysctl \(key) in \(namespace)")
            }
            var text = String(decoding: buffer[0..<n], as: UTF8.self)
            while text.last == "\n" { text.removeLast() }
            return text
        }
    }

    public static func write(_ key: String, _ value: String, in namespace: NamespaceReference = .current) throws {
        let path = path(for: key)
        let context = "setting sysctl \(key)=\(value) in \(namespace)"
        try NetworkNamespace.run(in: namespace) {
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { throw NetlinkError.syscall("open(\(path))", context: context) }
            defer { close(fd) }
            let bytes = Array(value.utf8)
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            guard n == bytes.count else { throw NetlinkError.syscall("write(\(path))", context: context) }
        }
    }
}

extension Sysctl {
    /// Reads many keys with one namespace switch; a key that does not exist reads as nil.
    public static func read(_ keys: [String], in namespace: NamespaceReference = .current) throws -> [String: String] {
        try NetworkNamespace.run(in: namespace) {
            var values: [String: String] = [:]
            for key in keys {
                if let value = try? read(key, in: .current) { values[key] = value }
            }
            return values
        }
    }

    /// Writes many values with one namespace switch, in order; stops at the first failure
    /// and returns how many were written before it.
    public static func write(
        _ settings: [(key: String, value: String)], in namespace: NamespaceReference = .current
    ) -> (written: Int, error: NetlinkError?) {
        do {
            return try NetworkNamespace.run(in: namespace) {
                for (i, s) in settings.enumerated() {
                    do { try write(s.key, s.value, in: .current) } catch let e as NetlinkError { return (i, e) }
                }
                return (settings.count, nil)
            }
        } catch let e as NetlinkError {
            return (0, e)
        } catch {
            return (0, NetlinkError(.protocolError, kind: .system, detail: "\(error)"))
        }
    }
}

extension String {
    fileprivate func replacingDots() -> String {
        String(map { $0 == "." ? "/" : $0 })
    }
}
