// datapath-bench: pod-to-pod TCP throughput, request/response and connection rates, in the
// same run, over a bare veth pair (the physical limit here), and between lab pods on one node
// and on two nodes in BPF mode, in kernel mode, and in kernel mode as such nodes are deployed
// (masquerading through an iptables MASQUERADE rule for traffic leaving 10.0.0.0/8, so
// netfilter's conntrack sees every packet: a fair baseline for BPF mode, which masquerades
// itself), and in BPF mode with BIG TCP (`ipv4BigTCP: on`: 192 KiB GSO/GRO on nodenet's
// devices, the lab's native devices and fabric set to the same first, as a node's administrator
// would). NodePort from outside: the lab's external host to a node port of node n1 whose backend
// is on n1 (local) or on n2 (remote), through BPF mode's NodePort against kube-proxy's iptables
// rules for the same services (DNAT, and MASQUERADE of what was marked for it, as kube-proxy
// writes them for `externalTrafficPolicy: Cluster`) in the kernel + iptables lab; and, as the
// bound of any NodePort on this topology, the external host straight to the local backend's
// address ("outside to pod": no service, no translation) in both labs.
//
//   apt-get install iperf3 iptables
//   swift build -c release --product datapath-bench && .build/release/datapath-bench [--seconds S] [--rounds R] [--only nodeport] [--json]
//
// `--only nodeport` measures the NodePort paths alone (RR and CRR, BPF against kube-proxy, and
// the outside-to-pod bound).
//
// Each round runs every metric over every path in turn (the paths' order rotates from round to
// round), so a drift of the machine lands on all paths of a round alike; figures are the
// median over the rounds, comparisons the median of the in-round ratios with their range.
// Throughput: iperf3, 1 and 2 streams. TCP_RR: 1-byte request and 1-byte reply over one TCP
// connection, as many as fit in S seconds. TCP_CRR: a new connection per request (connect,
// 1 byte each way, close), as many as fit in S seconds.
//
// The BPF paths are checked to take the BPF datapath (the lab node's redirect counters grow by
// at least one per request/response). After the rounds, each BPF program's cost: the kernel's
// run-time statistics (BPF_ENABLE_STATS, on for that phase only, which costs every program a
// little: never during the rounds; nothing global is written) over a TCP_RR run and over a
// TCP_CRR run per BPF path: nanoseconds per packet of from-container and from-netdev, for an
// open connection's packets and with connections opened and closed. `--rounds 0`
// measures the program costs only.
import BPF
import BenchSupport
import CNodeNetBPF
import Foundation
import NodeNet
import NodeNetLab

struct Options {
    var seconds = 3, rounds = 5, json = false
    /// Only the NodePort paths, on RR and CRR.
    var onlyNodePort = false
    /// `--loop`: program costs through BPF_PROG_TEST_RUN only, `calls` runs per path a round.
    var loop = false, calls = 2000
    /// With `--loop`: another build's bpf_lxc.o and bpf_netdev.o, compared within each round.
    var otherObjects: String?
}

struct BadUsage: UsageError {}

let usage = """
    usage: datapath-bench [--seconds S] [--rounds R] [--only nodeport] [--json]   (needs root, iperf3 and iptables; S 1-30, R 0-20; 0: program costs only)
           datapath-bench --loop [--calls N] [--rounds R] [--other-objects DIR] [--json]   (needs root; each program's run time per packet of each path through BPF_PROG_TEST_RUN, N 100-100000 runs a round, default 2000; DIR: another build's bpf_lxc.o and bpf_netdev.o, run alternately with this build's)
    """

func parseOptions() throws -> Options {
    var o = Options()
    var args = BenchArguments()
    var given: Set<String> = []
    while let arg = args.next() {
        given.insert(arg)
        switch arg {
        case "--seconds": o.seconds = args.int(in: 1...30, default: -1)
        case "--rounds", "--repeat": o.rounds = args.int(in: 0...20, default: -1)
        case "--json": o.json = true
        case "--loop": o.loop = true
        case "--calls": o.calls = args.int(in: 100...100_000, default: -1)
        case "--other-objects":
            guard let dir = args.next() else { throw BadUsage() }
            o.otherObjects = dir
        case "--only":
            guard args.next() == "nodeport" else { throw BadUsage() }
            o.onlyNodePort = true
        default: throw BadUsage()
        }
        if o.seconds < 0 || o.rounds < 0 || o.calls < 0 { throw BadUsage() }
    }
    // Options of one mode are not taken silently by the other.
    if o.loop ? (o.onlyNodePort || given.contains("--seconds")) : (o.otherObjects != nil || given.contains("--calls")) {
        throw BadUsage()
    }
    return o
}

