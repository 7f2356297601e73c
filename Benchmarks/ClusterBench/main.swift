// cluster-bench: cluster mode on a real etcd, in two parts.
//
//   scale: one real agent (in-process, kernel datapath) and 1 000 simulated nodes (their keys
//          only, written as their agents would): time from the first registration to all
//          1 000 direct routes in the kernel, then 100 of them expired at once (lease revoked,
//          grace 0) until their routes are gone, then single joins (registration → route).
//          Baseline in the same round, on a second node: `apply` of a spec that lists the same
//          1 000 nodes (what a cluster without etcd does); the ratio is the agent's part (after
//          the last registration was written) to it. The two paths alternate first.
//   lab:   `nodenetd lab up --control-plane etcd` with 20 nodes, every node running its agent;
//          a node registers (keys only) and the time until its route is on every one of the
//          20 nodes is taken, `--joins` times; the agents' CPU and RSS over the joins.
//
//   swift build -c release --product cluster-bench && swift build -c release --product nodenetd
//   .build/release/cluster-bench [--part scale|lab|all] [--nodes 1000] [--expire 100] [--rounds 5]
//                                [--lab-nodes 20] [--joins 30] [--json]
//
// Needs root and etcd-server (scripts/install-deps.sh). etcd listens only on a unix socket in
// a temporary directory (scale) or inside the lab's namespaces (lab).
import AgentBenchSupport
import BenchSupport
import Etcd
import Foundation
import NodeNet
import NodeNetAgent

var part = "all"
var simulated = 1000
var expiring = 100
var rounds = 5
var labNodes = 20
var joins = 30
var json = false
var arguments = BenchArguments()
while let option = arguments.next() {
    switch option {
    case "--part": part = arguments.value()
    case "--nodes": simulated = arguments.int(in: 100...4000, default: 1000)
    case "--expire": expiring = arguments.int(in: 1...1000, default: 100)
    case "--rounds": rounds = arguments.int(in: 1...50, default: 5)
    case "--lab-nodes": labNodes = arguments.int(in: 2...60, default: 20)
    case "--joins": joins = arguments.int(in: 5...200, default: 30)
    case "--json": json = true
    default:
        print(
            "usage: cluster-bench [--part scale|lab|all] [--nodes N] [--expire N] [--rounds R] [--lab-nodes N] [--joins N] [--json]   (needs root)"
        )
        exit(2)
    }
}
guard ["scale", "lab", "all"].contains(part), expiring < simulated else {
    print("cluster-bench: --part is scale, lab or all; --expire must be below --nodes")
    exit(2)
}

let tag = "nnclb\(getpid())"
let work = "/tmp/\(tag)"
let nodenetd = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    .appendingPathComponent("nodenetd").path

func elapsed(since start: ContinuousClock.Instant) -> Double {
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

func ms(_ s: Double) -> String { String(format: "%.1f ms", s * 1000) }

/// Polls `condition` every millisecond for at most `seconds`.
func waitUntil(_ what: String, seconds: Double = 60, _ condition: () throws -> Bool) throws {
    let start = ContinuousClock.now
    while !(try condition()) {
        guard elapsed(since: start) < seconds else { throw BenchError("timed out waiting for \(what)") }
        usleep(1000)
    }
}

/// The direct routes (nodenet's, with a next hop on eth0, not the node's own pod CIDR through
/// cilium_host) in a namespace.
func directRoutes(_ socket: NetlinkSocket) throws -> Set<IPPrefix> {
    let routes = try socket.routes(RouteFilter(protocol: NodeNetNames.routeProtocol))
    return Set(routes.filter { $0.gateway.map { $0.ipv4Value! >> 16 == 0xAC12 } ?? false }.map(\.destination))
}

/// Simulated node `i`: an address on the fabric and a pod CIDR of its own.
func simulatedNode(_ i: Int, name: String = "sim") -> ClusterNodeRecord {
    ClusterNodeRecord(
        name: "\(name)\(i)", address: IPAddress(ipv4: 0xAC12_0000 | UInt32(1 + i / 200) << 8 | UInt32(1 + i % 200)),
        podCIDR: IPPrefix(IPAddress(ipv4: 0x0A00_0000 | UInt32(1 + i / 256) << 16 | UInt32(i % 256) << 8), length: 24)!,
        bootID: "bench", version: "bench")
}

/// Writes records with `concurrency` requests in flight.
func register(
    _ client: any EtcdClient, _ keys: ClusterKeys, _ records: [ClusterNodeRecord], lease: (Int) -> EtcdLease.ID?,
    concurrency: Int = 16
) throws {
    let leases = records.indices.map(lease)
    try blocking {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<concurrency {
                group.addTask {
                    for i in stride(from: lane, to: records.count, by: concurrency) {
                        try await client.put(keys.node(records[i].name), value: records[i].encoded(), lease: leases[i])
                    }
                }
            }
            try await group.waitForAll()
        }
    }
}

