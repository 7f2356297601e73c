/// Errors of the NodeNet layer that are not the kernel's.
public enum NodeNetError: Error, Sendable, CustomStringConvertible {
    case state(String)
    case conflict(String)
    case missing(String)

    public var description: String {
        switch self {
        case .state(let s), .conflict(let s), .missing(let s): return s
        }
    }
}
