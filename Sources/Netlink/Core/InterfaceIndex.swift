/// A network interface's index in its namespace (`ifindex`): `Link.index`, and what every
/// other object names its link by (`interfaceIndex`). Distinct from other integers, so an
/// index cannot be passed where a priority, a handle or a file descriptor is wanted; integer
/// literals still work (`interfaceIndex: 2`).
public struct InterfaceIndex: RawRepresentable, Hashable, Comparable, Sendable, ExpressibleByIntegerLiteral,
    CustomStringConvertible
{
    public let rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }
    public init(_ rawValue: Int32) { self.rawValue = rawValue }
    public init(integerLiteral value: Int32) { rawValue = value }

    /// The index as the kernel's unsigned fields and BPF helpers take it.
    public var unsigned: UInt32 { UInt32(bitPattern: rawValue) }

    public var description: String { "\(rawValue)" }

    public static func < (a: InterfaceIndex, b: InterfaceIndex) -> Bool { a.rawValue < b.rawValue }
}
