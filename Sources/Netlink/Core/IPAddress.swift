#if canImport(Glibc)
import Glibc
#endif

/// Address families as netlink encodes them.
public enum AddressFamily: UInt8, Sendable, Hashable {
    case unspecified = 0
    case inet = 2
    case inet6 = 10
}

/// An IPv4 or IPv6 address, stored as its network-order bytes.
public struct IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let family: AddressFamily
    public let bytes: [UInt8]

    /// Parses dotted-quad IPv4 or RFC 4291 IPv6 text; nil when malformed.
    public init?(_ text: String) {
        var v4 = [UInt8](repeating: 0, count: 4)
        if !text.contains(":") {
            guard inet_pton(AF_INET, text, &v4) == 1 else { return nil }
            family = .inet
            bytes = v4
            return
        }
        var v6 = [UInt8](repeating: 0, count: 16)
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        family = .inet6
        bytes = v6
    }

    /// From raw network-order bytes (4 or 16).
    public init?(bytes: some Collection<UInt8>) {
        switch bytes.count {
        case 4: family = .inet
        case 16: family = .inet6
        default: return nil
        }
        self.bytes = Array(bytes)
    }

    /// An IPv4 address from its value in host order (`0x0A000201` is 10.0.2.1).
    public init(ipv4 value: UInt32) {
        family = .inet
        bytes = [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
    }

    public var isIPv4: Bool { family == .inet }

    /// IPv4 value in host order (nil for IPv6).
    public var ipv4Value: UInt32? {
        guard isIPv4 else { return nil }
        return bytes.reduce(0) { $0 << 8 | UInt32($1) }
    }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: 64)
        let af = isIPv4 ? AF_INET : AF_INET6
        _ = bytes.withUnsafeBytes { inet_ntop(af, $0.baseAddress, &buffer, 64) }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        if a.family != b.family { return a.family.rawValue < b.family.rawValue }
        return a.bytes.lexicographicallyPrecedes(b.bytes)
    }
}

/// An address with a prefix length: `10.0.2.0/24`, `10.0.2.32/32`, `fd00::/64`.
public struct IPPrefix: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let address: IPAddress
    public let length: UInt8

    public init?(_ address: IPAddress, length: Int) {
        guard length >= 0, length <= address.bytes.count * 8 else { return nil }
        self.address = address
        self.length = UInt8(length)
    }

    /// Parses `A/N`; a bare address is a host prefix (/32 or /128).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPAddress(String(parts[0])) else { return nil }
        if parts.count == 2 {
            guard let length = Int(parts[1]), String(length) == parts[1] else { return nil }
            self.init(address, length: length)
        } else {
            self.init(address, length: address.bytes.count * 8)
        }
    }

    public var family: AddressFamily { address.family }

    /// The prefix with host bits cleared.
    public var network: IPPrefix {
        var bytes = address.bytes
        for i in 0..<bytes.count {
            let bitsHere = max(0, min(8, Int(length) - i * 8))
            bytes[i] &= bitsHere == 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - bitsHere))
        }
        return IPPrefix(IPAddress(bytes: bytes)!, length: Int(length))!
    }

    /// True when the address has no host bits set (`10.0.2.0/24`, not `10.0.2.5/24`).
    public var isNetwork: Bool { network.address == address }

    public func contains(_ other: IPAddress) -> Bool {
        guard other.family == family else { return false }
        return IPPrefix(other, length: Int(length))!.network.address == network.address
    }

    public func overlaps(_ other: IPPrefix) -> Bool {
        guard other.family == family else { return false }
        return length <= other.length ? contains(other.address) : other.contains(address)
    }

    public var description: String { "\(address)/\(length)" }

    public static func < (a: IPPrefix, b: IPPrefix) -> Bool {
        a.address != b.address ? a.address < b.address : a.length < b.length
    }
}