// MARK: scale

/// Median put and read of one key, seconds.
var clientFigures = (put: 0.0, read: 0.0)

struct ScaleRound: Encodable {
    var convergeSeconds: Double
    var writeSeconds: Double
    var afterLastWriteSeconds: Double
    var expireSeconds: Double
    var specApplySeconds: Double
    var ratio: Double
}

@MainActor func runScale() throws -> (rounds: [ScaleRound], joins: [Double]) {
    let node = "\(tag)-node"
    let baseline = "\(tag)-base"
    let fabric = "\(tag)-fab"
    for ns in [node, baseline, fabric] { try NetworkNamespace.create(ns) }
    defer { for ns in [node, baseline, fabric] { try? NetworkNamespace.delete(ns) } }
    for (ns, peer) in [(node, "n1"), (baseline, "n2")] {
        let s = try NetlinkSocket(namespace: .named(ns))
        try s.add(
            LinkConfiguration(
                name: "eth0", kind: .veth(peer: VethPeer(name: peer, namespace: .named(fabric))), mtu: 1500, up: true))
        try s.add(InterfaceAddress(interfaceIndex: try s.link(named: "eth0")!.index, prefix: IPPrefix("172.18.0.2/16")))
    }
    // etcd on a unix socket in the work directory, nothing on the machine's ports.
    let etcdDirectory = work + "/etcd"
    try FileManager.default.createDirectory(atPath: etcdDirectory, withIntermediateDirectories: true)
    let etcd = Process()
    etcd.executableURL = URL(fileURLWithPath: "/usr/bin/etcd")
    etcd.currentDirectoryURL = URL(fileURLWithPath: etcdDirectory)
    etcd.arguments = [
        "--name", "b0", "--data-dir", etcdDirectory + "/data", "--listen-client-urls", "unix://client:2379",
        "--advertise-client-urls", "unix://client:2379", "--listen-peer-urls", "unix://peer:2380",
        "--initial-advertise-peer-urls", "unix://peer:2380", "--initial-cluster", "b0=unix://peer:2380",
    ]
    etcd.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
    etcd.standardError = FileHandle(forWritingAtPath: "/dev/null")
    try etcd.run()
    defer {
        kill(etcd.processIdentifier, SIGKILL)
        etcd.waitUntilExit()
    }
    let settings = ClusterSettings(
        endpoints: ["unix://\(etcdDirectory)/client:2379"], prefix: "/nodenet/bench", leaseTTL: 60, nodeDeleteGrace: 0)
    let keys = ClusterKeys(prefix: settings.prefix)
    let client = try NodeAgent.makeGatewayClient(settings)
    try waitUntil("etcd", seconds: 20) { (try? blocking { try await client.range(prefix: "/") }) != nil }

    let local = LocalNode(
        name: "bench", device: "eth0", address: IPAddress("172.18.0.2"), podCIDR: IPPrefix("10.0.2.0/24"))
    let spec = NodeSpec(
        node: local, nativeRoutingCIDR: IPPrefix("10.0.0.0/8"), stateDirectory: work + "/state", cluster: settings)
    try spec.jsonData().write(to: URL(fileURLWithPath: work + "/spec.json"))
    let (agent, run) = try startBenchAgent(specPath: work + "/spec.json", namespace: .named(node))
    defer {
        agent.stop()
        run.cancel()
    }
    let nodeSocket = try NetlinkSocket(namespace: .named(node))
    let records = (0..<simulated).map { simulatedNode($0) }
    let baselineSpec = NodeSpec(
        node: local, nativeRoutingCIDR: IPPrefix("10.0.0.0/8"), nodes: records.map(\.remoteNode),
        stateDirectory: work + "/state-baseline")
    var emptyBaseline = baselineSpec
    emptyBaseline.nodes = []

    // The client itself: sequential puts and reads of one record on the unix socket.
    var puts: [Double] = []
    var reads: [Double] = []
    let probe = simulatedNode(9999, name: "probe")
    for _ in 0..<50 {
        let t = ContinuousClock.now
        try register(client, keys, [probe], lease: { _ in nil }, concurrency: 1)
        puts.append(elapsed(since: t))
        let r = ContinuousClock.now
        _ = try blocking { try await client.get(keys.node(probe.name)) }
        reads.append(elapsed(since: r))
    }
    try blocking { _ = try await client.delete(keys.node(probe.name)) }
    clientFigures = (median(puts), median(reads))

    var results: [ScaleRound] = []
    var joinSamples: [Double] = []
    for round in 0..<rounds {
        var result = ScaleRound(
            convergeSeconds: 0, writeSeconds: 0, afterLastWriteSeconds: 0, expireSeconds: 0, specApplySeconds: 0,
            ratio: 0)
        func clusterPath() throws {
            let (kept, expiry) = try blocking {
                (try await client.grantLease(ttl: 600), try await client.grantLease(ttl: 600))
            }
            let start = ContinuousClock.now
            let keptCount = simulated - expiring
            try register(client, keys, records, lease: { $0 < keptCount ? kept.id : expiry.id })
            result.writeSeconds = elapsed(since: start)
            let written = ContinuousClock.now
            try waitUntil("\(simulated) routes") { try directRoutes(nodeSocket).count == simulated }
            result.convergeSeconds = elapsed(since: start)
            result.afterLastWriteSeconds = elapsed(since: written)
            let revoked = ContinuousClock.now
            try blocking { try await client.revokeLease(expiry.id) }
            try waitUntil("\(expiring) routes to go") { try directRoutes(nodeSocket).count == simulated - expiring }
            result.expireSeconds = elapsed(since: revoked)
            // Single joins on top of the big cluster: registration written → route in the kernel.
            let extra = try blocking { try await client.grantLease(ttl: 600) }
            for j in 0..<4 {
                let record = simulatedNode(simulated + round * 4 + j)
                let t = ContinuousClock.now
                try register(client, keys, [record], lease: { _ in extra.id }, concurrency: 1)
                try waitUntil("a single join's route") { try directRoutes(nodeSocket).contains(record.podCIDR) }
                joinSamples.append(elapsed(since: t))
            }
            try blocking {
                try await client.revokeLease(kept.id)
                try await client.revokeLease(extra.id)
            }
            try waitUntil("the cluster's routes to go") { try directRoutes(nodeSocket).isEmpty }
        }
        func specPath() throws {
            result.specApplySeconds = try seconds {
                let report = try NodeController(spec: baselineSpec, namespace: .named(baseline)).apply()
                guard report.verified else { throw BenchError("the baseline apply did not verify") }
            }
            _ = try NodeController(spec: emptyBaseline, namespace: .named(baseline)).apply()
        }
        if round % 2 == 0 {
            try clusterPath()
            try specPath()
        } else {
            try specPath()
            try clusterPath()
        }
        // The agent's part (after the last registration was written) against the spec apply.
        result.ratio = result.afterLastWriteSeconds / result.specApplySeconds
        results.append(result)
        if !json {
            print(
                "round \(round + 1): \(simulated) nodes converged \(ms(result.convergeSeconds)) (writes \(ms(result.writeSeconds)), after the last \(ms(result.afterLastWriteSeconds))), \(expiring) expired \(ms(result.expireSeconds)); spec apply \(ms(result.specApplySeconds)); ratio \(String(format: "%.2f", result.ratio))"
            )
        }
    }
    await_shutdown(client)
    return (results, joinSamples)
}