func run(_ args: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
}

/// iperf3 from `client` to `server` (namespaces) at `ip`: Gbit/s received.
func throughput(client: String, server: String, ip: String, port: Int, streams: Int, seconds: Int) throws -> Double {
    let s = Process()
    s.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    s.arguments = ["ip", "netns", "exec", server, "iperf3", "-s", "-1", "-p", "5201"]
    s.standardOutput = FileHandle.nullDevice
    s.standardError = FileHandle.nullDevice
    try s.run()
    defer {
        if s.isRunning { kill(s.processIdentifier, SIGKILL) }
        s.waitUntilExit()
    }
    usleep(300_000)
    let out = try run([
        "ip", "netns", "exec", client, "timeout", "\(seconds + 30)", "iperf3", "-c", ip, "-p", "\(port)", "-t",
        "\(seconds)", "-P", "\(streams)", "-J",
    ])
    guard let o = try? JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any],
        let end = o["end"] as? [String: Any], let sum = end["sum_received"] as? [String: Any],
        let bps = sum["bits_per_second"] as? Double
    else { throw BenchError("iperf3 gave no result (\(out.prefix(200)))") }
    return bps / 1e9
}

/// A TCP server in `namespace` on port 7777 answering 1 byte with 1 byte, on one connection
/// (`perConnection` false) or on each of many, until `stop()`.
final class EchoServer: @unchecked Sendable {
    let listener: Int32
    private var thread: Thread?

    init(namespace: String, perConnection: Bool) throws {
        listener = try NetworkNamespace.run(in: .named(namespace)) {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
            guard SocketAddress(IPAddress(ipv4: 0), port: 7777).withSockaddr({ bind(fd, $0, $1) }) == 0,
                listen(fd, 128) == 0
            else { throw BenchError("listen failed") }
            return fd
        }
        let listener = self.listener
        thread = Thread {
            while true {
                let c = accept(listener, nil, nil)
                guard c >= 0 else { return }
                var one: Int32 = 1
                setsockopt(c, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
                var b: UInt8 = 0
                if perConnection {
                    if read(c, &b, 1) == 1 { _ = write(c, &b, 1) }
                } else {
                    while read(c, &b, 1) == 1 { _ = write(c, &b, 1) }
                }
                close(c)
                if !perConnection { return }
            }
        }
        thread?.start()
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }
}

/// A TCP socket of the calling thread's namespace, with no Nagle delay and a 2 s receive timeout.
func tcpSocket() -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return fd }  // (socket's errno kept)
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
    var tv = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    return fd
}

/// TCP_RR: transactions per second over one connection.
func requestResponse(client: String, server: String, ip: IPAddress, port: UInt16, seconds: Int) throws -> Double {
    let echo = try EchoServer(namespace: server, perConnection: false)
    defer { echo.stop() }
    let fd = try NetworkNamespace.run(in: .named(client)) { tcpSocket() }
    guard fd >= 0 else { throw BenchError("socket: \(errno)") }
    defer { close(fd) }
    guard SocketAddress(ip, port: port).withSockaddr({ connect(fd, $0, $1) }) == 0 else {
        throw BenchError("connect \(ip):\(port): \(errno)")
    }
    var b: UInt8 = 1
    var n = 0
    let start = Date()
    while Date().timeIntervalSince(start) < Double(seconds) {
        for _ in 0..<100 {
            guard write(fd, &b, 1) == 1, read(fd, &b, 1) == 1 else { throw BenchError("request/response broke") }
        }
        n += 100
    }
    return Double(n) / Date().timeIntervalSince(start)
}

