/// What went wrong talking to etcd, in sentences that name the endpoint and what we asked.
public enum EtcdError: Error, Sendable, CustomStringConvertible, Equatable {
    /// No endpoint answered (each one's reason).
    case unreachable([String])
    /// etcd answered with an error (its gRPC code and message).
    case server(operation: String, endpoint: String, code: Int, message: String)
    /// The answer was not what the v3 API returns.
    case malformed(operation: String, endpoint: String, detail: String)
    /// The watch's start revision was compacted away: re-list, then watch again.
    case compacted(requested: Int64, compactRevision: Int64)
    /// The watch was cancelled by etcd.
    case watchCancelled(reason: String)
    /// The settings cannot work (a bad URL, unreadable TLS files).
    case configuration(String)

    public var description: String {
        switch self {
        case .unreachable(let reasons):
            "no etcd endpoint answered: \(reasons.joined(separator: "; "))"
        case .server(let operation, let endpoint, let code, let message):
            "etcd at \(endpoint) refused \(operation): \(message) (gRPC code \(code))"
        case .malformed(let operation, let endpoint, let detail):
            "etcd at \(endpoint) answered \(operation) with something that is not an etcd v3 reply: \(detail)"
        case .compacted(let requested, let compactRevision):
            "etcd compacted its history past revision \(requested) (now from \(compactRevision)): the watch must re-list"
        case .watchCancelled(let reason):
            "etcd cancelled the watch: \(reason)"
        case .configuration(let why):
            "etcd client settings: \(why)"
        }
    }

    /// Whether etcd itself says the lease is gone (an expired or revoked lease).
    public var isLeaseNotFound: Bool {
        if case .server(_, _, _, let message) = self { return message.contains("lease not found") }
        return false
    }
}
