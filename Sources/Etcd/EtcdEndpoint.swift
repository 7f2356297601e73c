import AsyncHTTPClient
import Foundation

/// Where an etcd member answers: `http://host:port`, `https://host:port`, or a unix socket
/// (`unix:///absolute/path`, `unixs:///absolute/path` with TLS, as etcd's own
/// `--listen-client-urls unix://…`).
public struct EtcdEndpoint: Sendable, Hashable, CustomStringConvertible {
    public enum Location: Sendable, Hashable {
        case tcp(secure: Bool, host: String, port: Int)
        case unix(path: String, secure: Bool)
    }
    public var location: Location

    /// Parses an endpoint URL; nil with `problem` set when it is not one we can use.
    public init(_ text: String) throws(EtcdError) {
        for scheme in ["unix://", "unixs://"] where text.hasPrefix(scheme) {
            let path = String(text.dropFirst(scheme.count))
            guard path.hasPrefix("/"), !path.split(separator: "/").contains("..") else {
                throw .configuration("\"\(text)\" is not \(scheme)/absolute/path/to/socket")
            }
            location = .unix(path: path, secure: scheme == "unixs://")
            return
        }
        guard let url = URLComponents(string: text), let scheme = url.scheme, scheme == "http" || scheme == "https",
            let host = url.host, !host.isEmpty, url.path.isEmpty || url.path == "/", url.query == nil
        else {
            throw .configuration("\"\(text)\" is not an etcd endpoint like https://10.0.0.1:2379 or unix:///path")
        }
        let port = url.port ?? 2379
        guard (1...65535).contains(port) else { throw .configuration("\"\(text)\": port \(port) is out of range") }
        location = .tcp(secure: scheme == "https", host: host, port: port)
    }

    public var isSecure: Bool {
        switch location {
        case .tcp(let secure, _, _), .unix(_, let secure): secure
        }
    }

    /// The URL of one v3 gateway call (`/v3/kv/range`).
    func url(_ path: String) -> String {
        switch location {
        case .tcp(let secure, let host, let port):
            let h = host.contains(":") ? "[\(host)]" : host
            return "\(secure ? "https" : "http")://\(h):\(port)\(path)"
        case .unix(let socket, let secure):
            let url =
                secure ? URL(httpsURLWithSocketPath: socket, uri: path) : URL(httpURLWithSocketPath: socket, uri: path)
            return url?.absoluteString ?? "http+unix://invalid\(path)"
        }
    }

    public var description: String {
        switch location {
        case .tcp(let secure, let host, let port):
            "\(secure ? "https" : "http")://\(host.contains(":") ? "[\(host)]" : host):\(port)"
        case .unix(let path, let secure): "\(secure ? "unixs" : "unix")://\(path)"
        }
    }
}

/// TLS for etcd (mutual TLS as real deployments run it): PEM files.
public struct EtcdTLS: Sendable, Hashable {
    /// The CA that signed etcd's server certificates; nil: the system's roots.
    public var caFile: String?
    /// The client certificate and key, when etcd asks for one (`--client-cert-auth`).
    public var certFile: String?
    public var keyFile: String?

    public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
    }
}
