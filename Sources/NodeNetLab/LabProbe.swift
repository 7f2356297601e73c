import Foundation

#if canImport(Glibc)
    import Glibc
    import BPF
    import NodeNet
#endif

/// Observations for the lab's checks, made from inside namespaces: HTTP requests, UDP
/// echoes and the IP forwarding counter (`FrameTap` watches a device's frames).
public enum LabProbe {
    public struct HTTPResult: Sendable {
        public var body: String
        /// The client's own address and port, as the connection saw them.
        public var local: String
        /// The address the connection reached (after any translation at connect time).
        public var peer: String
    }

    /// `GET /` to `address:port` from inside `namespace`, bounded by `timeout` seconds. With
    /// `v4Mapped`, over an IPv6 socket to `::ffff:address` (as dual-stack programs connect).
    public static func httpGet(
        from namespace: NamespaceReference, to address: IPAddress, port: UInt16 = 80, timeout: Int32 = 3,
        v4Mapped: Bool = false
    ) throws -> HTTPResult {
        let fd = try connect(
            from: namespace, to: SocketAddress(address, port: port, v4Mapped: v4Mapped), timeout: timeout)
        defer { close(fd) }
        let body = try get(fd, host: address.description)
        return HTTPResult(body: body, local: name(of: fd, peer: false), peer: name(of: fd, peer: true))
    }

    /// A TCP connection to `target` made from inside `namespace`, every send and receive on it
    /// bounded by `timeout` seconds. The caller closes it.
    public static func connect(
        from namespace: NamespaceReference, to target: SocketAddress, timeout: Int32 = 3
    ) throws -> Int32 {
        let fd = try socket(in: namespace, family: target.family, type: SOCK_STREAM, timeout: timeout)
        guard target.withSockaddr({ Glibc.connect(fd, $0, $1) }) == 0 else {
            let error = String(cString: strerror(errno))
            close(fd)
            throw NodeNetError.state("connecting to \(target): \(error)")
        }
        return fd
    }

