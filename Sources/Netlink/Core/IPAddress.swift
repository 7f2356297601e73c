#if canImport(Glibc)
    import Glibc
#endif

/// Address families as netlink encodes them.
public enum AddressFamily: UInt8, Sendable, Hashable {
    case unspecified = 0
    case inet = 2
    case inet6 = 10
}

/// An IPv4 or IPv6 address. Stored inline (no heap allocation): decoding a 100 000-route
/// dump makes hundreds of thousands of these.
public struct IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let family: AddressFamily
    /// Bytes 0–7 of an IPv6 address, big-endian; 0 for IPv4.
    let high: UInt64
    /// Bytes 8–15 of an IPv6 address, or the IPv4 address in the low 32 bits, big-endian.
    let low: UInt64

    init(family: AddressFamily, high: UInt64, low: UInt64) {
        self.family = family
        self.high = high
        self.low = low
    }

    /// Parses dotted-quad IPv4 or RFC 4291 IPv6 text; nil when malformed.
    public init?(_ text: String) {
        if !text.contains(":") {
            var v4 = [UInt8](repeating: 0, count: 4)
            guard inet_pton(AF_INET, text, &v4) == 1 else { return nil }
            self.init(bytes: v4)
        } else {
            var v6 = [UInt8](repeating: 0, count: 16)
            guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
            self.init(bytes: v6)
        }
    }

    /// From raw network-order bytes (4 or 16).
    public init?(bytes: UnsafeRawBufferPointer) {
        switch bytes.count {
        case 4:
            self.init(family: .inet, high: 0, low: UInt64(UInt32(bigEndian: bytes.loadUnaligned(as: UInt32.self))))
        case 16:
            self.init(
                family: .inet6, high: UInt64(bigEndian: bytes.loadUnaligned(as: UInt64.self)),
                low: UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        default:
            return nil
        }
    }

    public init?<C: Collection<UInt8>>(bytes: C) {
        var hi: UInt64 = 0
        var lo: UInt64 = 0
        switch bytes.count {
        case 4:
            for b in bytes { lo = lo << 8 | UInt64(b) }
            self.init(family: .inet, high: 0, low: lo)
        case 16:
            var i = 0
            for b in bytes {
                if i < 8 { hi = hi << 8 | UInt64(b) } else { lo = lo << 8 | UInt64(b) }
                i += 1
            }
            self.init(family: .inet6, high: hi, low: lo)
        default:
            return nil
        }
    }

    /// An IPv4 address from its value in host order (`0x0A000201` is 10.0.2.1).
    public init(ipv4 value: UInt32) { self.init(family: .inet, high: 0, low: UInt64(value)) }

    public var isIPv4: Bool { family == .inet }

    /// Address length in bits (32 or 128).
    public var bitCount: Int { isIPv4 ? 32 : 128 }

    /// IPv4 value in host order (nil for IPv6).
    public var ipv4Value: UInt32? { isIPv4 ? UInt32(truncatingIfNeeded: low) : nil }

    /// Network-order bytes (4 or 16).
    public var bytes: [UInt8] {
        if isIPv4 { return (0..<4).map { UInt8(truncatingIfNeeded: low >> (24 - 8 * UInt64($0))) } }
        return (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64($0))) }
            + (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64($0))) }
    }

    /// The address with every bit after the first `length` cleared.
    func masked(to length: Int) -> IPAddress {
        if isIPv4 {
            let mask: UInt64 =
                length <= 0 ? 0 : (length >= 32 ? 0xFFFF_FFFF : (0xFFFF_FFFF << UInt64(32 - length)) & 0xFFFF_FFFF)
            return IPAddress(family: .inet, high: 0, low: low & mask)
        }
        let hiMask: UInt64 = length <= 0 ? 0 : (length >= 64 ? ~0 : ~UInt64(0) << UInt64(64 - length))
        let loBits = length - 64
        let loMask: UInt64 = loBits <= 0 ? 0 : (loBits >= 64 ? ~0 : ~UInt64(0) << UInt64(64 - loBits))
        return IPAddress(family: .inet6, high: high & hiMask, low: low & loMask)
    }

    public var description: String {
        if isIPv4 {
            // Dotted quad without inet_ntop's buffers: plans describe thousands of addresses.
            let v = UInt32(truncatingIfNeeded: low)
            return String(unsafeUninitializedCapacity: 15) { out in
                var i = 0
                for shift in [UInt32(24), 16, 8, 0] {
                    var octet = UInt8(truncatingIfNeeded: v >> shift)
                    if octet >= 100 {
                        out[i] = 48 + octet / 100
                        octet %= 100
                        out[i + 1] = 48 + octet / 10
                        octet %= 10
                        i += 2
                    } else if octet >= 10 {
                        out[i] = 48 + octet / 10
                        octet %= 10
                        i += 1
                    }
                    out[i] = 48 + octet
                    i += 1
                    if shift > 0 {
                        out[i] = 46  // "."
                        i += 1
                    }
                }
                return i
            }
        }
        var buffer = [CChar](repeating: 0, count: 64)
        let raw = bytes
        let af = isIPv4 ? AF_INET : AF_INET6
        _ = raw.withUnsafeBytes { inet_ntop(af, $0.baseAddress, &buffer, 64) }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        if a.family != b.family { return a.family.rawValue < b.family.rawValue }
        return a.high != b.high ? a.high < b.high : a.low < b.low
    }
}

/// An address with a prefix length: `10.0.2.0/24`, `10.0.2.32/32`, `fd00::/64`.
public struct IPPrefix: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let address: IPAddress
    public let length: UInt8

    public init?(_ address: IPAddress, length: Int) {
        guard length >= 0, length <= address.bitCount else { return nil }
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
            self.init(address, length: address.bitCount)
        }
    }

    public var family: AddressFamily { address.family }

    /// The prefix with host bits cleared.
    public var network: IPPrefix { IPPrefix(unchecked: address.masked(to: Int(length)), length: length) }

    init(unchecked address: IPAddress, length: UInt8) {
        self.address = address
        self.length = length
    }

    /// True when the address has no host bits set (`10.0.2.0/24`, not `10.0.2.5/24`).
    public var isNetwork: Bool { network.address == address }

    public func contains(_ other: IPAddress) -> Bool {
        guard other.family == family else { return false }
        return other.masked(to: Int(length)) == address.masked(to: Int(length))
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
