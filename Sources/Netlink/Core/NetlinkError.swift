/// Every failure of the Netlink module: the kernel's errno, the kernel's own words
/// (extended ACK) when it gave any, the attribute it blamed, and what we were doing.
///
/// Two errors compare equal when their errno is equal, so callers can write
/// `catch let e as NetlinkError where e == NetlinkError(.exists)`.
public struct NetlinkError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The kernel answered the request with an error.
        case kernel
        /// A system call failed (socket, send, receive, namespace, sysctl).
        case system
        /// A dump stayed interrupted (`NLM_F_DUMP_INTR`) after every retry.
        case dumpInterrupted
        /// A message from the kernel could not be decoded.
        case malformed
    }

    public var errno: Errno
    public var kind: Kind
    /// The kernel's extended-ACK text, e.g. `Nexthop has invalid gateway`.
    public var kernelMessage: String?
    /// Byte offset, inside our request, of the attribute the kernel rejected.
    public var attributeOffset: Int?
    /// Type of the attribute at `attributeOffset`, decoded from our own request.
    public var attributeType: UInt16?
    /// A missing attribute the kernel asked for (`NLMSGERR_ATTR_MISS_TYPE`).
    public var missingAttributeType: UInt16?
    /// What we were doing, e.g. `adding route 10.0.1.0/24 via 172.18.0.3 dev eth0`.
    public var context: String?
    /// Free-form detail for system and decoding errors.
    public var detail: String?

    public init(_ errno: Errno, kind: Kind = .kernel, context: String? = nil, detail: String? = nil) {
        self.errno = errno
        self.kind = kind
        self.context = context
        self.detail = detail
    }

    /// A failed system call; reads `errno` of the calling thread.
    static func syscall(_ call: String, context: String? = nil) -> NetlinkError {
        NetlinkError(.current, kind: .system, context: context, detail: call)
    }

    static func malformed(_ what: String) -> NetlinkError {
        NetlinkError(.badMessage, kind: .malformed, detail: what)
    }

    public static func == (lhs: NetlinkError, rhs: NetlinkError) -> Bool { lhs.errno == rhs.errno }

    /// The same error with `context` set (the innermost context wins if one is already set).
    public func context(_ text: String) -> NetlinkError {
        var copy = self
        if copy.context == nil { copy.context = text } else { copy.context = "\(text): \(copy.context!)" }
        return copy
    }

    public var description: String {
        var parts = ""
        if let context { parts += context + ": " }
        if let detail, kind != .kernel { parts += detail + ": " }
        switch kind {
        case .dumpInterrupted:
            parts += "dump kept being interrupted by concurrent changes (NLM_F_DUMP_INTR)"
            return parts
        case .malformed:
            parts += "malformed netlink message"
            return parts
        case .kernel, .system:
            break
        }
        parts += kernelMessage ?? errno.message
        parts += " (\(errno.name))"
        if let attributeOffset {
            let type = attributeType.map { "attribute type \($0)" } ?? "attribute"
            parts += " [\(type) at byte \(attributeOffset) of the request]"
        }
        if let missingAttributeType {
            parts += " [missing attribute type \(missingAttributeType)]"
        }
        return parts
    }
}

extension NetlinkError {
    /// Lets `catch Errno.exists` style matching work: `case Errno.exists = error`.
    public static func ~= (pattern: Errno, error: NetlinkError) -> Bool { pattern == error.errno }
}