func await_shutdown(_ client: any EtcdClient) { _ = try? blocking { await client.shutdown() } }

// MARK: lab

struct LabResult: Encodable {
    var nodes: Int
    var joinP50: Double
    var joinP99: Double
    var joinMax: Double
    var agentCPUSecondsPerJoin: Double
    var agentRSSMiBMax: Double
}

/// utime + stime of a process, in seconds.
func cpuSeconds(_ pid: Int32) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return 0 }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
    return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
}

func rssMiB(_ pid: Int32) -> Double {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
    else { return 0 }
    return (Double(line.split(separator: " ")[1]) ?? 0) / 1024
}

@MainActor func runLab() throws -> LabResult {
    let name = "clb\(getpid() % 100_000)"
    let nodes = (0..<labNodes).map { i -> [String: Any] in
        ["name": "n\(i)", "address": "172.18.0.\(10 + i)", "podCIDR": "10.0.\(10 + i).0/24", "pods": []]
    }
    let file = work + "/lab.json"
    try JSONSerialization.data(withJSONObject: ["name": name, "nodes": nodes, "datapathMode": "kernel"]).write(
        to: URL(fileURLWithPath: file))
    defer { _ = try? run([nodenetd, "lab", "down", "--name", name]) }
    let up = try run([nodenetd, "lab", "up", file, "--name", name, "--control-plane", "etcd"])
    guard up.status == 0 else { throw BenchError("lab up failed: \(up.output)") }
    let runDirectory = "/run/nodenet/lab/\(name)"
    let settings = ClusterSettings(
        endpoints: (0..<3).map { "unix://\(runDirectory)/etcd\($0)/client:2379" }, prefix: "/nodenet/lab-\(name)")
    let keys = ClusterKeys(prefix: settings.prefix)
    let client = try NodeAgent.makeGatewayClient(settings)
    let sockets = try (0..<labNodes).map { try NetlinkSocket(namespace: .named("nnl-\(name)-n-n\($0)")) }
    let pids = (0..<labNodes).compactMap { i in
        (try? String(contentsOfFile: "\(runDirectory)/n\(i)/agent.pid", encoding: .utf8)).flatMap {
            Int32($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }
    guard pids.count == labNodes else { throw BenchError("not every node's agent runs") }
    let cpuBefore = pids.map(cpuSeconds)
    var samples: [Double] = []
    for j in 0..<joins {
        let record = ClusterNodeRecord(
            name: "sim\(j)", address: IPAddress(ipv4: 0xAC12_0200 | UInt32(1 + j)),
            podCIDR: IPPrefix(IPAddress(ipv4: 0x0A02_0000 | UInt32(j) << 8), length: 24)!, bootID: "bench",
            version: "bench")
        let start = ContinuousClock.now
        try register(client, keys, [record], lease: { _ in nil }, concurrency: 1)
        try waitUntil("sim\(j)'s route on every node", seconds: 30) {
            try sockets.allSatisfy { try directRoutes($0).contains(record.podCIDR) }
        }
        samples.append(elapsed(since: start))
        try blocking { _ = try await client.delete(keys.node(record.name)) }
        usleep(50_000)
    }
    let cpu = zip(pids.map(cpuSeconds), cpuBefore).map { $0 - $1 }.reduce(0, +)
    let rss = pids.map(rssMiB).max() ?? 0
    await_shutdown(client)
    return LabResult(
        nodes: labNodes, joinP50: percentile(samples, 0.5), joinP99: percentile(samples, 0.99),
        joinMax: samples.max() ?? 0, agentCPUSecondsPerJoin: cpu / Double(joins) / Double(labNodes),
        agentRSSMiBMax: rss)
}

func run(_ args: [String]) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: args[0])
    p.arguments = Array(args.dropFirst())
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

// MARK: main

try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: work) }
var output: [String: Any] = [:]
if part == "scale" || part == "all" {
    let (results, joinSamples) = try runScale()
    let ratios = results.map(\.ratio)
    let converge = results.map(\.convergeSeconds)
    let expire = results.map(\.expireSeconds)
    let spec = results.map(\.specApplySeconds)
    if json {
        output["scale"] = [
            "nodes": simulated, "expired": expiring, "convergeMedian": median(converge), "expireMedian": median(expire),
            "afterLastWriteMedian": median(results.map(\.afterLastWriteSeconds)), "putMedian": clientFigures.put,
            "readMedian": clientFigures.read,
            "specApplyMedian": median(spec), "ratioMedian": median(ratios), "ratioMin": ratios.min()!,
            "ratioMax": ratios.max()!, "joinP50": percentile(joinSamples, 0.5),
            "joinP99": percentile(joinSamples, 0.99),
        ]
    } else {
        print(
            """
            scale (\(rounds) rounds): \(simulated) nodes registered → all routes: median \(ms(median(converge))) \
            (the writes to etcd included); after the last write \(ms(median(results.map(\.afterLastWriteSeconds)))) \
            vs a spec apply of the same \(ms(median(spec))): ratio \(String(format: "%.2f", median(ratios))) \
            (range \(String(format: "%.2f–%.2f", ratios.min()!, ratios.max()!)))
            \(expiring) expired → routes gone: median \(ms(median(expire)))
            single join with \(simulated - expiring) nodes: p50 \(ms(percentile(joinSamples, 0.5))), \
            p99 \(ms(percentile(joinSamples, 0.99))) (\(joinSamples.count) joins)
            the client (JSON gateway, unix socket): a put \(ms(clientFigures.put)), a read \(ms(clientFigures.read)) (medians of 50)
            """)
    }
}
if part == "lab" || part == "all" {
    let lab = try runLab()
    if json {
        output["lab"] = [
            "nodes": lab.nodes, "joinP50": lab.joinP50, "joinP99": lab.joinP99, "joinMax": lab.joinMax,
            "agentCPUSecondsPerJoin": lab.agentCPUSecondsPerJoin, "agentRSSMiBMax": lab.agentRSSMiBMax,
        ]
    } else {
        print(
            """
            lab (\(lab.nodes) nodes, each running its agent; \(joins) joins): registration → route on every node \
            p50 \(ms(lab.joinP50)), p99 \(ms(lab.joinP99)), max \(ms(lab.joinMax)); \
            agent CPU \(String(format: "%.2f", lab.agentCPUSecondsPerJoin * 1000)) ms per join per node, RSS max \
            \(String(format: "%.1f", lab.agentRSSMiBMax)) MiB
            """)
    }
}
if json {
    print(
        String(
            decoding: try JSONSerialization.data(withJSONObject: output, options: [.prettyPrinted, .sortedKeys]),
            as: UTF8.self))
}
