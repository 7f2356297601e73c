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
            guard fd >= 0 else { throw NetlinkError.system("open(\(path))", context: "reading sysctl \(key) in \(namespace)") }
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            guard n >= 0 else { throw NetlinkError.system("read(\(path))", context: "reading sysctl \(key) in \(namespace)") }
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
            guard fd >= 0 else { throw NetlinkError.system("open(\(path))", context: context) }
            defer { close(fd) }
            let bytes = Array(value.utf8)
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            guard n == bytes.count else { throw NetlinkError.system("write(\(path))", context: context) }
        }
    }
}

extension String {
    fileprivate func replacingDots() -> String {
        String(map { $0 == "." ? "/" : $0 })
    }
}
