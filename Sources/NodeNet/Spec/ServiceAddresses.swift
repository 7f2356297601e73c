/// A service frontend: what clients connect to (`10.96.18.68:80/TCP`); 0.0.0.0 is a
/// NodePort's wildcard frontend (any address of a node).
public struct FrontendKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16
    public var `protocol`: TransportProtocol

    public init(address: IPAddress, port: UInt16, protocol: TransportProtocol) {
        self.address = address
        self.port = port
        self.protocol = `protocol`
    }

    public var description: String { "\(address):\(port)/\(`protocol`.rawValue)" }

    /// One word for the hasher (plans index tens of thousands of frontends).
    public func hash(into hasher: inout Hasher) { hasher.combine(packedKey(address, port, `protocol`)) }

    public static func < (a: FrontendKey, b: FrontendKey) -> Bool {
        (a.address, a.port, a.protocol.rawValue) < (b.address, b.port, b.protocol.rawValue)
    }
}

/// A backend: where a frontend's connections go.
public struct BackendAddress: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16
    public var `protocol`: TransportProtocol

    public init(address: IPAddress, port: UInt16, protocol: TransportProtocol) {
        (self.address, self.port, self.protocol) = (address, port, `protocol`)
    }

    public var description: String { "\(address):\(port)/\(`protocol`.rawValue)" }

    public func hash(into hasher: inout Hasher) { hasher.combine(packedKey(address, port, `protocol`)) }

    public static func < (a: BackendAddress, b: BackendAddress) -> Bool {
        (a.address, a.port, a.protocol.rawValue) < (b.address, b.port, b.protocol.rawValue)
    }
}

/// IPv4 address, port and protocol in one word (IPv6 addresses fold their halves in).
private func packedKey(_ address: IPAddress, _ port: UInt16, _ proto: TransportProtocol) -> UInt64 {
    let a = address.ipv4Value.map(UInt64.init) ?? UInt64(truncatingIfNeeded: address.hashValue)
    return a << 32 | UInt64(port) << 8 | UInt64(proto.ipProtocol)
}
