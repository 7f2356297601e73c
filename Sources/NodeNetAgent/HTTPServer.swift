import Foundation

#if canImport(Glibc)
    import Glibc
    import NodeNet
#endif

/// A small HTTP/1.1 server for the agent's own endpoints (health, metrics, the CNI endpoint
/// API): one request per connection, each on a thread of its own (a handler may wait for a
/// reconcile), at most `maxConnections` at once. On a unix socket every request carries its
/// peer's credentials (`SO_PEERCRED`), for the handler to authorise.
public final class HTTPServer: @unchecked Sendable {
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

    public struct Request: Sendable {
        public var method: String
        public var path: String
        public var body: Data
        /// The peer's process, user and group (unix sockets only).
        public var peer: (pid: Int32, uid: UInt32, gid: UInt32)?
    }

    public struct Response: Sendable {
        public var status: Int
        public var contentType: String
        public var body: Data

        public init(status: Int, contentType: String = "application/json", body: Data) {
            self.status = status
            self.contentType = contentType
            self.body = body
        }

        public init(status: Int, text: String) {
            self.init(status: status, contentType: "text/plain", body: Data(text.utf8))
        }
    }

    /// The largest request body read (a GC request lists every attachment of the node).
    public static let bodyLimit = 4 << 20
    public static let maxConnections = 64

    private let fd: Int32
    public let address: Address
    private let stopped = StopFlag()
    private let handler: @Sendable (Request) -> Response
    private let active = ActiveCount()

    /// Binds and listens; a unix socket is created with `mode` (an old socket file at the path
    /// is replaced).
    public convenience init(
        address: Address, mode: mode_t = 0o600, handler: @escaping @Sendable (Request) -> Response
    ) throws {
        try self.init(bound: try Self.bind(address, mode: mode), address: address, handler: handler)
    }

    /// A health check node port (kube-proxy's): TCP `port` on every address of `namespace` (the
    /// node's). The one server of nodenet's that answers off the node; what it says is only
    /// `handler`'s (no request body is read past the limit, a connection has a deadline).
    public convenience init(
        healthCheckPort port: UInt16, in namespace: NamespaceReference,
        handler: @escaping @Sendable (Request) -> Response
    ) throws {
        let address = Address.tcp(IPAddress("0.0.0.0"), port)
        let fd = try NetworkNamespace.run(in: namespace) { try Self.tcpSocket(address) }
        try self.init(bound: fd, address: address, handler: handler)
    }

    private init(bound fd: Int32, address: Address, handler: @escaping @Sendable (Request) -> Response) throws {
        self.fd = fd
        self.address = address
        self.handler = handler
        guard listen(fd, 128) == 0 else { throw Self.failure("listening on \(address)", fd) }
        Thread.detachNewThread { [self] in serve() }
    }

