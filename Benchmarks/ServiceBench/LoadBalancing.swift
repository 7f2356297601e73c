import BenchSupport
import Foundation
import NodeNet
import NodeNetLab

#if canImport(Glibc)
    import Glibc
#endif

// service-bench --load-balancing: what Maglev and session affinity cost (issue 16).
//
//   .build/release/service-bench --load-balancing [--rounds R] [--seconds S] [--services N] [--backends B] [--json]
//
// - Table build: N Maglev tables of B backends each (16 381 entries), built in this process.
// - Programming: on n1 of the BPF lab with socket LB off (the packet path then serves every
//   ClusterIP, so every frontend has a table), N ClusterIP services of B backends (drawn from a
//   pool of 10 000 made-up pod addresses of n2) applied with `loadBalancer.algorithm` random and
//   with maglev, then removed; the two in each round, in alternating order. Ratio maglev/random.
// - Latency (connect + GET + close, median): to a ClusterIP with `sessionAffinity: ClientIP`
//   against one without, from pod c through socket LB; and from the external host to a NodePort
//   of n1 with remote backends, Maglev against random (re-applied between the two). Both pairs
//   in each round, in alternating order. Ratios affinity/none and maglev/random.
// Every figure is the median of in-round ratios with its range.

struct LoadBalancingOptions {
    var rounds = 5, seconds = 2, services = 1000, backends = 100, json = false

    init(_ args: [String]) throws {
        let (n, json) = try modeOptions(
            args, mode: "--load-balancing",
            numbers: ["--rounds": 1...20, "--seconds": 1...30, "--services": 1...1000, "--backends": 1...100])
        (rounds, seconds) = (n["--rounds"] ?? rounds, n["--seconds"] ?? seconds)
        (services, backends) = (n["--services"] ?? services, n["--backends"] ?? backends)
        self.json = json
    }
}

struct LoadBalancingResult: Encodable {
    var services: Int, backends: Int, tableSize: Int, rounds: Int
    /// Building the N tables in this process, seconds per round (median) and per table (ms).
    var tableBuildSeconds: Double, tableBuildMillisecondsPerTable: Double
    var applyRandomSeconds: Double, applyMaglevSeconds: Double
    var applyMaglevOverRandom: RatioSummary
    var affinityMedianMicroseconds: Double, noAffinityMedianMicroseconds: Double
    var latencyAffinityOverNone: RatioSummary
    var maglevMedianMicroseconds: Double, randomMedianMicroseconds: Double
    var latencyMaglevOverRandom: RatioSummary
}

/// B backends for service i from the pool (10.2.1.1 ...), distinct per service.
func poolBackends(service i: Int, count: Int) -> [ServiceBackend] {
    (0..<count).map { k in
        let j = (i * 37 + k) % 10_000
        return ServiceBackend(ip: IPAddress(ipv4: 0x0A02_0000 + UInt32(1 + j / 250) << 8 + UInt32(j % 250 + 1)))
    }
}

