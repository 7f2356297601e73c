#if canImport(Glibc)
    import Glibc
#endif

/// The running kernel's release (uname), for features that have no probe of their own.
public enum KernelRelease {
    /// Major and minor version (`6.18.0-…` → 6, 18); nil when uname says something else.
    public static let version: (major: Int, minor: Int)? = {
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let parts = release.split(separator: ".").prefix(2).compactMap { Int($0.prefix { $0.isNumber }) }
        return parts.count == 2 ? (parts[0], parts[1]) : nil
    }()

    public static func isAtLeast(_ major: Int, _ minor: Int) -> Bool {
        guard let v = version else { return false }
        return (v.major, v.minor) >= (major, minor)
    }
}