/// TCP_CRR: connections per second, each connect, 1 byte each way, close (with a reset, so no
/// TIME_WAIT sockets pile up on the client's ports). The whole loop runs on one thread in the
/// client's namespace, as netperf's would: a thread entering the namespace for each
/// connection's socket (before 2026-12-06) cost about as much as the connection itself, the
/// same on every path, and so pulled every CRR ratio toward 1.
func connectRequestResponse(client: String, server: String, ip: IPAddress, port: UInt16, seconds: Int) throws -> Double
{
    let echo = try EchoServer(namespace: server, perConnection: true)
    defer { echo.stop() }
    return try NetworkNamespace.run(in: .named(client)) {
        var n = 0
        let start = Date()
        while Date().timeIntervalSince(start) < Double(seconds) {
            let fd = tcpSocket()
            guard fd >= 0 else { throw BenchError("socket: \(errno)") }
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            var b: UInt8 = 1
            let ok =
                SocketAddress(ip, port: port).withSockaddr({ connect(fd, $0, $1) }) == 0 && write(fd, &b, 1) == 1
                && read(fd, &b, 1) == 1
            let failure = errno
            close(fd)
            guard ok else { throw BenchError("connect/request/response to \(ip) broke (\(failure))") }
            n += 1
        }
        return Double(n) / Date().timeIntervalSince(start)
    }
}

/// The BPF lab's node ports: iperf3 (5201) and the echo server (7777), each once with its
/// backend on n1 (p2) and once on n2 (p3).
let nodePortServices = """
    [ { "name": "default/np-local", "type": "NodePort", "clusterIP": "10.96.0.11",
        "ports": [ { "name": "iperf", "port": 5201, "nodePort": 30201 }, { "name": "echo", "port": 7777, "nodePort": 30777 } ],
        "backends": [ { "ip": "10.0.2.11" } ] },
      { "name": "default/np-remote", "type": "NodePort", "clusterIP": "10.96.0.12",
        "ports": [ { "name": "iperf", "port": 5201, "nodePort": 31201 }, { "name": "echo", "port": 7777, "nodePort": 31777 } ],
        "backends": [ { "ip": "10.0.1.10" } ] } ]
    """

