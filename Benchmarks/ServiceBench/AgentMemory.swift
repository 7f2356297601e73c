// service-bench --agent-memory: what `nodenetd run` holds and spends on a node with many
// services and nodes (issue 15: the agent's RSS at 100 000 services and 1 000 nodes).
//
// In the BPF lab's node n1 (socket LB on its cgroup), for each configuration in turn (no
// services, then N): the real `nodenetd run` binary (next to this one: `swift build -c release
// --product nodenetd`) is started on a spec of n1 with M made-up remote nodes (on-link in the
// fabric's /16) and the services (the routes to those nodes and service maps of the size N
// services are given, `loadBalancer.mapEntries`, are made first, by an apply of the spec
// without its services), its health endpoint on a unix socket of this run; once
// /healthz answers 200 (its first verified apply), its resident memory (VmRSS, and the peak
// VmHWM) is read from /proc a second later (the agent gives the apply's freed heap back just
// after it reports healthy: read at once, VmRSS was 312 to 455 MiB from run to run at 100 000
// services), then its CPU time over S seconds at rest (periodic audits, no changes), then it
// is stopped with SIGTERM (which tears nothing down) and the next starts on the node as the
// last one left it. (Figures before 2026-12-06 read VmRSS at once: compare them with care.)
import BenchSupport
import Foundation
import NodeNet
import NodeNetLab

#if canImport(Glibc)
    import Glibc
#endif

struct AgentMemoryOptions {
    var services = 100_000, nodes = 1000, seconds = 10, json = false

    init(_ args: [String]) throws {
        let (n, json) = try modeOptions(
            args, mode: "--agent-memory",
            numbers: ["--services": 1...100_000, "--nodes": 0...10_000, "--seconds": 1...60])
        (services, nodes, seconds) = (n["--services"] ?? services, n["--nodes"] ?? nodes, n["--seconds"] ?? seconds)
        self.json = json
    }
}

struct AgentMemoryResult: Encodable {
    var services: Int, nodes: Int
    /// Start to the first 200 from /healthz, seconds.
    var convergedSeconds: Double
    var rssMiB: Double, peakRSSMiB: Double
    /// CPU time (user + system) over the seconds at rest, as a share of one core.
    var cpuAtRest: Double
}

/// A field of /proc/PID/status in MiB (VmRSS, VmHWM).
private func statusMiB(_ pid: pid_t, _ field: String) -> Double {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("\(field):") })
    else { return 0 }
    return (Double(line.split(separator: " ").dropFirst().first ?? "") ?? 0) / 1024
}

/// utime + stime of a process, seconds.
private func cpuSeconds(_ pid: pid_t) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return 0 }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    return ((Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// The status line of `GET /healthz` over the unix socket at `path` (nil: no answer).
private func healthStatus(_ path: String) -> Int? {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var tv = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { buffer in
        for (i, byte) in path.utf8.prefix(buffer.count - 1).enumerated() { buffer[i] = byte }
    }
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
    }
    guard connected == 0 else { return nil }
    let request = Array("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)
    guard send(fd, request, request.count, 0x4000) == request.count else { return nil }
    var buffer = [UInt8](repeating: 0, count: 64)
    let n = read(fd, &buffer, buffer.count)
    guard n > 12 else { return nil }
    return Int(String(decoding: buffer[9..<12], as: UTF8.self))  // "HTTP/1.1 200 ..."
}

func runAgentMemoryBench(_ o: AgentMemoryOptions) throws {
    let nodenetd = URL(fileURLWithPath: selfExecutable()).deletingLastPathComponent().appendingPathComponent("nodenetd")
        .path
    guard FileManager.default.isExecutableFile(atPath: nodenetd) else {
        throw BenchError("\(nodenetd) is missing: swift build -c release --product nodenetd")
    }
    let lab = try cluster(name: labNames[0], mode: .bpf)
    log("lab \(lab.name) (bpf mode) up")
    try Lab(cluster: lab).up(cancelled: { interrupted != 0 })
    let work = FileManager.default.temporaryDirectory.appendingPathComponent("service-bench-agent-\(getpid())")
    try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: work) }
    var results: [AgentMemoryResult] = []
    for count in [0, o.services] {
        try checkInterrupted()
        var spec = lab.spec(forNode: "n1")!
        spec.nodes += (0..<o.nodes).map { i in
            RemoteNode(
                name: "m\(i)", address: IPAddress(ipv4: 0xAC12_1000 + UInt32(i)),  // 172.18.16.0 ...
                podCIDR: IPPrefix(IPAddress(ipv4: 0x0B00_0000 + UInt32(i) << 8), length: 24)!)
        }
        // The maps a node of that many services is given (the default, or the smallest size
        // that holds them), and its routes to the other nodes, made before the agent starts: it
        // measures a node configured so, not the one-time replacement of its maps and the
        // making of 1 000 routes.
        spec.loadBalancer.mapCapacity = max(
            .default, ServiceMapCapacity.smallest(frontends: count, entries: 4 * count, backends: 3 * count)!)
        guard try NodeController(spec: spec, namespace: .named(lab.namespace(ofNode: "n1"))).apply().verified else {
            throw BenchError("sizing the service maps (\(spec.loadBalancer.mapCapacity)) did not verify")
        }
        spec.services = services(count)
        let specFile = work.appendingPathComponent("n1-\(count).json")
        try spec.jsonData().write(to: specFile)
        let health = work.appendingPathComponent("health-\(count).sock").path
        log("nodenetd run: \(count) services, \(o.nodes) more nodes")
        let argv = [
            nodenetd, "run", "--spec", specFile.path, "--netns", lab.namespace(ofNode: "n1"), "--api-socket", "off",
            "--health-address", "unix:\(health)", "--log-level", "error",
        ]
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        let cargs = argv.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) } }
        var pid: pid_t = 0
        let start = Date()
        let rc = posix_spawn(&pid, nodenetd, &actions, nil, cargs, environ)
        guard rc == 0 else { throw BenchError("cannot run nodenetd: \(String(cString: strerror(rc)))") }
        runningChild = pid
        defer {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            runningChild = 0
        }
        // Bounded: 300 s to converge.
        while healthStatus(health) != 200 {
            try checkInterrupted()
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid { throw BenchError("nodenetd run exited (\(status))") }
            guard Date().timeIntervalSince(start) < 300 else { throw BenchError("nodenetd run did not converge") }
            usleep(20_000)
        }
        let converged = Date().timeIntervalSince(start)
        sleep(1)
        let rss = statusMiB(pid, "VmRSS")
        let cpuBefore = cpuSeconds(pid)
        sleep(UInt32(o.seconds))
        let cpu = (cpuSeconds(pid) - cpuBefore) / Double(o.seconds)
        results.append(
            AgentMemoryResult(
                services: count, nodes: o.nodes + 1, convergedSeconds: converged, rssMiB: rss,
                peakRSSMiB: statusMiB(pid, "VmHWM"), cpuAtRest: cpu))
    }
    if o.json {
        try printJSON(results)
    } else {
        print(
            "nodenetd run on a node with socket LB, \(o.nodes + 1) other nodes (RSS a second after its first verified apply)"
        )
        print("services   converged   RSS        peak RSS   CPU at rest (\(o.seconds) s)")
        for r in results {
            print(
                String(
                    format: "%8d   %7.2f s   %6.1f MiB  %6.1f MiB  %5.1f %%", r.services, r.convergedSeconds, r.rssMiB,
                    r.peakRSSMiB, 100 * r.cpuAtRest))
        }
    }
}
