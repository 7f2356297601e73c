/// The one owner of nodenet's key layout in etcd, under the cluster prefix:
///
///     <prefix>/nodes/<node>                      a node's registration (under its lease)
///     <prefix>/cidrs/<a.b.c.d>-<len>             the node that claimed a pod CIDR (under its lease)
///     <prefix>/endpoints/<node>/<namespace>/<name>  a pod published by its node (under its lease)
///     <prefix>/services/[<namespace>/]<name>      a service (written by `nodenetd cluster service apply`)
public struct ClusterKeys: Sendable, Hashable {
    public let prefix: String

    public init(prefix: String) { self.prefix = prefix }

    /// Everything nodenet keeps (what an agent watches).
    public var all: String { prefix + "/" }
    public var nodes: String { prefix + "/nodes/" }
    public var cidrs: String { prefix + "/cidrs/" }
    public var endpoints: String { prefix + "/endpoints/" }
    public var services: String { prefix + "/services/" }

    public func node(_ name: String) -> String { nodes + name }
    public func cidr(_ cidr: IPPrefix) -> String { cidrs + "\(cidr.address)-\(cidr.length)" }
    public func endpoints(of node: String) -> String { endpoints + node + "/" }
    /// `pod`: `namespace/name`.
    public func endpoint(node: String, pod: String) -> String { endpoints(of: node) + pod }
    public func service(_ name: String) -> String { services + name }

    /// What a key under the prefix is.
    public enum Entry: Sendable, Hashable {
        case node(String)
        case cidr(String)
        case endpoint(node: String, pod: String)
        case service(String)
    }

    /// nil for a key that is none of ours (or malformed: a name with '/' where none may be).
    public func entry(_ key: String) -> Entry? {
        func rest(_ p: String) -> [Substring]? {
            guard key.hasPrefix(p) else { return nil }
            let parts = key.dropFirst(p.count).split(separator: "/", omittingEmptySubsequences: false)
            return parts.contains(where: \.isEmpty) ? nil : parts
        }
        if let parts = rest(nodes), parts.count == 1 { return .node(String(parts[0])) }
        if let parts = rest(cidrs), parts.count == 1 { return .cidr(String(parts[0])) }
        if let parts = rest(services), parts.count <= 2 { return .service(parts.joined(separator: "/")) }
        if let parts = rest(endpoints), parts.count == 3 {
            return .endpoint(node: String(parts[0]), pod: "\(parts[1])/\(parts[2])")
        }
        return nil
    }
}
