// datapath-bench: pod-to-pod TCP throughput and request/response rate, in the same run,
// over a bare veth pair (the physical limit here), and between lab pods on one node and on
// two nodes in BPF mode and in kernel mode.
//
//   apt-get install iperf3
//   swift run -c release datapath-bench [--seconds S] [--repeat R] [--json]
//
// Throughput: iperf3, 1 and 2 streams. Request/response: 1-byte request, 1-byte reply
// over one TCP connection, as many as fit in S seconds (like netperf TCP_RR).
import BenchSupport
import Foundation
import NodeNet
import NodeNetLab

/// Runs per measurement (`--repeat`); medians are reported.
let repeats: Int = {
    guard let i = CommandLine.arguments.firstIndex(of: "--repeat"), i + 1 < CommandLine.arguments.count,
        let n = Int(CommandLine.arguments[i + 1])
    else { return 1 }
    return max(1, min(10, n))
}()

/// Seconds per measurement (`--seconds`).
let duration: Int = {
    guard let i = CommandLine.arguments.firstIndex(of: "--seconds"), i + 1 < CommandLine.arguments.count,
        let n = Int(CommandLine.arguments[i + 1])
    else { return 3 }
    return max(1, min(30, n))
}()
let json = CommandLine.arguments.contains("--json")
if CommandLine.arguments.dropFirst().contains(where: {
    !["--seconds", "--repeat", "--json"].contains($0) && Int($0) == nil
}) {
    print("usage: datapath-bench [--seconds S] [--repeat R] [--json]   (needs root and iperf3)")
    exit(2)
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
func throughput(client: String, server: String, ip: String, streams: Int) throws -> Double {
    let s = Process()
    s.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    s.arguments = ["ip", "netns", "exec", server, "iperf3", "-s", "-1", "-p", "5201"]
    s.standardOutput = FileHandle.nullDevice
    s.standardError = FileHandle.nullDevice
    try s.run()
    defer {
        if s.isRunning { s.terminate() }
        s.waitUntilExit()
    }
    usleep(300_000)
    let out = try run([
        "ip", "netns", "exec", client, "iperf3", "-c", ip, "-p", "5201", "-t", "\(duration)", "-P", "\(streams)", "-J",
    ])
    guard let data = out.data(using: .utf8), let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
        let end = o["end"] as? [String: Any], let sum = end["sum_received"] as? [String: Any],
        let bps = sum["bits_per_second"] as? Double
    else { throw BenchError("iperf3 gave no result (\(out.prefix(200)))") }
    return bps / 1e9
}

/// Transactions per second: 1-byte request and reply over one TCP connection.
func requestResponse(client: String, server: String, ip: IPAddress) throws -> Double {
    let listener: Int32 = try NetworkNamespace.run(in: .named(server)) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
        guard SocketAddress(IPAddress(ipv4: 0), port: 7777).withSockaddr({ bind(fd, $0, $1) }) == 0,
            listen(fd, 1) == 0
        else { throw BenchError("listen failed") }
        return fd
    }
    defer { close(listener) }
    let serverThread = Thread {
        let c = accept(listener, nil, nil)
        guard c >= 0 else { return }
        var one: Int32 = 1
        setsockopt(c, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
        var b: UInt8 = 0
        while read(c, &b, 1) == 1 { _ = write(c, &b, 1) }
        close(c)
    }
    serverThread.start()
    let fd: Int32 = try NetworkNamespace.run(in: .named(client)) { socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0) }
    defer { close(fd) }
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
    guard SocketAddress(ip, port: 7777).withSockaddr({ connect(fd, $0, $1) }) == 0 else {
        throw BenchError("connect \(ip): \(errno)")
    }
    var b: UInt8 = 1
    var n = 0
    let start = Date()
    while Date().timeIntervalSince(start) < Double(duration) {
        for _ in 0..<100 {
            guard write(fd, &b, 1) == 1, read(fd, &b, 1) == 1 else { throw BenchError("request/response broke") }
        }
        n += 100
    }
    return Double(n) / Date().timeIntervalSince(start)
}

struct Row: Encodable {
    var path: String, gbps1: Double, gbps2: Double, rr: Double
}

/// Medians of `repeats` runs of each measurement.
func measure(_ path: String, client: String, server: String, ip: String) throws -> Row {
    var one: [Double] = []
    var two: [Double] = []
    var rr: [Double] = []
    for _ in 0..<repeats {
        one.append(try throughput(client: client, server: server, ip: ip, streams: 1))
        two.append(try throughput(client: client, server: server, ip: ip, streams: 2))
        rr.append(try requestResponse(client: client, server: server, ip: IPAddress(ip)!))
    }
    return Row(path: path, gbps1: median(one), gbps2: median(two), rr: median(rr))
}

var rows: [Row] = []

let tag = "db\(getpid() % 10000)"
do {
    // Bare veth pair between two namespaces.
    let a = "nnbench-\(tag)-a"
    let b = "nnbench-\(tag)-b"
    try NetworkNamespace.create(a)
    try NetworkNamespace.create(b)
    defer {
        try? NetworkNamespace.delete(a)
        try? NetworkNamespace.delete(b)
    }
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
    rows.append(try measure("bare veth pair", client: a, server: b, ip: "10.9.0.2"))

    for mode in [DatapathMode.bpf, .kernel] {
        var c = try LabCluster.load(
            Data(
                """
                { "name": "\(tag)\(mode == .bpf ? "b" : "k")", "nodes": [
                  { "name": "n1", "address": "172.18.0.2", "podCIDR": "10.0.2.0/24", "pods": [ { "name": "p1", "ip": "10.0.2.10" }, { "name": "p2", "ip": "10.0.2.11" } ] },
                  { "name": "n2", "address": "172.18.0.3", "podCIDR": "10.0.1.0/24", "pods": [ { "name": "p3", "ip": "10.0.1.10" } ] } ] }
                """.utf8))
        c.datapathMode = mode
        defer { Lab.down(name: c.name) }
        try Lab(cluster: c).up()
        rows.append(
            try measure(
                "same node, \(mode.rawValue) mode", client: c.namespace(ofPod: "p1"), server: c.namespace(ofPod: "p2"),
                ip: "10.0.2.11"))
        rows.append(
            try measure(
                "two nodes, \(mode.rawValue) mode", client: c.namespace(ofPod: "p1"), server: c.namespace(ofPod: "p3"),
                ip: "10.0.1.10"))
    }
    if json {
        try printJSON(rows)
    } else {
        let bare = rows[0]
        print(
            "path                      1 stream Gbit/s   2 streams Gbit/s   TCP RR trans/s   (vs bare veth: 1 stream, RR)"
        )
        for r in rows {
            print(
                r.path.padding(toLength: 25, withPad: " ", startingAt: 0)
                    + String(
                        format: " %8.2f           %8.2f           %9.0f        %5.0f%%  %5.0f%%", r.gbps1, r.gbps2,
                        r.rr,
                        100 * r.gbps1 / bare.gbps1, 100 * r.rr / bare.rr))
        }
        print(
            "(medians of \(repeats) runs of \(duration) s; targets: same-node BPF >= 90% of the bare veth pair and ahead of kernel mode)"
        )
    }
} catch {
    print("datapath-bench: \(error)")
    exit(1)
}
