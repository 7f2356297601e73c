import FoundationEssentials
import NodeNetJSON

#if canImport(Glibc)
    import Glibc
#endif

/// HTTP/1.1 over the agent's unix socket: one request, one answer, connection closed.
struct AgentClient {
    let socket: String

    struct Answer {
        var status: Int
        var body: [UInt8]
        var json: JSONValue? { try? JSONValue.parse(Data(body)) }
    }

    enum Failure: Error {
        /// Nobody listens (no socket file, connection refused): the agent is not running.
        case notRunning(String)
        /// Connected, but no complete answer in time.
        case noAnswer(String)
    }

    /// Sends the request; waits at most `timeout` seconds for the answer.
    func send(_ method: String, _ path: String, body: [UInt8] = [], timeout: Int = 60) throws(Failure) -> Answer {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .notRunning("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(socket.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw .notRunning("the socket path \(socket) is too long")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            throw .notRunning("cannot connect to the nodenet agent at \(socket): \(String(cString: strerror(errno)))")
        }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let request =
            Array(
                "\(method) \(path) HTTP/1.1\r\nHost: nodenet\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
                    .utf8) + body
        var sent = 0
        while sent < request.count {
            let n = request.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, request.count - sent, 0x4000) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .noAnswer("sending to \(socket): \(String(cString: strerror(errno)))") }
            sent += n
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while response.count < 16 << 20 {
            let n = Glibc.read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n < 0 {
                throw .noAnswer("the nodenet agent at \(socket) did not answer within \(timeout) s")
            }
            if n == 0 { break }
            response += buffer[0..<n]
        }
        guard let split = response.firstRange(of: [13, 10, 13, 10]) else {
            throw .noAnswer("the nodenet agent at \(socket) closed the connection without an answer")
        }
        let head = String(decoding: response[..<split.lowerBound], as: UTF8.self)
        let status = head.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return Answer(status: status, body: Array(response[split.upperBound...]))
    }
}
