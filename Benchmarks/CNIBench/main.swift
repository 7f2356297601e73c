import AgentBenchSupport
// cni-bench: CNI ADD and DEL latency through the real libcni (the Go client of the CNI tests,
// in its `bench` mode: a long-running runtime's calls, no process start in the figures), for
// nodenet-cni against an in-process agent (BPF datapath) and, in the same run on the same
// node, containernetworking-plugins' ptp with host-local IPAM. Pods one after another and 10
// at a time; the two plugins alternate within every round; the ratios are per round.
//
//   swift build -c release && swift run -c release cni-bench [--pods N] [--rounds R] [--json]
//
// Needs root, golang-go and golang-github-appc-cni-dev, containernetworking-plugins
// (scripts/install-deps.sh), and the client (scripts/build-cni-client.sh).
import BPF
import BenchSupport
import Foundation
import NodeNet
import NodeNetAgent

var pods = 100
var rounds = 5
var json = false
var attach = AttachMode.auto
var arguments = BenchArguments()
while let option = arguments.next() {
    switch option {
    case "--pods": pods = arguments.int(in: 10...250, default: 100)
    case "--rounds": rounds = arguments.int(in: 1...50, default: 5)
    case "--json": json = true
    case "--attach": attach = AttachMode(rawValue: arguments.value()) ?? .auto
    default:
        print("usage: cni-bench [--pods N (10-250)] [--rounds R] [--attach auto|tcx|clsact] [--json]   (needs root)")
        exit(2)
    }
}

let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path
let client = root + "/.build/cni-client/cni-client"
let plugin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
    "nodenet-cni"
).path
let tag = "nncb\(getpid())"
let node = "\(tag)-node"
let fabric = "\(tag)-fab"
let work = "/tmp/\(tag)"
let bpffs = "/sys/fs/bpf/\(tag)"
func podNamespace(_ plugin: String, _ i: Int) -> String { "\(tag)-\(plugin)\(i)" }

@MainActor func cleanUp() {
    for i in 0..<pods {
        try? NetworkNamespace.delete(podNamespace("n", i))
        try? NetworkNamespace.delete(podNamespace("p", i))
    }
    try? NetworkNamespace.delete(node)
    try? NetworkNamespace.delete(fabric)
    try? FileManager.default.removeItem(atPath: work)
    BPFFS.remove(bpffs)
}

/// Runs the client in the node's namespace; returns the latencies in ms.
@MainActor func bench(_ conflist: String, op: String, parallel: Int, prefix: String, id: String) throws -> [Double] {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
    p.arguments = [
        "netns", "exec", node, client, "bench", "-conflist", conflist, "-path", "\(work)/bin:/usr/lib/cni", "-cache",
        "\(work)/cache", "-op", op, "-count", "\(pods)", "-parallel", "\(parallel)", "-netns-prefix",
        "/var/run/netns/\(prefix)", "-id", id,
    ]
    let pipe = Pipe()
    p.standardOutput = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any], object["ok"] as? Bool == true,
        let ms = (object["result"] as? [String: Any])?["ms"] as? [Double]
    else { throw BenchError("\(op) through \(conflist): \(String(decoding: data, as: UTF8.self))") }
    return ms
}