func runLoadBalancingBench(_ o: LoadBalancingOptions) throws {
    let tableSize = LoadBalancerSettings.defaultMaglevTableSize
    // Table build, in process.
    var builds: [Double] = []
    let backendSets = (0..<o.services).map { i in
        poolBackends(service: i, count: o.backends).enumerated().map {
            (address: BackendAddress(address: $0.element.ip, port: 80, protocol: .tcp), id: UInt32($0.offset + 1))
        }
    }
    for _ in 0..<o.rounds {
        var sink = 0
        builds.append(
            seconds {
                for set in backendSets { sink &+= Int(MaglevTable(size: tableSize, backends: set).entries[0]) }
            })
        if sink == -1 { print(sink) }
    }
    log("table build: \(o.services) tables of \(o.backends) backends, median \(median(builds)) s")

    let lab = try cluster(name: labNames[0], mode: .bpf)
    log("lab \(lab.name) up")
    try Lab(cluster: lab).up(cancelled: { interrupted != 0 })
    var servers: [PodServer] = []
    defer { servers.forEach { $0.stop() } }
    for pod in lab.nodes[1].pods {
        let s = try PodServer(name: pod.name, ip: pod.ip, namespace: .named(lab.namespace(ofPod: pod.name)))
        s.start()
        servers.append(s)
    }
    let node = lab.namespace(ofNode: "n1")
    var base = lab.spec(forNode: "n1")!
    base.services = []
    func apply(_ spec: NodeSpec) throws -> Double {
        var report: ApplyReport?
        let t = try seconds { report = try NodeController(spec: spec, namespace: .named(node)).apply() }
        guard let report, report.verified else {
            throw BenchError("apply did not verify: \(report?.mismatches.prefix(3) ?? [])")
        }
        return t
    }
    _ = try apply(base)

    // Programming, random against maglev, socket LB off.
    var packetLB = base
    packetLB.socketLB = SocketLBSettings()
    _ = try apply(packetLB)
    var many = packetLB
    many.services = (0..<o.services).map { i in
        ServiceSpec(
            name: "bench/lb\(i)", type: .clusterIP, clusterIP: clusterIP(i),
            ports: [ServicePort(name: "http", protocol: .tcp, port: servicePort)],
            backends: poolBackends(service: i, count: o.backends))
    }
    var randomApply: [Double] = []
    var maglevApply: [Double] = []
    var applyRatios: [Double] = []
    for r in 0..<o.rounds {
        try checkInterrupted()
        var times: [LoadBalancerAlgorithm: Double] = [:]
        for algorithm in r % 2 == 0 ? [LoadBalancerAlgorithm.random, .maglev] : [.maglev, .random] {
            var spec = many
            spec.loadBalancer.algorithm = algorithm
            times[algorithm] = try apply(spec)
            _ = try apply(packetLB)
        }
        log("round \(r + 1): apply random \(times[.random]!) s, maglev \(times[.maglev]!) s")
        randomApply.append(times[.random]!)
        maglevApply.append(times[.maglev]!)
        applyRatios.append(times[.maglev]! / times[.random]!)
    }

    // Latency: affinity against none (socket LB), Maglev against random (from outside).
    _ = try apply(base)
    var two = base
    let plain = IPAddress("10.96.200.1")
    let affine = IPAddress("10.96.200.2")
    let nodePort = 30080
    two.services = [
        ServiceSpec(
            name: "bench/plain", type: .nodePort, clusterIP: plain,
            ports: [ServicePort(name: "http", protocol: .tcp, port: servicePort, nodePort: nodePort)],
            backends: realBackends.map { ServiceBackend(ip: $0) }),
        ServiceSpec(
            name: "bench/affine", type: .clusterIP, clusterIP: affine,
            ports: [ServicePort(name: "http", protocol: .tcp, port: servicePort)],
            backends: realBackends.map { ServiceBackend(ip: $0) }),
    ]
    two.services[1].sessionAffinity = .clientIP
    _ = try apply(two)
    let pod = lab.namespace(ofPod: "c")
    let cgroup = lab.cgroupPath(ofNode: "n1")
    let nodeAddress = lab.nodes[0].address
    var withAffinity: [Double] = []
    var without: [Double] = []
    var affinityRatios: [Double] = []
    var maglevLatency: [Double] = []
    var randomLatency: [Double] = []
    var maglevRatios: [Double] = []
    for r in 0..<o.rounds {
        try checkInterrupted()
        var a = 0.0
        var n = 0.0
        for affinity in r % 2 == 0 ? [false, true] : [true, false] {
            let result = try client(
                namespace: pod, cgroup: cgroup, address: affinity ? affine : plain, seconds: o.seconds,
                everyBackend: !affinity)
            if affinity { a = result.medianMicroseconds } else { n = result.medianMicroseconds }
        }
        var m = 0.0
        var x = 0.0
        for algorithm in r % 2 == 0 ? [LoadBalancerAlgorithm.random, .maglev] : [.maglev, .random] {
            var spec = two
            spec.loadBalancer.algorithm = algorithm
            _ = try apply(spec)
            let result = try client(
                namespace: lab.externalNamespace, cgroup: nil, address: nodeAddress, port: nodePort,
                seconds: o.seconds)
            if algorithm == .maglev { m = result.medianMicroseconds } else { x = result.medianMicroseconds }
        }
        log("round \(r + 1): affinity \(a) µs, none \(n) µs; from outside maglev \(m) µs, random \(x) µs")
        withAffinity.append(a)
        without.append(n)
        affinityRatios.append(a / n)
        maglevLatency.append(m)
        randomLatency.append(x)
        maglevRatios.append(m / x)
    }
    let result = LoadBalancingResult(
        services: o.services, backends: o.backends, tableSize: tableSize, rounds: o.rounds,
        tableBuildSeconds: median(builds), tableBuildMillisecondsPerTable: 1000 * median(builds) / Double(o.services),
        applyRandomSeconds: median(randomApply), applyMaglevSeconds: median(maglevApply),
        applyMaglevOverRandom: RatioSummary(applyRatios),
        affinityMedianMicroseconds: median(withAffinity), noAffinityMedianMicroseconds: median(without),
        latencyAffinityOverNone: RatioSummary(affinityRatios),
        maglevMedianMicroseconds: median(maglevLatency), randomMedianMicroseconds: median(randomLatency),
        latencyMaglevOverRandom: RatioSummary(maglevRatios))
    if o.json {
        try printJSON(result)
        return
    }
    print("Maglev and session affinity, medians of \(o.rounds) rounds (ratios: median of in-round ratios, range)")
    print(
        String(
            format: "table build: %d tables of %d backends (%d entries): %.3f s, %.2f ms a table", o.services,
            o.backends, tableSize, result.tableBuildSeconds, result.tableBuildMillisecondsPerTable))
    print(
        String(
            format: "programming %d services x %d backends: random %.3f s, maglev %.3f s; maglev/random %@",
            o.services, o.backends, result.applyRandomSeconds, result.applyMaglevSeconds,
            result.applyMaglevOverRandom.description))
    print(
        String(
            format:
                "connection latency, pod to ClusterIP (socket LB): affinity %.0f µs, none %.0f µs; affinity/none %@",
            result.affinityMedianMicroseconds, result.noAffinityMedianMicroseconds,
            result.latencyAffinityOverNone.description))
    print(
        String(
            format:
                "connection latency, outside to NodePort (packet path): maglev %.0f µs, random %.0f µs; maglev/random %@",
            result.maglevMedianMicroseconds, result.randomMedianMicroseconds,
            result.latencyMaglevOverRandom.description))
}
