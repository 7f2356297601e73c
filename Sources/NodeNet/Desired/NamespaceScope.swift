/// Which namespace an operation works in.
public enum NamespaceScope: Sendable, Hashable, CustomStringConvertible {
    case node
    /// A pod's namespace, by the spec's `netns` string.
    case pod(String)

    public var description: String {
        switch self {
        case .node: return "node"
        case .pod(let netns): return "pod \(netns)"
        }
    }
}
