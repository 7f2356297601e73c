// netlink-bench: route programming and dumping with the Netlink module against
// `ip -batch` / `ip route show`, in the same run, in throwaway namespaces.
//
//   swift run -c release netlink-bench [--count N ...] [--repeat R] [--json]
//
// Each measurement adds N /32 routes (`10.x.y.z/32 dev v0 scope link proto 201`) into a
// fresh namespace, then dumps them back (after one untimed check dump on both sides).
// Medians of R runs; ratios are nodenet vs iproute2. `ip` runs through posix_spawn, output
// to /dev/null, and includes its start-up (shown separately).
import BenchSupport
import Foundation
import Netlink

struct Options {
    var counts: [Int] = []
    var repeats = 3
    var json = false

    init(_ args: [String]) throws {
        var i = 0
        while i < args.count {
            switch args[i] {
            case "--count":
                i += 1
                guard i < args.count, let n = Int(args[i]), n > 0, n <= 1_000_000 else { throw Usage() }
                counts.append(n)
            case "--repeat":
                i += 1
                guard i < args.count, let n = Int(args[i]), (1...20).contains(n) else { throw Usage() }
                repeats = n
            case "--json": json = true
            case "-h", "--help": throw Usage()
            default: throw Usage()
            }
            i += 1
        }
        if counts.isEmpty { counts = [10_000, 100_000] }
    }
}

struct Usage: UsageError {
    static let text = """
        usage: netlink-bench [--count N]... [--repeat R] [--json]
          Adds N /32 routes into a fresh network namespace with the Netlink module (batched)
          and with `ip -batch`, then dumps them with each; prints routes/s and ratios.
          Defaults: --count 10000 --count 100000 --repeat 3. Needs root.
        """
}

struct Row: Encodable {
    var routes: Int
    var nodenetAddSeconds: Double, ipBatchAddSeconds: Double
    var nodenetDumpSeconds: Double, ipRouteShowSeconds: Double
    /// Breakdown: the dump's messages without decoding, and `ip -n NS link show lo` (start-up).
    var rawDumpSeconds: Double, ipStartupSeconds: Double
    /// Derived, stored so the JSON carries them.
    var nodenetAddsPerSecond = 0.0, ipBatchAddsPerSecond = 0.0, addSpeedup = 0.0, dumpTimeRatio = 0.0

    init(_ routes: Int, measured m: [Double]) {
        self.routes = routes
        (nodenetAddSeconds, ipBatchAddSeconds, nodenetDumpSeconds) = (m[0], m[1], m[2])
        (ipRouteShowSeconds, rawDumpSeconds, ipStartupSeconds) = (m[3], m[4], m[5])
        nodenetAddsPerSecond = Double(routes) / nodenetAddSeconds
        ipBatchAddsPerSecond = Double(routes) / ipBatchAddSeconds
        addSpeedup = ipBatchAddSeconds / nodenetAddSeconds
        dumpTimeRatio = nodenetDumpSeconds / ipRouteShowSeconds
    }
}

let proto = RouteProtocol(rawValue: 201)

func destination(_ i: Int) -> IPPrefix {
    IPPrefix(IPAddress(ipv4: 0x0A00_0000 + UInt32(i)), length: 32)!
}

/// A fresh namespace with `v0` (a veth, up) to route to. Removed by `body`'s end.
func withBenchNamespace<T>(_ body: (String, NetlinkSocket, InterfaceIndex) throws -> T) throws -> T {
    let name = "nnbench\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try NetworkNamespace.create(name)
    defer { try? NetworkNamespace.delete(name) }
    let s = try NetlinkSocket(namespace: .named(name))
    try s.add(LinkConfiguration(name: "v0", kind: .veth(peer: VethPeer(name: "v1")), up: true))
    try s.setLink(named: "v1", LinkChange(up: true))
    let index = try s.link(named: "v0")!.index
    return try body(name, s, index)
}

