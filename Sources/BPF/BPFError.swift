#if canImport(Glibc)
    import Glibc
#endif

/// A libbpf or bpf(2) failure: what we were doing and the errno.
public struct BPFError: Error, Sendable, CustomStringConvertible {
    public var errno: Int32
    public var context: String

    public init(_ errno: Int32, _ context: String) {
        self.errno = errno
        self.context = context
    }

    /// From a libbpf return value (negative errno) or, for 0/-1, the thread's errno.
    static func libbpf(_ rc: Int32, _ context: String) -> BPFError {
        BPFError(rc < -1 ? -rc : Glibc.errno, context)
    }

    public var description: String { "\(context): \(String(cString: strerror(errno))) (errno \(errno))" }
}
