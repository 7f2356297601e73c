import Foundation
import NodeNet

/// A node that is a network namespace: `eth0` 172.18.0.2/16, whose peer (in a "fabric"
/// namespace) holds the other nodes' addresses, plus one namespace per pod. Everything is
/// removed when the body ends, even when it throws.
public struct TestNode {
    public let node: String
    public let fabric: String
    public let pods: [String]
    public let stateDirectory: String

    public var namespace: NamespaceReference { .named(node) }

    public static func with<T>(pods count: Int, _ body: (TestNode) async throws -> T) async throws -> T {
        let labels = ["node", "fab"] + (0..<count).map { "p\($0)" }
        let state = FileManager.default.temporaryDirectory.appendingPathComponent(TestNames.unique("state")).path
        defer { try? FileManager.default.removeItem(atPath: state) }
        return try await withNamespaces(labels) { names in
            let t = TestNode(node: names[0], fabric: names[1], pods: Array(names.dropFirst(2)), stateDirectory: state)
            try t.wire()
            return try await body(t)
        }
    }

    /// Gives the node its eth0 on the fabric (again, after a test removed it).
    public func wire() throws {
        let n = try NetlinkSocket(namespace: namespace)
        try n.add(
            LinkConfiguration(
                name: "eth0", kind: .veth(peer: VethPeer(name: "eth0", namespace: .named(fabric))), mtu: 1500, up: true)
        )
        try n.setLink(named: "lo", LinkChange(up: true))
        let eth0 = try n.link(named: "eth0")!
        try n.add(InterfaceAddress(interfaceIndex: eth0.index, prefix: IPPrefix("172.18.0.2/16")))
        let f = try NetlinkSocket(namespace: .named(fabric))
        let feth = try f.link(named: "eth0")!
        try f.setLink(interfaceIndex: feth.index, LinkChange(up: true))
        for a in ["172.18.0.3/16", "172.18.0.4/16"] {
            try f.add(InterfaceAddress(interfaceIndex: feth.index, prefix: IPPrefix(a)!))
        }
        // The way back to this node's pods, as the other nodes' direct routes would give it.
        try f.add(
            Route(destination: IPPrefix("10.0.2.0/24"), gateway: IPAddress("172.18.0.2"), interfaceIndex: feth.index))
    }

    /// The seed's worker2 with `podCount` pods (10.0.2.32, 10.0.2.204, then 10.0.2.10…).
    public func spec(podCount: Int? = nil, remote: [RemoteNode]? = nil) -> NodeSpec {
        let ips = ["10.0.2.32", "10.0.2.204"] + (10..<200).filter { $0 != 32 && $0 != 184 }.map { "10.0.2.\($0)" }
        let names = ["net", "server"] + (2..<200).map { "pod\($0)" }
        let pods = (0..<(podCount ?? self.pods.count)).map { i in
            PodSpec(name: names[i], netns: self.pods[i], ip: IPAddress(ips[i])!)
        }
        let remote =
            remote ?? [
                RemoteNode(name: "control-plane", address: IPAddress("172.18.0.4"), podCIDR: IPPrefix("10.0.0.0/24")),
                RemoteNode(name: "worker", address: IPAddress("172.18.0.3"), podCIDR: IPPrefix("10.0.1.0/24")),
            ]
        return NodeSpec(
            node: LocalNode(
                name: "worker2", device: "eth0", address: IPAddress("172.18.0.2"), podCIDR: IPPrefix("10.0.2.0/24"),
                routerIP: IPAddress("10.0.2.184")),
            nativeRoutingCIDR: IPPrefix("10.0.0.0/8"), pods: pods, nodes: remote, stateDirectory: stateDirectory)
    }

    public func controller(_ spec: NodeSpec) throws -> NodeController {
        try NodeController(spec: spec, namespace: namespace)
    }

    /// Everything observable in a namespace, as sorted text lines (indices replaced by names).
    public static func snapshot(_ ns: NamespaceReference) throws -> [String] {
        let s = try NetlinkSocket(namespace: ns)
        let links = try s.links()
        let names = Dictionary(uniqueKeysWithValues: links.map { ($0.index, $0.name) })
        var lines = links.map {
            "link \($0.name) \($0.kind ?? "-") up=\($0.isUp) noarp=\($0.isNoARP) mtu=\($0.mtu ?? 0)"
        }
        lines += try s.addresses(family: .inet).map {
            "addr \(names[$0.interfaceIndex] ?? "?") \($0.prefix) \($0.scope)"
        }
        lines += try s.routes(RouteFilter(family: .inet, table: nil)).map { r in
            "route table \(r.table) \(r.summary(names: names)) type \(r.type) proto \(r.protocol)"
        }
        lines.append("ip_forward \(try Sysctl.read("net.ipv4.ip_forward", in: ns))")
        return lines.sorted()
    }

    public func ping(from podIndex: Int, _ address: String) throws -> Bool {
        try runTool(["ip", "netns", "exec", pods[podIndex], "ping", "-c", "1", "-w", "5", address]).status == 0
    }
}