do {
    guard FileManager.default.isExecutableFile(atPath: client) else {
        throw BenchError("build the client first: scripts/build-cni-client.sh")
    }
    guard FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/ptp") else {
        throw BenchError("containernetworking-plugins is not installed (scripts/install-deps.sh)")
    }
    try NetworkNamespace.create(node)
    try NetworkNamespace.create(fabric)
    for i in 0..<pods {
        try NetworkNamespace.create(podNamespace("n", i))
        try NetworkNamespace.create(podNamespace("p", i))
    }
    let s = try NetlinkSocket(namespace: .named(node))
    try s.add(
        LinkConfiguration(
            name: "eth0", kind: .veth(peer: VethPeer(name: "eth0", namespace: .named(fabric))), mtu: 1500, up: true))
    try s.add(InterfaceAddress(interfaceIndex: try s.link(named: "eth0")!.index, prefix: IPPrefix("172.18.0.2/16")))
    try FileManager.default.createDirectory(atPath: work + "/bin", withIntermediateDirectories: true)
    try FileManager.default.createSymbolicLink(atPath: work + "/bin/nodenet-cni", withDestinationPath: plugin)
    let spec = NodeSpec(
        node: LocalNode(
            name: "bench", device: "eth0", address: IPAddress("172.18.0.2"), podCIDR: IPPrefix("10.0.2.0/24")),
        datapath: DatapathSettings(mode: .bpf, attachMode: attach), stateDirectory: work + "/state",
        bpffsDirectory: bpffs)
    try spec.jsonData().write(to: URL(fileURLWithPath: work + "/spec.json"))
    let socket = work + "/run/nodenet.sock"
    let (agent, run) = try startBenchAgent(specPath: work + "/spec.json", namespace: .named(node)) {
        $0.apiSocket = .path(socket)
    }
    func conflist(_ name: String, _ plugin: [String: Any]) throws -> String {
        let path = "\(work)/\(name).conflist"
        let list: [String: Any] = ["cniVersion": "1.0.0", "name": name, "plugins": [plugin]]
        try JSONSerialization.data(withJSONObject: list).write(to: URL(fileURLWithPath: path))
        return path
    }
    let nodenet = try conflist("nodenet", ["type": "nodenet-cni", "socket": socket])
    let ptp = try conflist(
        "ptp",
        [
            "type": "ptp", "ipMasq": false,
            "ipam": ["type": "host-local", "subnet": "10.1.0.0/16", "dataDir": work + "/host-local"],
        ])

    // samples[mode][plugin][op] pooled over rounds; ratios[mode][op] per round (nodenet p50 / ptp p50).
    var samples: [String: [String: [String: [Double]]]] = [:]
    var ratios: [String: [String: [Double]]] = [:]
    var nodenetP99: [String: [String: [Double]]] = [:]
    for round in 0..<rounds {
        for (mode, parallel) in [("sequential", 1), ("10 at a time", 10)] {
            var p50: [String: [String: Double]] = [:]
            // The plugins alternate which goes first, round by round.
            let order =
                round % 2 == 0
                ? [("nodenet", nodenet, "n"), ("ptp", ptp, "p")] : [("ptp", ptp, "p"), ("nodenet", nodenet, "n")]
            for op in ["add", "del"] {
                for (name, list, letter) in order {
                    let ms = try bench(
                        list, op: op, parallel: parallel, prefix: "\(tag)-\(letter)", id: "\(letter)\(round)x")
                    samples[mode, default: [:]][name, default: [:]][op, default: []] += ms
                    p50[name, default: [:]][op] = percentile(ms, 0.5)
                    if name == "nodenet" {
                        nodenetP99[mode, default: [:]][op, default: []].append(percentile(ms, 0.99))
                    }
                }
            }
            for op in ["add", "del"] {
                ratios[mode, default: [:]][op, default: []].append(p50["nodenet"]![op]! / p50["ptp"]![op]!)
            }
        }
    }
    agent.stop()
    _ = try? await run.value

    var report: [[String: Any]] = []
    for mode in ["sequential", "10 at a time"] {
        for op in ["add", "del"] {
            var row: [String: Any] = ["mode": mode, "op": op]
            for name in ["nodenet", "ptp"] {
                let xs = samples[mode]![name]![op]!
                row[name] = ["p50": percentile(xs, 0.5), "p99": percentile(xs, 0.99)]
            }
            let r = ratios[mode]![op]!
            row["ratio"] = ["median": median(r), "min": r.min()!, "max": r.max()!]
            report.append(row)
        }
    }
    // Issue 12's targets, judged round by round.
    let targets = [
        TargetVerdict("sequential ADD p50 nodenet / ptp", .atMost, 1.0, values: ratios["sequential"]!["add"]!),
        TargetVerdict("sequential ADD p99 ms", .atMost, 20, values: nodenetP99["sequential"]!["add"]!),
        TargetVerdict("sequential DEL p50 nodenet / ptp", .atMost, 1.0, values: ratios["sequential"]!["del"]!),
    ]
    if json {
        let verdicts = try JSONSerialization.jsonObject(with: JSONEncoder().encode(targets))
        let data = try JSONSerialization.data(
            withJSONObject: ["pods": pods, "rounds": rounds, "results": report, "targets": verdicts])
        print(String(decoding: data, as: UTF8.self))
    } else {
        print(
            "cni-bench: \(pods) pods per batch, \(rounds) rounds, through libcni (ms; ratio = nodenet p50 / ptp p50 per round)"
        )
        for row in report {
            let n = row["nodenet"] as! [String: Double]
            let p = row["ptp"] as! [String: Double]
            let r = row["ratio"] as! [String: Double]
            print(
                String(
                    format: "%-13@ %@  nodenet p50 %6.2f p99 %6.2f | ptp p50 %6.2f p99 %6.2f | ratio %.2f (%.2f-%.2f)",
                    (row["mode"] as! String), (row["op"] as! String).uppercased(), n["p50"]!, n["p99"]!, p["p50"]!,
                    p["p99"]!, r["median"]!, r["min"]!, r["max"]!))
        }
        printTargets(targets)
    }
    cleanUp()
} catch {
    cleanUp()
    print("cni-bench: \(error)")
    exit(1)
}
