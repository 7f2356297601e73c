import NodeNetJSON

/// The spec's `cluster` section: remote nodes and services come from etcd, where this node
/// registers itself and publishes its endpoints (see docs/spec.md, "Cluster mode").
public struct ClusterSettings: Sendable, Hashable {
    /// etcd client URLs: `https://10.0.0.1:2379`, `http://…`, `unix:///path/to/socket` or
    /// `unixs:///path` (TLS on a unix socket).
    public var endpoints: [String]
    /// PEM files for TLS; `certFile`/`keyFile` when etcd asks for client certificates.
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?
    /// Every key nodenet reads or writes starts with it (default `/nodenet/v1`).
    public var prefix: String
    /// Seconds a node's registration outlives its agent (default 15); kept alive every TTL/3.
    public var leaseTTL: Int
    /// Seconds a node whose registration went stays programmed on the others (default 30): a
    /// node back within it keeps its routes and backends untouched.
    public var nodeDeleteGrace: Int

    public init(
        endpoints: [String], caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil,
        prefix: String = "/nodenet/v1", leaseTTL: Int = 15, nodeDeleteGrace: Int = 30
    ) {
        self.endpoints = endpoints
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.prefix = prefix
        self.leaseTTL = leaseTTL
        self.nodeDeleteGrace = nodeDeleteGrace
    }

    /// Why `text` is not an etcd endpoint URL we can use, nil when it is.
    public static func endpointProblem(_ text: String) -> String? {
        for scheme in ["unix://", "unixs://"] where text.hasPrefix(scheme) {
            let path = text.dropFirst(scheme.count)
            return path.hasPrefix("/") && !path.split(separator: "/").contains("..")
                ? nil : "\"\(text)\" is not \(scheme)/absolute/path/to/socket"
        }
        for scheme in ["http://", "https://"] where text.hasPrefix(scheme) {
            let rest = text.dropFirst(scheme.count).split(separator: "/", omittingEmptySubsequences: false)
            guard rest.count == 1 || (rest.count == 2 && rest[1].isEmpty), let authority = rest.first,
                !authority.isEmpty, !authority.contains("@"), !authority.contains("?")
            else { return "\"\(text)\" is not an etcd URL like https://10.0.0.1:2379" }
            if let colon = authority.lastIndex(of: ":"), !authority.hasSuffix("]") {
                guard let port = Int(authority[authority.index(after: colon)...]), (1...65535).contains(port) else {
                    return "\"\(text)\" has no valid port"
                }
            }
            return nil
        }
        return "\"\(text)\" must start with https://, http://, unix:// or unixs://"
    }
}

extension SpecReader {
    /// The `cluster` section, nil when absent.
    mutating func readCluster(_ value: JSONValue?) -> ClusterSettings? {
        guard
            let fields = object(
                value, "cluster", allowed: ["etcd", "prefix", "leaseTTL", "nodeDeleteGrace"])
        else { return nil }
        var settings = ClusterSettings(endpoints: [])
        if fields["etcd"] == nil { problem("cluster.etcd", "is required (etcd's endpoints)") }
        if let etcd = object(fields["etcd"], "cluster.etcd", allowed: ["endpoints", "caFile", "certFile", "keyFile"]) {
            let items = array(etcd, "endpoints", "cluster.etcd")
            if items.isEmpty { problem("cluster.etcd.endpoints", "needs at least one etcd URL") }
            for (i, item) in items.enumerated() {
                guard case .string(let url) = item else {
                    problem("cluster.etcd.endpoints[\(i)]", "must be a string, found \(item.kindName)")
                    continue
                }
                if let why = ClusterSettings.endpointProblem(url) { problem("cluster.etcd.endpoints[\(i)]", why) }
                settings.endpoints.append(url)
            }
            for key in ["caFile", "certFile", "keyFile"] {
                guard let path = string(etcd, key, "cluster.etcd", required: false) else { continue }
                if !path.hasPrefix("/") { problem("cluster.etcd.\(key)", "\"\(path)\" must be an absolute path") }
                switch key {
                case "caFile": settings.caFile = path
                case "certFile": settings.certFile = path
                default: settings.keyFile = path
                }
            }
            if (settings.certFile == nil) != (settings.keyFile == nil) {
                problem("cluster.etcd", "certFile and keyFile go together (a client certificate and its key)")
            }
        }
        if let prefix = string(fields, "prefix", "cluster", required: false) {
            if !prefix.hasPrefix("/") || prefix.hasSuffix("/") || prefix.contains("//") || prefix.utf8.count > 200 {
                problem("cluster.prefix", "\"\(prefix)\" must start with '/', not end with '/' (like /nodenet/v1)")
            }
            settings.prefix = prefix
        }
        settings.leaseTTL = integer(fields, "leaseTTL", "cluster", required: false, range: 3...3600) ?? 15
        settings.nodeDeleteGrace =
            integer(fields, "nodeDeleteGrace", "cluster", required: false, range: 0...86400) ?? 30
        return settings
    }
}

extension PodBackend {
    /// Why `pod` is not `namespace/name`, nil when it is.
    public static func problem(_ pod: String) -> String? {
        let parts = pod.split(separator: "/", omittingEmptySubsequences: false)
        func isAlphanumeric(_ c: Character?) -> Bool { c.map { ($0.isLetter || $0.isNumber) && $0.isASCII } ?? false }
        guard parts.count == 2,
            parts.allSatisfy({ part in
                (1...253).contains(part.count) && isAlphanumeric(part.first) && isAlphanumeric(part.last)
                    && part.allSatisfy { isAlphanumeric($0) || $0 == "-" || $0 == "." || $0 == "_" }
            })
        else {
            return
                "\"\(pod)\" is not namespace/name (letters, digits, '-', '.', '_', each starting and ending with a letter or digit)"
        }
        return nil
    }
}
