import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// An IPv4 address and port as socket calls take and return them: `sockaddr_in`, or
/// `sockaddr_in6` with the v4-mapped form `::ffff:a.b.c.d` that dual-stack sockets use.
public struct SocketAddress: Sendable, Equatable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16
    /// Spelled for an IPv6 socket (`::ffff:a.b.c.d`).
    public var v4Mapped: Bool

    public init(_ address: IPAddress, port: UInt16, v4Mapped: Bool = false) {
        self.address = address
        self.port = port
        self.v4Mapped = v4Mapped
    }

    /// The socket family this spelling needs.
    public var family: Int32 { v4Mapped ? AF_INET6 : AF_INET }

    public var description: String { "\(address):\(port)" }

    /// Calls `body` with the C address and its length (bind, connect, sendto).
    public func withSockaddr<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> T) rethrows -> T {
        let v4 = address.ipv4Value ?? 0
        if v4Mapped {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &a.sin6_addr) { b in
                b[10] = 0xff
                b[11] = 0xff
                withUnsafeBytes(of: v4.bigEndian) { for i in 0..<4 { b[12 + i] = $0[i] } }
            }
            return try withUnsafePointer(to: &a) {
                try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    try body($0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = v4.bigEndian
        return try withUnsafePointer(to: &a) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                try body($0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
    }

    /// Calls `body` with room for an address (recvfrom, accept, getpeername, getsockname fill
    /// it in) and returns its result with the address read back: nil when it is neither IPv4
    /// nor v4-mapped IPv6.
    public static func receiving<T>(
        _ body: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) throws -> T
    ) rethrows -> (T, SocketAddress?) {
        var storage = sockaddr_in6()  // room for either family
        var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        let result = try withUnsafeMutablePointer(to: &storage) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, &length) }
        }
        return (result, SocketAddress(storage))
    }

    init?(_ storage: sockaddr_in6) {
        var storage = storage
        switch Int32(storage.sin6_family) {
        case AF_INET:
            let a = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee }
            }
            self.init(IPAddress(ipv4: UInt32(bigEndian: a.sin_addr.s_addr)), port: UInt16(bigEndian: a.sin_port))
        case AF_INET6:
            let b = withUnsafeBytes(of: storage.sin6_addr) { Array($0) }
            guard b[0..<10].allSatisfy({ $0 == 0 }), b[10] == 0xff, b[11] == 0xff else { return nil }
            let v4 = b[12..<16].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            self.init(IPAddress(ipv4: v4), port: UInt16(bigEndian: storage.sin6_port), v4Mapped: true)
        default:
            return nil
        }
    }
}
