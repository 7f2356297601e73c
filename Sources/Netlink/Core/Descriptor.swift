#if canImport(Glibc)
    import Glibc
#endif

/// A file descriptor this process owns, closed when the last reference goes: what
/// `NetworkNamespace.open` returns (for `IFLA_NET_NS_FD` or `setns`). Keep it alive while a
/// request that names its number is in flight.
public final class FileDescriptor: @unchecked Sendable, CustomStringConvertible {
    /// The number, for requests and system calls; valid while this object lives.
    public let rawValue: Int32

    /// Takes ownership of `fd` (it is closed with this object).
    public init(adopting fd: Int32) { rawValue = fd }

    deinit { close(rawValue) }

    public var description: String { "fd \(rawValue)" }
}
