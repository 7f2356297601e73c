/// Which network namespace an operation runs in.
public enum NamespaceReference: Sendable, Hashable, CustomStringConvertible {
    /// The calling thread's namespace.
    case current
    /// A named namespace: `/var/run/netns/NAME` (what `ip netns add` creates).
    case named(String)
    /// Any namespace file, e.g. `/proc/PID/ns/net`.
    case path(String)

    /// `NAME` or an absolute path.
    public init(_ nameOrPath: String) {
        self = nameOrPath.hasPrefix("/") ? .path(nameOrPath) : .named(nameOrPath)
    }

    /// The file that holds the namespace; nil for `.current`.
    public var path: String? {
        switch self {
        case .current: return nil
        case .named(let name): return "\(NetworkNamespace.directory)/\(name)"
        case .path(let path): return path
        }
    }

    public var description: String {
        switch self {
        case .current: return "the current network namespace"
        case .named(let name): return "network namespace \(name)"
        case .path(let path): return "network namespace \(path)"
        }
    }
}
