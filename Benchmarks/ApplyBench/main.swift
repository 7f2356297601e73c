// apply-bench: `nodenetd apply` from empty and unchanged, against the same kernel work done
// with `ip -batch`, in the same run, on a throwaway node namespace.
//
//   swift run -c release apply-bench [--pods N] [--nodes M] [--repeat R] [--json]
//
// Defaults: 250 pods, 1 000 remote nodes, 3 runs (medians). The baseline creates the same
// host pair, endpoint veths (peer straight into each pod namespace), addresses, routes and
// sysctls: one `ip -n NODE -batch` for the node, one `ip -n POD -batch` per pod (iproute2
// has no way to reach several namespaces from one batch), and the same sysctl writes.
import BenchSupport
import Foundation
import NodeNet

struct Options {
    var pods = 250, nodes = 1000, repeats = 3, json = false
    init(_ args: [String]) throws {
        var i = 0
        func value() throws -> Int {
            i += 1
            guard i < args.count, let n = Int(args[i]), n >= 0 else { throw Usage() }
            return n
        }
        while i < args.count {
            switch args[i] {
            case "--pods": pods = try value()
            case "--nodes": nodes = try value()
            case "--repeat": repeats = max(1, min(20, try value()))
            case "--json": json = true
            default: throw Usage()
            }
            i += 1
        }
        guard pods <= 250, nodes <= 60000 else { throw Usage() }
    }
}

struct Usage: UsageError {
    static let text = """
        usage: apply-bench [--pods N] [--nodes M] [--repeat R] [--json]
          Applies a node spec with N pods (<= 250) and M remote nodes to a fresh namespace node, then
          re-applies it unchanged, and does the same kernel work with ip -batch. Needs root.
        """
}

/// `ip ARGS -batch` with `input`; fails unless it exits 0.
func ipBatch(_ args: [String], input: String) throws {
    let status = try ip(args, batch: input)
    guard status == 0 else { throw BenchError("ip \(args.joined(separator: " ")) -batch failed (\(status))") }
}

/// A node namespace with eth0 (peer in a fabric namespace) and `pods` empty pod namespaces.
struct Scratch {
    let node: String, fabric: String, pods: [String], state: String

    static func make(pods: Int) throws -> Scratch {
        let tag = "nnab\(getpid())-\(UInt16.random(in: 0...UInt16.max))"
        let s = Scratch(
            node: "\(tag)-node", fabric: "\(tag)-fab", pods: (0..<pods).map { "\(tag)-p\($0)" },
            state: "/tmp/\(tag)-state")
        for name in [s.node, s.fabric] + s.pods { try NetworkNamespace.create(name) }
        let n = try NetlinkSocket(namespace: .named(s.node))
        try n.add(
            LinkConfiguration(
                name: "eth0", kind: .veth(peer: VethPeer(name: "eth0", namespace: .named(s.fabric))), mtu: 1500,
                up: true))
        try n.add(
            InterfaceAddress(interfaceIndex: try n.link(named: "eth0")!.index, prefix: IPPrefix("172.18.0.2/16")))
        return s
    }

    func remove() {
        for name in [node, fabric] + pods { try? NetworkNamespace.delete(name) }
        try? FileManager.default.removeItem(atPath: state)
    }

    func spec(nodes: Int) -> NodeSpec {
        NodeSpec(
            node: LocalNode(
                name: "bench", device: "eth0", address: IPAddress("172.18.0.2"), podCIDR: IPPrefix("10.0.2.0/24")),
            pods: pods.enumerated().map { i, ns in
                PodSpec(name: "pod\(i)", netns: ns, ip: IPAddress(ipv4: 0x0A00_0202 + UInt32(i)))
            },
            nodes: (0..<nodes).map { i in
                RemoteNode(
                    name: "n\(i)", address: IPAddress(ipv4: 0xAC12_1000 + UInt32(i)),
                    podCIDR: IPPrefix(IPAddress(ipv4: 0x0B00_0000 + UInt32(i) << 8), length: 24)!)
            },
            stateDirectory: state)
    }
}