    /// A socket bound to `address` (loopback or a unix socket only).
    private static func bind(_ address: Address, mode: mode_t) throws -> Int32 {
        let fd: Int32
        switch address {
        case .tcp(let ip, let port):
            // nodenet serves nothing off the node: loopback only, whoever calls.
            guard IPPrefix("127.0.0.0/8").contains(ip) else {
                throw NodeNetError.state("serving on \(address): only loopback (127.0.0.0/8) or a unix socket")
            }
            fd = try tcpSocket(.tcp(ip, port))
        case .unix(let path):
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var info = stat()
            if lstat(path, &info) == 0 {
                guard info.st_mode & S_IFMT == S_IFSOCK else {
                    close(fd)
                    throw NodeNetError.state("binding \(address): \(path) exists and is not a socket")
                }
                unlink(path)
            }
            var a = sockaddr_un()
            a.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &a.sun_path) { raw in
                for (i, b) in path.utf8.enumerated() { raw[i] = b }
            }
            // Created with the mode asked for: no moment where others could connect.
            let old = umask(~mode & 0o777)
            let rc = withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            umask(old)
            guard rc == 0 else { throw Self.failure("binding \(address)", fd) }
        }
        return fd
    }

    /// A TCP socket bound to `address` (in the calling thread's network namespace).
    private static func tcpSocket(_ address: Address) throws -> Int32 {
        guard case .tcp(let ip, let port) = address else { throw NodeNetError.state("\(address) is not TCP") }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw NodeNetError.state("a socket for \(address): \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
        let rc = SocketAddress(ip, port: port).withSockaddr { Glibc.bind(fd, $0, $1) }
        guard rc == 0 else { throw failure("binding \(address)", fd) }
        return fd
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
            _ = fcntl(conn, F_SETFD, FD_CLOEXEC)
            guard active.enter(limit: Self.maxConnections) else {
                Self.send(Response(status: 503, text: "too many requests at once\n"), to: conn)
                close(conn)
                continue
            }
            Thread.detachNewThread { [self] in
                defer {
                    close(conn)
                    active.leave()
                }
                guard var request = Self.read(conn) else {
                    Self.send(Response(status: 400, text: "malformed request\n"), to: conn)
                    return
                }
                if case .unix = address {
                    // struct ucred { pid_t pid; uid_t uid; gid_t gid; } (glibc hides it behind _GNU_SOURCE)
                    var cred: (Int32, UInt32, UInt32) = (0, 0, 0)
                    var length = socklen_t(MemoryLayout<(Int32, UInt32, UInt32)>.size)
                    if getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &length) == 0, length == 12 {
                        request.peer = (cred.0, cred.1, cred.2)
                    }
                }
                Self.send(handler(request), to: conn)
            }
        }
    }

    /// Reads one request: the head (at most 16 KiB) and a body of `Content-Length` bytes (at
    /// most `bodyLimit`), all of it within `deadline` (a client trickling bytes gets no longer).
    static func read(_ fd: Int32, deadline seconds: Double = 10) -> Request? {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        /// Bounds the next read by what is left of the deadline; false when nothing is.
        func bound() -> Bool {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return false }
            var tv = timeval(
                tv_sec: Int(left.components.seconds),
                tv_usec: max(1, Int(left.components.attoseconds / 1_000_000_000_000)))
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            return true
        }
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        var headEnd: Int?
        while headEnd == nil {
            guard data.count < 16384, bound() else { return nil }
            let n = Glibc.read(fd, &buffer, buffer.count)
            guard n > 0 else { return nil }
            data += buffer[0..<n]
            headEnd = data.firstRange(of: [13, 10, 13, 10])?.upperBound
        }
        let head = String(decoding: data[..<headEnd!], as: UTF8.self)
        let lines = head.split(separator: "\r\n")
        let first = lines.first?.split(separator: " ") ?? []
        guard first.count == 3, first[2].hasPrefix("HTTP/1.") else { return nil }
        var length = 0
        for line in lines.dropFirst() {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            if parts[0].lowercased() == "content-length" {
                guard let n = Int(parts[1].trimmingCharacters(in: .whitespaces)), n >= 0, n <= bodyLimit else {
                    return nil
                }
                length = n
            }
        }
        var body = Array(data[headEnd!...])
        while body.count < length {
            guard bound() else { return nil }
            let n = Glibc.read(fd, &buffer, min(buffer.count, length - body.count))
            guard n > 0 else { return nil }
            body += buffer[0..<n]
        }
        guard body.count == length else { return nil }
        return Request(method: String(first[0]), path: String(first[1]), body: Data(body), peer: nil)
    }

    static func send(_ response: Response, to fd: Int32) {
        let reasons = [
            200: "OK", 201: "Created", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 500: "Internal Server Error", 503: "Service Unavailable",
            507: "Insufficient Storage",
        ]
        let head =
            "HTTP/1.1 \(response.status) \(reasons[response.status] ?? "Status")\r\nContent-Type: \(response.contentType)\r\nContent-Length: \(response.body.count)\r\nConnection: close\r\n\r\n"
        let bytes = Array(head.utf8) + response.body
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, bytes.count - sent, msgNoSignal) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }
            sent += n
        }
    }
}

final class ActiveCount: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func enter(limit: Int) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard count < limit else { return false }
        count += 1
        return true
    }
    func leave() {
        lock.lock()
        count -= 1
        lock.unlock()
    }
}
