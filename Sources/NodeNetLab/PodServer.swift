import Foundation

#if canImport(Glibc)
    import Glibc
    import NodeNet
#endif

/// The lab's pod workload: HTTP on port 80 answering `PodName: <name> | PodIP: eth0 <ip>/32`
/// (the seed's DaemonSet) and a UDP echo on port 53 (`PodName: <name> | <payload>`). Its sockets are created inside the pod's
/// namespace; it serves them on two threads of its own.
public final class PodServer: @unchecked Sendable {
    public let name: String
    public let ip: IPAddress
    private let tcp: Int32
    private let udp: Int32
    private let log: @Sendable (String) -> Void
    private let stopped = StopFlag()

    public var body: String { "PodName: \(name) | PodIP: eth0 \(ip)/32\n" }

    public init(
        name: String, ip: IPAddress, namespace: NamespaceReference, log: @escaping @Sendable (String) -> Void = { _ in }
    ) throws {
        self.name = name
        self.ip = ip
        self.log = log
        (tcp, udp) = try NetworkNamespace.run(in: namespace) {
            let tcp = try Self.bound(SOCK_STREAM, port: 80)
            do {
                return (tcp, try Self.bound(SOCK_DGRAM, port: 53))
            } catch {
                close(tcp)
                throw error
            }
        }
        guard listen(tcp, 128) == 0 else { throw NodeNetError.state("listen: \(String(cString: strerror(errno)))") }
    }

    deinit {
        close(tcp)
        close(udp)
    }

    private static func bound(_ type: __socket_type, port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw NodeNetError.state("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
        let rc = SocketAddress(IPAddress(ipv4: 0), port: port).withSockaddr { bind(fd, $0, $1) }
        guard rc == 0 else {
            let e = String(cString: strerror(errno))
            close(fd)
            throw NodeNetError.state("binding port \(port): \(e)")
        }
        return fd
    }

    /// Starts serving; returns at once.
    public func start() {
        Thread.detachNewThread { [self] in serveHTTP() }
        Thread.detachNewThread { [self] in serveUDP() }
    }

    /// Stops serving (the threads exit within their poll interval).
    public func stop() { stopped.stop() }

    private func ready(_ fd: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 100) > 0
    }

    private func serveHTTP() {
        let response =
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        while !stopped.isStopped {
            guard ready(tcp) else { continue }
            let (conn, peer) = SocketAddress.receiving { accept(tcp, $0, $1) }
            guard conn >= 0 else { continue }
            let line = readHTTPRequestLine(conn)
            // Log before answering: whoever got the answer can then find the log line.
            log("http \(peer?.description ?? "?") \(line)")
            _ = response.withCString { send(conn, $0, strlen($0), msgNoSignal) }
            close(conn)
        }
    }

    private func serveUDP() {
        var buffer = [UInt8](repeating: 0, count: 65_536)  // any datagram, also fragmented ones
        while !stopped.isStopped {
            guard ready(udp) else { continue }
            let (n, from) = SocketAddress.receiving { recvfrom(udp, &buffer, buffer.count, 0, $0, $1) }
            guard n >= 0, let peer = from else { continue }
            log("udp \(peer) \(n) bytes")
            let reply = Array("PodName: \(name) | ".utf8) + buffer[0..<n]
            _ = peer.withSockaddr { sendto(udp, reply, reply.count, 0, $0, $1) }
        }
    }
}