func measure(count: Int) throws -> [Double] {
    // nodenet: batched adds, then a kernel-filtered dump decoded into Route values.
    var nodenetAdd = 0.0
    var nodenetDump = 0.0
    var ipAdd = 0.0
    var ipShow = 0.0
    var rawDump = 0.0
    var ipStartup = 0.0
    try withBenchNamespace { _, s, index in
        var failures = 0
        // The timed span builds and encodes the requests too, as ip's parses its batch text.
        nodenetAdd = seconds {
            let requests = (0..<count).map {
                Route(destination: destination($0), interfaceIndex: index, scope: .link, protocol: proto).addRequest
            }
            failures = s.batch(requests).filter { if case .failure = $0 { true } else { false } }.count
        }
        guard failures == 0 else { throw BenchError("\(failures) route adds failed") }
        // Both sides check the count with one untimed dump first (the first dump after a mass
        // insert also pays the kernel's deferred trie clean-up), then time theirs.
        var dumped = try s.routes(RouteFilter(protocol: proto)).count
        guard dumped == count else { throw BenchError("dumped \(dumped) of \(count) routes") }
        rawDump = try seconds { dumped = try s.dump(RouteFilter(protocol: proto).request).count }
        nodenetDump = try seconds { dumped = try s.routes(RouteFilter(protocol: proto)).count }
    }
    // iproute2: the same routes from a batch file, then `ip route show` of them.
    try withBenchNamespace { name, s, _ in
        let text =
            (0..<count).map { "route add \(destination($0)) dev v0 scope link proto 201" }.joined(separator: "\n")
            + "\n"
        var status: Int32 = 0
        ipAdd = try seconds { status = try ip(["-n", name], batch: text) }
        guard status == 0 else { throw BenchError("ip -batch exited \(status)") }
        guard try s.routes(RouteFilter(protocol: proto)).count == count else {
            throw BenchError("ip -batch added too few")
        }
        ipShow = try seconds { status = try ip(["-n", name, "route", "show", "proto", "201"]) }
        guard status == 0 else { throw BenchError("ip route show exited \(status)") }
        ipStartup = try seconds { status = try ip(["-n", name, "link", "show", "lo"]) }
    }
    return [nodenetAdd, ipAdd, nodenetDump, ipShow, rawDump, ipStartup]
}

struct Report: Encodable {
    var rows: [Row]
    var targets: [TargetVerdict]
}

runBenchmark("netlink-bench", usage: Usage.text) {
    let options = try Options(Array(CommandLine.arguments.dropFirst()))
    var rows: [Row] = []
    var targets: [TargetVerdict] = []
    for count in options.counts {
        var samples: [[Double]] = []
        for _ in 0..<options.repeats { samples.append(try measure(count: count)) }
        let m = (0..<6).map { i in median(samples.map { $0[i] }) }
        rows.append(Row(count, measured: m))
        // Each run measures both tools back to back: its own ratios are the in-round ones.
        targets += [
            TargetVerdict("add speedup at \(count) routes", .atLeast, 1.5, values: samples.map { $0[1] / $0[0] }),
            TargetVerdict("dump time ratio at \(count) routes", .atMost, 0.5, values: samples.map { $0[2] / $0[3] }),
        ]
    }
    if options.json {
        try printJSON(Report(rows: rows, targets: targets))
    } else {
        print("routes   nodenet add        ip -batch add      speedup   nodenet dump  ip route show  dump time ratio")
        for r in rows {
            print(
                String(
                    format: "%-8d %6.3f s %7.0f/s  %6.3f s %7.0f/s  %5.2fx    %7.3f s     %7.3f s      %5.2f",
                    r.routes, r.nodenetAddSeconds, r.nodenetAddsPerSecond, r.ipBatchAddSeconds, r.ipBatchAddsPerSecond,
                    r.addSpeedup, r.nodenetDumpSeconds, r.ipRouteShowSeconds, r.dumpTimeRatio))
        }
        for r in rows {
            print(
                String(
                    format:
                        "breakdown %d: raw kernel dump (no decoding) %.3f s; `ip -n NS link show lo` start-up %.3f s",
                    r.routes, r.rawDumpSeconds, r.ipStartupSeconds))
        }
        print("(medians of \(options.repeats) runs)")
        printTargets(targets)
    }
}
