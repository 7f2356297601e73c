import Foundation

#if canImport(Glibc)
    import Glibc
    import NodeNet
#endif

/// `/healthz` and `/metrics` over HTTP/1.1, on a loopback TCP address (`127.0.0.1:9962`) or
/// a unix socket (`unix:/run/nodenet/health.sock`). Off unless the operator asks for it.
public final class StatusServer: @unchecked Sendable {
    public enum Address: Sendable, Equatable, CustomStringConvertible {
        case tcp(IPAddress, UInt16)
        case unix(String)

        /// `HOST:PORT` (IPv4) or `unix:PATH`.
        public init?(_ text: String) {
            if text.hasPrefix("unix:") {
                let path = String(text.dropFirst(5))
                guard path.hasPrefix("/"), path.utf8.count < 100 else { return nil }
                self = .unix(path)
                return
            }
            let parts = text.split(separator: ":")
            guard parts.count == 2, let ip = IPAddress(String(parts[0])), ip.isIPv4, let port = UInt16(parts[1]) else {
                return nil
            }
            self = .tcp(ip, port)
        }

        public var description: String {
            switch self {
            case .tcp(let ip, let port): return "\(ip):\(port)"
            case .unix(let path): return "unix:\(path)"
            }
        }
    }

    private let fd: Int32
    private let address: Address
    private let stopped = StopFlag()
    private let handler: @Sendable (String) -> (Int, String, String)

    /// `handler(path)` returns (status, content type, body).
    public init(address: Address, handler: @escaping @Sendable (String) -> (Int, String, String)) throws {
        self.address = address
        self.handler = handler
        switch address {
        case .tcp(let ip, let port):
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
            let rc = SocketAddress(ip, port: port).withSockaddr { bind(fd, $0, $1) }
            guard rc == 0 else { throw Self.failure("binding \(address)", fd) }
        case .unix(let path):
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            unlink(path)
            var a = sockaddr_un()
            a.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &a.sun_path) { raw in
                for (i, b) in path.utf8.enumerated() { raw[i] = b }
            }
            let rc = withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            guard rc == 0 else { throw Self.failure("binding \(address)", fd) }
        }
        guard listen(fd, 16) == 0 else { throw Self.failure("listening on \(address)", fd) }
        Thread.detachNewThread { [self] in serve() }
    }

    private static func failure(_ what: String, _ fd: Int32) -> NodeNetError {
        let e = NodeNetError.state("\(what): \(String(cString: strerror(errno)))")
        close(fd)
        return e
    }

    public func stop() {
        stopped.stop()
        if case .unix(let path) = address { unlink(path) }
    }

    private func serve() {
        defer { close(fd) }
        while !stopped.isStopped {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 100) > 0 else { continue }
            let conn = accept(fd, nil, nil)
            guard conn >= 0 else { continue }
            let line = readHTTPRequestLine(conn).split(separator: " ")
            let (status, type, body) =
                line.count >= 2 && line[0] == "GET" ? handler(String(line[1])) : (405, "text/plain", "only GET\n")
            let reason =
                [200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"][status] ?? "Status"
            let response =
                "HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(type)\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
            _ = response.withCString { send(conn, $0, strlen($0), msgNoSignal) }
            close(conn)
        }
    }
}
