import Foundation

#if canImport(Glibc)
    import Glibc
#endif

// The minimal HTTP/1.1 the lab's pod servers speak: read one request's first line, answer,
// close. (The agent's servers read whole requests: NodeNetAgent's HTTPServer.)

/// Reads an HTTP request's head from `fd` (at most 16 KiB, 2 s) and returns its first line.
package func readHTTPRequestLine(_ fd: Int32) -> String {
    var tv = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var request: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 2048)
    while request.count < 16384 {
        let n = read(fd, &buffer, buffer.count)
        if n <= 0 { break }
        request += buffer[0..<n]
        if request.count >= 4, request.suffix(4) == [13, 10, 13, 10] { break }
    }
    return String(decoding: request.prefix { $0 != 13 }, as: UTF8.self)
}

/// `MSG_NOSIGNAL`: a peer that went away yields EPIPE, not a process-killing SIGPIPE.
package let msgNoSignal: Int32 = 0x4000
