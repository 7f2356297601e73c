import CMnl

#if canImport(Glibc)
    import Glibc
#endif

/// Moves datagrams between a `NetlinkSocket` and the kernel. The real one is libmnl;
/// unit tests script the kernel's side with their own conformance.
protocol NetlinkTransport: Sendable {
    var portID: UInt32 { get }
    var fileDescriptor: Int32 { get }
    /// Sends one datagram (which may hold several messages).
    func send(_ bytes: [UInt8]) throws
    /// Receives one datagram into `buffer` (at least `receiveBufferSize` bytes) and returns
    /// its length; throws on failure (`ENOBUFS` on overrun).
    func receive(into buffer: inout [UInt8]) throws -> Int
}

/// libmnl socket bound in the namespace it was created in.
final class MnlTransport: NetlinkTransport, @unchecked Sendable {
    private let handle: OpaquePointer
    let portID: UInt32

    /// A raw netlink socket in the calling thread's namespace.
    static func openSocket(_ namespace: NamespaceReference) throws -> Int32 {
        let fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), SocketOption.netlinkRoute)
        guard fd >= 0 else {
            throw NetlinkError.syscall("socket(AF_NETLINK)", context: "opening netlink socket in \(namespace)")
        }
        return fd
    }

    convenience init(namespace: NamespaceReference, groups: MulticastGroups) throws {
        let fd: Int32 = try NetworkNamespace.run(in: namespace) { try Self.openSocket(namespace) }
        try self.init(fd: fd, namespace: namespace, groups: groups)
    }

    /// Takes over `fd`, a netlink socket created in `namespace`.
    init(fd: Int32, namespace: NamespaceReference, groups: MulticastGroups) throws {
        guard let handle = mnl_socket_fdopen(fd) else {
            let e = NetlinkError.syscall("mnl_socket_fdopen")
            close(fd)
            throw e
        }
        guard mnl_socket_bind(handle, groups.rawValue, 0) == 0 else {
            let e = NetlinkError.syscall("bind(AF_NETLINK)", context: "opening netlink socket in \(namespace)")
            mnl_socket_close(handle)
            throw e
        }
        for option in [SocketOption.extAck, SocketOption.capAck, SocketOption.getStrictCheck] {
            var one: Int32 = 1
            // A kernel without an option still works, with fewer details in errors.
            _ = setsockopt(mnl_socket_get_fd(handle), SocketOption.solNetlink, option, &one, 4)
        }
        self.handle = handle
        self.portID = mnl_socket_get_portid(handle)
    }

    deinit { mnl_socket_close(handle) }

    var fileDescriptor: Int32 { mnl_socket_get_fd(handle) }

    func send(_ bytes: [UInt8]) throws {
        let n = bytes.withUnsafeBytes { mnl_socket_sendto(handle, $0.baseAddress, $0.count) }
        guard n == bytes.count else { throw NetlinkError.syscall("sendto(netlink)") }
    }

    func receive(into buffer: inout [UInt8]) throws -> Int {
        while true {
            let n = buffer.withUnsafeMutableBytes { mnl_socket_recvfrom(handle, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw NetlinkError.syscall("recvfrom(netlink)")
            }
            return n
        }
    }
}