/// kube-proxy's nat rules (iptables mode, `externalTrafficPolicy: Cluster`) for the same node
/// ports on n1: node-port traffic is marked for masquerade, DNATed to its backend, and
/// masqueraded on its way out (to the remote backend, and to the local one as kube-proxy does).
let kubeProxyNodePortRules: [[String]] = {
    var rules: [[String]] = [
        ["-t", "nat", "-N", "KUBE-MARK-MASQ"],
        ["-t", "nat", "-A", "KUBE-MARK-MASQ", "-j", "MARK", "--or-mark", "0x4000"],
        ["-t", "nat", "-N", "KUBE-NODEPORTS"],
        ["-t", "nat", "-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "KUBE-NODEPORTS"],
        ["-t", "nat", "-N", "KUBE-POSTROUTING"],
        ["-t", "nat", "-I", "POSTROUTING", "1", "-j", "KUBE-POSTROUTING"],
        ["-t", "nat", "-A", "KUBE-POSTROUTING", "-m", "mark", "!", "--mark", "0x4000/0x4000", "-j", "RETURN"],
        ["-t", "nat", "-A", "KUBE-POSTROUTING", "-j", "MARK", "--xor-mark", "0x4000"],
        ["-t", "nat", "-A", "KUBE-POSTROUTING", "-j", "MASQUERADE", "--random-fully"],
    ]
    for (nodePort, backend) in [
        (30201, "10.0.2.11:5201"), (30777, "10.0.2.11:7777"), (31201, "10.0.1.10:5201"), (31777, "10.0.1.10:7777"),
    ] {
        rules.append([
            "-t", "nat", "-A", "KUBE-NODEPORTS", "-p", "tcp", "--dport", "\(nodePort)", "-j", "KUBE-MARK-MASQ",
        ])
        rules.append([
            "-t", "nat", "-A", "KUBE-NODEPORTS", "-p", "tcp", "--dport", "\(nodePort)", "-j", "DNAT",
            "--to-destination", backend,
        ])
    }
    return rules
}()

enum Metric: String, CaseIterable, Encodable {
    case stream1 = "1 stream Gbit/s", stream2 = "2 streams Gbit/s", rr = "TCP_RR trans/s", crr = "TCP_CRR conn/s"
}

struct Path {
    var name: String, client: String, server: String, ip: String
    /// BPF paths: the lab's bpffs directories and the redirect verdict the path must count.
    var bpf: (directories: [String], namespaces: [String], verdict: UInt32)?
    /// The ports the client connects to (a node port) for iperf3 (its server listens on 5201)
    /// and for RR/CRR (the echo server on 7777).
    var iperfPort = 5201, echoPort: UInt16 = 7777
}

struct Output: Encodable {
    struct PathResult: Encodable {
        var path: String
        /// Medians over the rounds, by metric.
        var medians: [String: Double]
        /// BPF paths: nanoseconds per packet of each program kind over a TCP_RR run (the cost of
        /// a connection's packets) and over a TCP_CRR run (with its opening and closing), and
        /// the packets each counted.
        var nanosecondsPerPacket: [String: Double]?
        var packets: [String: UInt64]?
        var connectionNanosecondsPerPacket: [String: Double]?
        var connectionPackets: [String: UInt64]?
    }
    struct Comparison: Encodable {
        var name: String, metric: String
        var ratio: RatioSummary
    }
    var seconds: Int, rounds: Int
    var paths: [PathResult]
    var comparisons: [Comparison]
    var targets: [TargetVerdict]
}

runBenchmark("datapath-bench", usage: usage) {
    let o = try parseOptions()
    let tag = "db\(getpid() % 10000)"
    if o.loop {
        try programLoop(
            tag: tag, calls: o.calls, rounds: max(o.rounds, 1), json: o.json, otherObjects: o.otherObjects)
        return
    }
    let a = "nnbench-\(tag)-a"
    let b = "nnbench-\(tag)-b"
    var labs: [LabCluster] = []
    var nodePortLabs: [String: (LabCluster, [String])] = [:]
    defer {
        try? NetworkNamespace.delete(a)
        try? NetworkNamespace.delete(b)
        for lab in labs { Lab.down(name: lab.name) }
    }
    // Bare veth pair between two namespaces.
    try NetworkNamespace.create(a)
    try NetworkNamespace.create(b)
    let sa = try NetlinkSocket(namespace: .named(a))
    let sb = try NetlinkSocket(namespace: .named(b))
    try sa.add(
        LinkConfiguration(
            name: "eth0", kind: .veth(peer: VethPeer(name: "eth0", namespace: .named(b))), mtu: 1500, up: true))
    try sb.setLink(named: "eth0", LinkChange(up: true))
    for (s, ip) in [(sa, "10.9.0.1/24"), (sb, "10.9.0.2/24")] {
        try s.setLink(named: "lo", LinkChange(up: true))
        try s.add(InterfaceAddress(interfaceIndex: try s.link(named: "eth0")!.index, prefix: IPPrefix(ip)!))
    }
    var paths = [Path(name: "bare veth pair", client: a, server: b, ip: "10.9.0.2")]
    // The kernel lab as kernel-routing nodes are deployed: masquerading through iptables (the
    // product never runs it; this baseline does), so netfilter's conntrack sees every packet.
    let masquerade = [
        "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.0.0.0/8", "!", "-d", "10.0.0.0/8", "-j", "MASQUERADE",
    ]
    // BIG TCP where the kernel has it (6.3+: the link dump carries IFLA_GSO_IPV4_MAX_SIZE).
    let hasBigTCP = try sa.link(named: "eth0")?.gsoIPv4MaxSize != nil
    if !hasBigTCP { FileHandle.standardError.write(Data("no BIG TCP on this kernel: its lab is left out\n".utf8)) }
    for (mode, iptables, bigTCP) in [
        (DatapathMode.bpf, false, false), (.kernel, false, false), (.kernel, true, false), (.bpf, false, true),
    ] where hasBigTCP || !bigTCP {
        var c = try LabCluster.load(
            Data(
                """
                { "name": "\(tag)\(bigTCP ? "g" : mode == .bpf ? "b" : iptables ? "i" : "k")", "nodes": [
                  { "name": "n1", "address": "172.18.0.2", "podCIDR": "10.0.2.0/24", "pods": [ { "name": "p1", "ip": "10.0.2.10" }, { "name": "p2", "ip": "10.0.2.11" } ] },
                  { "name": "n2", "address": "172.18.0.3", "podCIDR": "10.0.1.0/24", "pods": [ { "name": "p3", "ip": "10.0.1.10" } ] } ],
                  "services": \(mode == .bpf && !bigTCP ? nodePortServices : "[]") }
                """.utf8))
        c.datapathMode = mode
        c.ipv4BigTCP = .off
        labs.append(c)
        try Lab(cluster: c).up()
        if bigTCP {
            // The administrator's part: the fabric (bridge and ports) and the nodes' uplinks.
            let fabric = try NetlinkSocket(namespace: .named(c.fabricNamespace))
            for link in try fabric.links() where link.name != "lo" {
                try fabric.setLink(named: link.name, LinkChange(ipv4MaxSegmentSize: BigTCPMode.bigSize))
            }
            c.ipv4BigTCP = .on
            for node in ["n1", "n2"] {
                try NetlinkSocket(namespace: .named(c.namespace(ofNode: node)))
                    .setLink(named: "eth0", LinkChange(ipv4MaxSegmentSize: BigTCPMode.bigSize))
                let report = try NodeController(
                    spec: c.spec(forNode: node)!, namespace: .named(c.namespace(ofNode: node))
                ).apply()
                guard report.verified, report.changes.count >= 2 else {
                    throw BenchError("BIG TCP on \(node): \(report.changes.count) changes, \(report.mismatches)")
                }
            }
        }
        let label =
            bigTCP ? "bpf + BIG TCP" : mode == .bpf ? "bpf mode" : iptables ? "kernel + iptables" : "kernel mode"
        if iptables {
            // kube-proxy's rules for the same node ports on n1 (externalTrafficPolicy: Cluster).
            let n1 = c.namespace(ofNode: "n1")
            for rule in kubeProxyNodePortRules {
                _ = try run(["ip", "netns", "exec", n1, "iptables", "-w", "5"] + rule)
            }
            let nat = try run(["ip", "netns", "exec", n1, "iptables", "-t", "nat", "-S"])
            guard nat.contains("30777"), nat.contains("KUBE-MARK-MASQ") || nat.contains("0x4000") else {
                throw BenchError("iptables did not take kube-proxy's NodePort rules on n1 (\(nat.prefix(300)))")
            }
            for node in ["n1", "n2"] {
                let out = try run(["ip", "netns", "exec", c.namespace(ofNode: node)] + masquerade + ["-w", "5"])
                let rules = try run(["ip", "netns", "exec", c.namespace(ofNode: node), "iptables", "-t", "nat", "-S"])
                guard rules.contains("MASQUERADE") else {
                    throw BenchError("iptables did not take the masquerade rule on \(node) (\(out.prefix(200)))")
                }
            }
        }
        let directories = ["n1", "n2"].map { c.bpffsDirectory(ofNode: $0) }
        let namespaces = ["n1", "n2"].map { c.namespace(ofNode: $0) }
        paths.append(
            Path(
                name: "same node, \(label)", client: c.namespace(ofPod: "p1"),
                server: c.namespace(ofPod: "p2"), ip: "10.0.2.11",
                bpf: mode == .bpf ? (directories, namespaces, UInt32(NODENET_VERDICT_LOCAL_REDIRECT.rawValue)) : nil))
        paths.append(
            Path(
                name: "two nodes, \(label)", client: c.namespace(ofPod: "p1"),
                server: c.namespace(ofPod: "p3"), ip: "10.0.1.10",
                bpf: mode == .bpf ? (directories, namespaces, UInt32(NODENET_VERDICT_REMOTE_REDIRECT.rawValue)) : nil))
        if (mode == .bpf && !bigTCP) || iptables {
            nodePortLabs[mode == .bpf ? "bpf" : "kube-proxy"] = (c, directories)
        }
    }
    // NodePort from outside (the lab's external host to n1), after the pod-to-pod paths: local
    // backend (p2 on n1) and remote backend (p3 on n2), BPF mode and kube-proxy.
    for (label, lab) in nodePortLabs.sorted(by: { $0.key < $1.key }) {
        let (c, directories) = lab
        let namespaces = ["n1", "n2"].map { c.namespace(ofNode: $0) }
        let bpf = label == "bpf"
        // The bound of any NodePort here: the external host to the local backend's own address
        // (routed to n1 in the external host's namespace, which the lab owns), no service and
        // no translation on the way, the same node datapath otherwise.
        let n1 = c.spec(forNode: "n1")!.node
        let external = try NetlinkSocket(namespace: .named(c.externalNamespace))
        try external.add(
            Route(
                destination: n1.podCIDR, gateway: n1.address, interfaceIndex: try external.link(named: "eth0")!.index))
        paths.append(
            Path(
                name: "outside to pod, \(label)", client: c.externalNamespace, server: c.namespace(ofPod: "p2"),
                ip: "10.0.2.11",
                bpf: bpf ? (directories, namespaces, UInt32(NODENET_VERDICT_LOCAL_REDIRECT.rawValue)) : nil))
        paths.append(
            Path(
                name: "NodePort local, \(label)", client: c.externalNamespace, server: c.namespace(ofPod: "p2"),
                ip: "172.18.0.2",
                bpf: bpf ? (directories, namespaces, UInt32(NODENET_VERDICT_LOCAL_REDIRECT.rawValue)) : nil,
                iperfPort: 30201, echoPort: 30777))
        paths.append(
            Path(
                name: "NodePort remote, \(label)", client: c.externalNamespace, server: c.namespace(ofPod: "p3"),
                ip: "172.18.0.2",
                bpf: bpf ? (directories, namespaces, UInt32(NODENET_VERDICT_REMOTE_REDIRECT.rawValue)) : nil,
                iperfPort: 31201, echoPort: 31777))
    }
    // Order: bare, same bpf, two bpf, same kernel, two kernel, same kernel + iptables, two, same
    // bpf + BIG TCP, two.
    let measured = paths.indices.filter {
        !o.onlyNodePort || paths[$0].name.hasPrefix("NodePort") || paths[$0].name.hasPrefix("outside to pod")
    }
    let metrics = o.onlyNodePort ? [Metric.rr, .crr] : Metric.allCases
    var values = [[Metric: [Double]]](repeating: [:], count: paths.count)
    /// Per path, by metric (TCP_RR, TCP_CRR) and program kind.
    var cost = [[Metric: [String: BPFProgramStats]]](repeating: [:], count: paths.count)
    func measure(_ metric: Metric, _ p: Path) throws -> Double {
        switch metric {
        case .stream1:
            try throughput(
                client: p.client, server: p.server, ip: p.ip, port: p.iperfPort, streams: 1, seconds: o.seconds)
        case .stream2:
            try throughput(
                client: p.client, server: p.server, ip: p.ip, port: p.iperfPort, streams: 2, seconds: o.seconds)
        case .rr:
            try requestResponse(
                client: p.client, server: p.server, ip: IPAddress(p.ip)!, port: p.echoPort, seconds: o.seconds)
        case .crr:
            try connectRequestResponse(
                client: p.client, server: p.server, ip: IPAddress(p.ip)!, port: p.echoPort, seconds: o.seconds)
        }
    }
    for round in 0..<o.rounds {
        for metric in metrics {
            for k in 0..<measured.count {
                let i = measured[(k + round) % measured.count]
                let path = paths[i]
                let verdicts = try path.bpf.flatMap { bpf in
                    try BPFMap<UInt32, UInt64>.pinned(
                        at: BPFFSLayout(directory: bpf.directories[0]).path(.verdicts), perCPU: true)
                }
                if path.bpf != nil && verdicts == nil { throw BenchError("\(path.name): no verdict counters pinned") }
                let redirectsBefore = try verdicts.map { try $0.sum(path.bpf!.verdict) }
                let value = try measure(metric, path)
                if let verdicts, let redirectsBefore {
                    let redirects = try verdicts.sum(path.bpf!.verdict) - redirectsBefore
                    if metric == .rr && Double(redirects) < value * Double(o.seconds) / 2 {
                        throw BenchError(
                            "\(path.name): \(redirects) redirects for \(Int(value * Double(o.seconds))) requests: the traffic did not take the BPF path"
                        )
                    }
                }
                values[i][metric, default: []].append(value)
                if !o.json {
                    FileHandle.standardError.write(
                        Data("round \(round + 1), \(metric.rawValue), \(path.name): \(value)\n".utf8))
                }
            }
        }
    }
    // Program costs, statistics on for this phase only.
    for i in measured where paths[i].bpf != nil {
        // (The tc programs: costs per packet. The lab's socket hooks see none of these clients.)
        let bpfPrograms = try LabPrograms.attached(
            bpffsDirectories: paths[i].bpf!.directories, namespaces: paths[i].bpf!.namespaces
        ).filter { DatapathProgram(rawValue: $0.kind) != nil }
        for metric in [Metric.rr, .crr] {
            cost[i][metric] = try LabPrograms.costs(of: bpfPrograms) { _ = try measure(metric, paths[i]) }
        }
    }
    /// In-round ratios of path x over path y (empty when either was not measured).
    func inRound(_ x: Int, _ y: Int, _ metric: Metric) -> [Double] {
        zip(values[x][metric] ?? [], values[y][metric] ?? []).map { $0 / $1 }
    }
    func ratios(_ x: Int, over y: Int, _ metric: Metric) -> RatioSummary { RatioSummary(inRound(x, y, metric)) }
    func index(_ name: String) -> Int? { paths.firstIndex { $0.name == name } }
    var comparisons: [Output.Comparison] = []
    for metric in metrics where o.rounds > 0 && !o.onlyNodePort {
        comparisons += [
            .init(name: "same node BPF / bare veth", metric: metric.rawValue, ratio: ratios(1, over: 0, metric)),
            .init(name: "same node kernel / bare veth", metric: metric.rawValue, ratio: ratios(3, over: 0, metric)),
            .init(name: "same node BPF / kernel", metric: metric.rawValue, ratio: ratios(1, over: 3, metric)),
            .init(name: "two nodes BPF / kernel", metric: metric.rawValue, ratio: ratios(2, over: 4, metric)),
            .init(name: "same node BPF / kernel+iptables", metric: metric.rawValue, ratio: ratios(1, over: 5, metric)),
            .init(name: "two nodes BPF / kernel+iptables", metric: metric.rawValue, ratio: ratios(2, over: 6, metric)),
        ]
        if let big = index("same node, bpf + BIG TCP"), let bigTwo = index("two nodes, bpf + BIG TCP") {
            comparisons += [
                .init(name: "same node BIG TCP / BPF", metric: metric.rawValue, ratio: ratios(big, over: 1, metric)),
                .init(
                    name: "same node BIG TCP / bare veth", metric: metric.rawValue, ratio: ratios(big, over: 0, metric)),
                .init(name: "two nodes BIG TCP / BPF", metric: metric.rawValue, ratio: ratios(bigTwo, over: 2, metric)),
            ]
        }
    }
    for metric in metrics where o.rounds > 0 {
        for side in ["local", "remote"] {
            guard let b = index("NodePort \(side), bpf"), let k = index("NodePort \(side), kube-proxy") else {
                continue
            }
            comparisons.append(
                .init(
                    name: "NodePort \(side) BPF / kube-proxy", metric: metric.rawValue,
                    ratio: ratios(b, over: k, metric)))
        }
        // What a NodePort with free translation would reach: the external host straight to the
        // local backend, over kube-proxy's NodePort to it (and the same in the kernel lab).
        if let k = index("NodePort local, kube-proxy") {
            for (name, label) in [("no service BPF", "bpf"), ("no service kernel", "kube-proxy")] {
                guard let direct = index("outside to pod, \(label)") else { continue }
                comparisons.append(
                    .init(
                        name: "\(name) / NodePort local kube-proxy", metric: metric.rawValue,
                        ratio: ratios(direct, over: k, metric)))
            }
        }
    }
    // Issue 15's same-node targets, on throughput and request/response.
    var targets: [TargetVerdict] = []
    for metric in [Metric.stream1, .rr] where o.rounds > 0 && !o.onlyNodePort {
        targets += [
            TargetVerdict(
                "same node BPF / bare veth, \(metric.rawValue)", .atLeast, 1.0, values: inRound(1, 0, metric)),
            TargetVerdict(
                "same node BPF / kernel+iptables, \(metric.rawValue)", .atLeast, 1.1, values: inRound(1, 5, metric)),
        ]
    }
    for metric in [Metric.stream1, .stream2] where o.rounds > 0 && !o.onlyNodePort {
        guard let big = index("same node, bpf + BIG TCP") else { break }
        targets.append(
            TargetVerdict(
                "same node BIG TCP / bare veth, \(metric.rawValue)", .atLeast, 1.2, values: inRound(big, 0, metric)))
    }
    // Issue 15: NodePort from outside ≥ 1.2× kube-proxy's iptables rules on RR and CRR.
    for metric in [Metric.rr, .crr] where o.rounds > 0 {
        for side in ["local", "remote"] {
            guard let b = index("NodePort \(side), bpf"), let k = index("NodePort \(side), kube-proxy") else {
                continue
            }
            targets.append(
                TargetVerdict(
                    "NodePort \(side) BPF / kube-proxy, \(metric.rawValue)", .atLeast, 1.2,
                    values: inRound(b, k, metric)))
        }
    }
    let results = measured.map { i in
        Output.PathResult(
            path: paths[i].name,
            medians: o.rounds == 0
                ? [:] : Dictionary(uniqueKeysWithValues: metrics.map { ($0.rawValue, median(values[i][$0]!)) }),
            nanosecondsPerPacket: paths[i].bpf == nil ? nil : perPacket(cost[i][.rr]),
            packets: paths[i].bpf == nil ? nil : cost[i][.rr]?.mapValues(\.runCount) ?? [:],
            connectionNanosecondsPerPacket: paths[i].bpf == nil ? nil : perPacket(cost[i][.crr]),
            connectionPackets: paths[i].bpf == nil ? nil : cost[i][.crr]?.mapValues(\.runCount) ?? [:])
    }
    if o.json {
        try printJSON(
            Output(seconds: o.seconds, rounds: o.rounds, paths: results, comparisons: comparisons, targets: targets))
        return
    }
    print("medians of \(o.rounds) rounds of \(o.seconds) s (paths interleaved within each round)")
    guard o.rounds > 0 else {
        printCosts(results)
        return
    }
    print(
        "path                        "
            + metrics.map { $0.rawValue.padding(toLength: 18, withPad: " ", startingAt: 0) }.joined())
    for r in results {
        print(
            r.path.padding(toLength: 28, withPad: " ", startingAt: 0)
                + metrics.map {
                    String(format: "%-18.2f", r.medians[$0.rawValue]!)
                }.joined())
    }
    print("")
    print("in-round ratios: median (range)")
    for c in comparisons {
        print(
            "\(c.name.padding(toLength: 34, withPad: " ", startingAt: 0)) \(c.metric.padding(toLength: 18, withPad: " ", startingAt: 0)) \(c.ratio)"
        )
    }
    print("")
    printTargets(targets)
    print("")
    printCosts(results)
}

/// Nanoseconds per run of each program kind (none without runs).
func perPacket(_ stats: [String: BPFProgramStats]?) -> [String: Double] {
    (stats ?? [:]).compactMapValues(\.nanosecondsPerRun)
}

func printCosts(_ results: [Output.PathResult]) {
    for (title, cost, packets) in [
        ("over a TCP_RR run", \Output.PathResult.nanosecondsPerPacket, \Output.PathResult.packets),
        ("over a TCP_CRR run, connections opened and closed", \.connectionNanosecondsPerPacket, \.connectionPackets),
    ] {
        print("BPF program cost (kernel run-time statistics \(title)): ns per packet")
        for r in results {
            guard let c = r[keyPath: cost] else { continue }
            print(
                "\(r.path.padding(toLength: 28, withPad: " ", startingAt: 0)) "
                    + c.sorted { $0.key < $1.key }.map {
                        String(format: "%@ %.0f ns (%llu packets)", $0.key, $0.value, r[keyPath: packets]?[$0.key] ?? 0)
                    }
                    .joined(separator: ", "))
        }
    }
}