/// The same kernel objects as `apply`, made with ip -batch (and the same sysctl writes).
func baseline(_ s: Scratch, _ spec: NodeSpec) throws {
    let desired = DesiredState(spec: spec, deviceMTU: 1500)
    var node = [
        "link add cilium_host mtu 1500 type veth peer name cilium_net mtu 1500",
        "link set cilium_host up arp off", "link set cilium_net up arp off",
        "address add \(spec.node.routerIP)/32 dev cilium_host scope link",
    ]
    for r in [desired.routerRoute, desired.podCIDRRoute] { node.append("route add \(r.description) proto 207") }
    for e in desired.endpoints {
        node.append("link add \(e.hostDevice) mtu 1500 type veth peer name eth0 mtu 1500 netns \(e.pod.netns)")
        node.append("link set \(e.hostDevice) up")
    }
    try ipBatch(["-n", s.node], input: node.joined(separator: "\n") + "\n")
    for e in desired.endpoints {
        let pod =
            ["link set eth0 up", "address add \(e.pod.ip)/32 dev eth0"]
            + e.podRoutes.map { "route add \($0.description) proto 207" }
        try ipBatch(["-n", e.pod.netns], input: pod.joined(separator: "\n") + "\n")
    }
    let (written, error) = Sysctl.write(desired.sysctls.map { ($0.key, $0.value) }, in: .named(s.node))
    guard error == nil, written == desired.sysctls.count else {
        throw BenchError("sysctls: \(error.map { "\($0)" } ?? "")")
    }
    let rest =
        desired.endpoints.map { "route add \($0.podRoute.description) proto 207" }
        + desired.directRoutes.map { "route add \($0.description) proto 207" }
    try ipBatch(["-n", s.node], input: rest.joined(separator: "\n") + "\n")
}

struct Result: Encodable {
    var pods: Int, nodes: Int
    var applySeconds: Double, reapplySeconds: Double, ipBatchSeconds: Double
    /// Derived, stored so the JSON carries it.
    var applyToIPBatchRatio = 0.0
    var targets: [TargetVerdict] = []

    init(pods: Int, nodes: Int, applySeconds: Double, reapplySeconds: Double, ipBatchSeconds: Double) {
        (self.pods, self.nodes) = (pods, nodes)
        (self.applySeconds, self.reapplySeconds, self.ipBatchSeconds) = (applySeconds, reapplySeconds, ipBatchSeconds)
        applyToIPBatchRatio = applySeconds / ipBatchSeconds
    }
}

runBenchmark("apply-bench", usage: Usage.text) {
    let o = try Options(Array(CommandLine.arguments.dropFirst()))
    var apply: [Double] = []
    var reapply: [Double] = []
    var batch: [Double] = []
    for _ in 0..<o.repeats {
        let s = try Scratch.make(pods: o.pods)
        defer { s.remove() }
        let spec = s.spec(nodes: o.nodes)
        let controller = try NodeController(spec: spec, namespace: .named(s.node))
        var report: ApplyReport?
        apply.append(try seconds { report = try controller.apply() })
        guard report?.verified == true, report?.changes.isEmpty == false else {
            throw BenchError("apply did not verify")
        }
        reapply.append(try seconds { report = try controller.apply() })
        guard report?.changes.isEmpty == true else {
            throw BenchError("re-apply changed \(report?.changes.count ?? -1) things")
        }
        _ = try controller.teardown()

        let b = try Scratch.make(pods: o.pods)
        defer { b.remove() }
        batch.append(try seconds { try baseline(b, b.spec(nodes: o.nodes)) })
        // The baseline must have built the same state: a plan against it is empty.
        let check = try NodeController(spec: b.spec(nodes: o.nodes), namespace: .named(b.node)).plan()
        guard check.isEmpty else { throw BenchError("baseline differs from apply: \(check.changes.prefix(3))") }
    }
    var r = Result(
        pods: o.pods, nodes: o.nodes, applySeconds: median(apply), reapplySeconds: median(reapply),
        ipBatchSeconds: median(batch))
    r.targets = [
        TargetVerdict("apply / ip -batch (in-round)", .atMost, 2, values: zip(apply, batch).map { $0 / $1 }),
        TargetVerdict("no-op re-apply seconds", .atMost, 0.050, values: reapply),
    ]
    if o.json {
        try printJSON(r)
    } else {
        print(String(format: "%d pods, %d remote nodes (medians of %d runs)", r.pods, r.nodes, o.repeats))
        print(String(format: "  nodenet apply from empty   %.3f s", r.applySeconds))
        print(
            String(
                format: "  same work with ip -batch   %.3f s   (apply / ip -batch = %.2f)",
                r.ipBatchSeconds, r.applyToIPBatchRatio))
        print(String(format: "  nodenet re-apply, no-op    %.3f s", r.reapplySeconds))
        printTargets(r.targets)
    }
}
