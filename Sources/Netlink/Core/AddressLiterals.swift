/// Text that is not an address or prefix, with the text and what was expected.
public struct AddressSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    public let text: String
    public let expected: String

    public var description: String { "\"\(text)\" is not \(expected)" }
}

extension IPAddress: ExpressibleByStringLiteral {
    /// A literal address: `let gateway: IPAddress = "172.18.0.3"`. A malformed literal is a
    /// programming error and stops the program; parse text from elsewhere with `init(parsing:)`.
    public init(stringLiteral text: String) {
        guard let address = IPAddress(text) else { preconditionFailure("\"\(text)\" is not an IPv4 or IPv6 address") }
        self = address
    }

    /// Parses dotted-quad IPv4 or RFC 4291 IPv6 text; throws `AddressSyntaxError` when malformed.
    public init(parsing text: String) throws {
        guard let address = IPAddress(text) else {
            throw AddressSyntaxError(text: text, expected: "an IPv4 or IPv6 address")
        }
        self = address
    }
}

extension IPPrefix: ExpressibleByStringLiteral {
    /// A literal prefix: `let cidr: IPPrefix = "10.0.1.0/24"` (a bare address is a host
    /// prefix). A malformed literal stops the program; parse other text with `init(parsing:)`.
    public init(stringLiteral text: String) {
        guard let prefix = IPPrefix(text) else {
            preconditionFailure("\"\(text)\" is not an IP prefix (address/length)")
        }
        self = prefix
    }

    /// Parses `A/N` (a bare address is a host prefix); throws `AddressSyntaxError` when malformed.
    public init(parsing text: String) throws {
        guard let prefix = IPPrefix(text) else {
            throw AddressSyntaxError(text: text, expected: "an IP prefix (address/length, e.g. 10.0.1.0/24)")
        }
        self = prefix
    }

    /// The host prefix of `address`: /32 for IPv4, /128 for IPv6.
    public init(host address: IPAddress) {
        self.init(unchecked: address, length: UInt8(address.bitCount))
    }
}