    /// Sends `GET /` on the connected socket `fd` and returns the answer's body.
    public static func get(_ fd: Int32, host: String) throws -> String {
        let request = "GET / HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n"
        _ = request.withCString { write(fd, $0, strlen($0)) }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while response.count < 65536 {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 {
                throw NodeNetError.state(
                    "reading from \(name(of: fd, peer: true)): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            response += buffer[0..<n]
        }
        let text = String(decoding: response, as: UTF8.self)
        return text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
    }

    public struct UDPResult: Sendable {
        public var reply: String
        /// Where the reply came from, as recvfrom reported it.
        public var from: String
        /// The reply's size (a datagram larger than the MTU arrives in fragments).
        public var bytes: Int
    }

    /// Sends `payload` to `address:port` over UDP from `namespace` and returns the reply.
    public static func udpEcho(
        from namespace: NamespaceReference, to address: IPAddress, port: UInt16 = 53, payload: String,
        timeout: Int32 = 3
    ) throws -> String {
        try udp(from: namespace, to: address, port: port, payload: payload, timeout: timeout).reply
    }

    /// One unconnected UDP request/reply (sendto, recvfrom) from inside `namespace`.
    public static func udp(
        from namespace: NamespaceReference, to address: IPAddress, port: UInt16 = 53, payload: String,
        timeout: Int32 = 3
    ) throws -> UDPResult {
        let fd = try socket(in: namespace, family: AF_INET, type: SOCK_DGRAM, timeout: timeout)
        defer { close(fd) }
        let target = SocketAddress(address, port: port)
        let bytes = Array(payload.utf8)
        let sent = target.withSockaddr { sendto(fd, bytes, bytes.count, 0, $0, $1) }
        guard sent == bytes.count else {
            throw NodeNetError.state("sending to \(target): \(String(cString: strerror(errno)))")
        }
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let (n, from) = SocketAddress.receiving { recvfrom(fd, &buffer, buffer.count, 0, $0, $1) }
        guard n >= 0 else {
            throw NodeNetError.state("no UDP reply from \(target): \(String(cString: strerror(errno)))")
        }
        return UDPResult(
            reply: String(decoding: buffer[0..<n], as: UTF8.self), from: from?.description ?? "?", bytes: n)
    }

    /// A socket made inside `namespace` (it keeps that namespace), with send and receive
    /// timeouts of `timeout` seconds.
    static func socket(
        in namespace: NamespaceReference, family: Int32, type: __socket_type, timeout: Int32
    ) throws -> Int32 {
        let fd: Int32 = try NetworkNamespace.run(in: namespace) {
            let fd = Glibc.socket(family, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw NodeNetError.state("socket: \(String(cString: strerror(errno)))") }
            return fd
        }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    /// The socket's own (or its peer's) address; a v4-mapped one shows as IPv4.
    static func name(of fd: Int32, peer: Bool) -> String {
        SocketAddress.receiving { peer ? getpeername(fd, $0, $1) : getsockname(fd, $0, $1) }.1?.description ?? "?"
    }

    /// `Ip: ForwDatagrams` from /proc/net/snmp in `namespace`: packets the IP stack forwarded.
    public static func forwardedDatagrams(in namespace: NamespaceReference) throws -> UInt64 {
        let text: String = try NetworkNamespace.run(in: namespace) {
            // /proc/net follows the reading thread's namespace.
            guard let t = try? String(contentsOfFile: "/proc/thread-self/net/snmp", encoding: .utf8) else {
                throw NodeNetError.state("cannot read /proc/thread-self/net/snmp")
            }
            return t
        }
        let lines = text.split(separator: "\n").filter { $0.hasPrefix("Ip:") }
        guard lines.count >= 2 else { throw NodeNetError.state("unexpected /proc/net/snmp") }
        let names = lines[0].split(separator: " ")
        let values = lines[1].split(separator: " ")
        guard let i = names.firstIndex(of: "ForwDatagrams"), i < values.count, let v = UInt64(values[i]) else {
            throw NodeNetError.state("no ForwDatagrams in /proc/net/snmp")
        }
        return v
    }
}

/// What `nodenetd lab probe --json` prints: every request and a count per answer.
public struct LabProbeReport: Codable, Sendable {
    public struct Request: Codable, Sendable {
        /// The answer's first part (`PodName: …`), nil when the request failed.
        public var answer: String?
        /// The client's own address (TCP).
        public var local: String?
        /// The peer the socket reports (getpeername for TCP, recvfrom for UDP).
        public var peer: String?
        public var error: String?
        /// How long the request took, from opening the socket to the answer or the error.
        public var milliseconds: Double?
        /// UDP: the reply's size in bytes.
        public var bytes: Int?

        public init(
            answer: String? = nil, local: String? = nil, peer: String? = nil, error: String? = nil,
            milliseconds: Double? = nil, bytes: Int? = nil
        ) {
            self.answer = answer
            self.local = local
            self.peer = peer
            self.error = error
            self.milliseconds = milliseconds
            self.bytes = bytes
        }
    }

    public var requests: [Request]
    public var answers: [String: Int]
    public var failures: Int

    public init(requests: [Request]) {
        self.requests = requests
        var answers: [String: Int] = [:]
        for r in requests { if let a = r.answer { answers[a, default: 0] += 1 } }
        self.answers = answers
        failures = requests.filter { $0.error != nil }.count
    }
}

extension LabProbeReport {
    /// `count` requests to `address:port` from inside `namespace`, one after another, each
    /// bounded by `timeout` seconds: HTTP (over `::ffff:address` with `v4Mapped`), or a UDP echo
    /// padded to `size` bytes. This whole process joins `cgroup` first (a socket takes its cgroup
    /// from its creator, and socket LB applies per cgroup).
    public static func run(
        from namespace: String, cgroup: String?, to address: IPAddress, port: UInt16, udp: Bool = false,
        size: Int? = nil, v4Mapped: Bool = false, count: Int, timeout: Int32
    ) throws -> LabProbeReport {
        // The whole process joins the cgroup: sockets take their cgroup from their creator.
        if let cgroup { try CgroupV2.add(pid: getpid(), to: cgroup) }
        var requests: [LabProbeReport.Request] = []
        for i in 0..<count {
            let start = ContinuousClock.now
            var request: LabProbeReport.Request
            do {
                if udp {
                    var payload = "probe \(i) "
                    if let size {
                        payload = String(
                            (payload + String(repeating: "x", count: max(0, size - payload.utf8.count))).prefix(size))
                    }
                    let r = try LabProbe.udp(
                        from: .named(namespace), to: address, port: port, payload: payload, timeout: timeout)
                    let answer = r.reply.components(separatedBy: " | ").first ?? r.reply
                    request = LabProbeReport.Request(answer: answer, peer: r.from, bytes: r.bytes)
                } else {
                    let r = try LabProbe.httpGet(
                        from: .named(namespace), to: address, port: port, timeout: timeout, v4Mapped: v4Mapped)
                    let answer = r.body.split(separator: "\n").first.map {
                        $0.components(separatedBy: " | ").first ?? String($0)
                    }
                    request = LabProbeReport.Request(answer: answer, local: r.local, peer: r.peer)
                }
            } catch {
                request = LabProbeReport.Request(error: "\(error)")
            }
            let elapsed = ContinuousClock.now - start
            let ms = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
            request.milliseconds = (ms * 1000).rounded() / 1000
            requests.append(request)
        }
        return LabProbeReport(requests: requests)
    }
}
