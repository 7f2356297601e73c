#if canImport(Glibc)
    import Glibc
#endif

/// A POSIX error number with its symbolic name, e.g. `EEXIST`.
public struct Errno: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }
    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's current `errno`.
    public static var current: Errno { Errno(rawValue: errno) }

    public static let operationNotPermitted = Errno(EPERM)
    public static let noSuchFileOrDirectory = Errno(ENOENT)
    public static let interrupted = Errno(EINTR)
    public static let noSuchDevice = Errno(ENODEV)
    public static let exists = Errno(EEXIST)
    public static let invalidArgument = Errno(EINVAL)
    public static let busy = Errno(EBUSY)
    public static let noBufferSpace = Errno(ENOBUFS)
    public static let networkUnreachable = Errno(ENETUNREACH)
    public static let notSupported = Errno(EOPNOTSUPP)
    public static let badMessage = Errno(EBADMSG)
    public static let protocolError = Errno(EPROTO)
    public static let messageTooLong = Errno(EMSGSIZE)
    public static let addressNotAvailable = Errno(EADDRNOTAVAIL)
    public static let notFound = Errno(ESRCH)

    /// The symbolic name (`EINVAL`), or `E<number>` for an unusual one.
    public var name: String {
        Errno.names[rawValue] ?? "E\(rawValue)"
    }

    /// The C library's text for this error (`Invalid argument`).
    public var message: String {
        String(cString: strerror(rawValue))
    }

    public var description: String { "\(message) (\(name))" }

    private static let names: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", ESRCH: "ESRCH", EINTR: "EINTR", EIO: "EIO", ENXIO: "ENXIO",
        E2BIG: "E2BIG", EBADF: "EBADF", EAGAIN: "EAGAIN", ENOMEM: "ENOMEM", EACCES: "EACCES",
        EFAULT: "EFAULT", EBUSY: "EBUSY", EEXIST: "EEXIST", EXDEV: "EXDEV", ENODEV: "ENODEV",
        ENOTDIR: "ENOTDIR", EISDIR: "EISDIR", EINVAL: "EINVAL", ENFILE: "ENFILE", EMFILE: "EMFILE",
        ENOSPC: "ENOSPC", EROFS: "EROFS", ERANGE: "ERANGE", ENOTSUP: "EOPNOTSUPP",
        EAFNOSUPPORT: "EAFNOSUPPORT", EADDRINUSE: "EADDRINUSE", EADDRNOTAVAIL: "EADDRNOTAVAIL",
        ENETDOWN: "ENETDOWN", ENETUNREACH: "ENETUNREACH", ENOBUFS: "ENOBUFS", ETIMEDOUT: "ETIMEDOUT",
        ECONNREFUSED: "ECONNREFUSED", EHOSTUNREACH: "EHOSTUNREACH", EMSGSIZE: "EMSGSIZE",
        EPROTO: "EPROTO", EBADMSG: "EBADMSG", ENOTEMPTY: "ENOTEMPTY",
        EPROTONOSUPPORT: "EPROTONOSUPPORT", ENOTCONN: "ENOTCONN", ENOSYS: "ENOSYS",
    ]
}
