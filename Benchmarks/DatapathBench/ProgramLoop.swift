// `datapath-bench --loop`: each BPF program's cost on one packet of each path, measured by the
// kernel's test harness (BPF_PROG_TEST_RUN) in a loop instead of on live traffic. The kernel
// times each run of the program alone (no device, no socket, no other process between), so two
// builds compare within a few percent where the run-time statistics of live traffic moved by a
// third between runs of one build. The programs, maps and helpers are the lab node's own: each
// flow is opened first (a SYN, and its reply where the path has one), then one packet of the
// open flow is run `calls` times per round (the figure: the mean of the middle 80 % of the runs);
// every run must return the path's verdict, and the
// packet as the program left it must be translated as the path translates (else the figure
// would be some other path's).
//
// With `--other-objects DIR` (another build's bpf_lxc.o and bpf_netdev.o, as its BPF plugin
// left them under .build/plugins/outputs/…/BPFBuild/objects), that build's programs are loaded
// on the same node's maps and run on the same packets, alternately with this build's within
// each round: the ratio this/other per round, median and range, is the comparison (a machine
// whose speed drifts between runs moves both alike).
import BPF
import BenchSupport
import CNodeNetBPF
import Foundation
import NodeNet
import NodeNetLab

/// One path's packet: which program runs it, on which of n1's devices, and what it must become.
struct LoopCase {
    var name: String
    var program: DatapathProgram
    var device: Int32
    var packet: [UInt8]
    /// What the packet's addresses and ports must be after the run (source, destination).
    var expect: (source: FlowEnd, destination: FlowEnd)
    /// Packets run once before the measured one (opening the flow), each with its device.
    var opening: [(program: DatapathProgram, device: Int32, packet: [UInt8])] = []
}

struct FlowEnd: Equatable, CustomStringConvertible {
    var address: IPAddress, port: UInt16
    var description: String { "\(address):\(port)" }
}

struct LoopOutput: Encodable {
    struct Path: Encodable {
        var path: String, program: String
        /// Median over the rounds of each round's figure (the mean of its runs' middle 80 %), and
        /// the range of those.
        var nanoseconds: Double, low: Double, high: Double
        /// With another build's objects: its figures, and this build's over its per round.
        var other: Double?, ratio: RatioSummary?
    }
    var calls: Int, rounds: Int
    var paths: [Path]
}

/// TCP flags.
let tcpSYN: UInt8 = 0x02
let tcpACK: UInt8 = 0x10

/// An Ethernet frame of an IPv4 TCP segment with one byte of payload (checksums filled in).
func tcpFrame(
    from source: MACAddress, to destination: MACAddress, _ from: FlowEnd, _ to: FlowEnd, flags: UInt8
) -> [UInt8] {
    var frame = destination.bytes + source.bytes + [0x08, 0x00]
    let total = 20 + 20 + 1
    var ip: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0x12, 0x34, 0x40, 0, 64, 6, 0, 0]
    ip += from.address.bytes + to.address.bytes
    let sum = checksum(ip)
    (ip[10], ip[11]) = (UInt8(sum >> 8), UInt8(sum & 0xFF))
    var tcp: [UInt8] = [UInt8(from.port >> 8), UInt8(from.port & 0xFF), UInt8(to.port >> 8), UInt8(to.port & 0xFF)]
    tcp += [0, 0, 0x10, 0, 0, 0, 0x20, 0]  // sequence and acknowledgement numbers
    tcp += [0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0, 0x61]  // data offset 5, flags, window; then 1 byte
    var pseudo = from.address.bytes + to.address.bytes + [0, 6, UInt8(tcp.count >> 8), UInt8(tcp.count & 0xFF)]
    pseudo += tcp
    let l4 = checksum(pseudo)
    (tcp[16], tcp[17]) = (UInt8(l4 >> 8), UInt8(l4 & 0xFF))
    frame += ip + tcp
    return frame
}

/// The Internet checksum of `bytes`.
func checksum(_ bytes: [UInt8]) -> UInt16 {
    var sum: UInt32 = 0
    var i = 0
    while i + 1 < bytes.count {
        sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
        i += 2
    }
    if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
    while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
    return ~UInt16(sum)
}

/// The source and destination of a frame of an IPv4 TCP segment.
func flowEnds(_ frame: [UInt8]) -> (source: FlowEnd, destination: FlowEnd)? {
    guard frame.count >= 14 + 20 + 4, frame[12] == 0x08, frame[13] == 0x00, frame[14] == 0x45 else { return nil }
    func port(_ at: Int) -> UInt16 { UInt16(frame[at]) << 8 | UInt16(frame[at + 1]) }
    return (
        FlowEnd(address: IPAddress(bytes: frame[26..<30])!, port: port(34)),
        FlowEnd(address: IPAddress(bytes: frame[30..<34])!, port: port(36))
    )
}

/// Another build's program of `kind`, loaded from `directory` on the maps pinned in `layout`
/// (libbpf refuses a pinned map whose type or size its object declares otherwise: the lab's maps
/// are the default size, the one both builds' objects declare; a map only that build has is
/// made and pinned in the lab node's directory, which goes with the lab).
func otherBuildProgram(
    _ kind: DatapathProgram, from directory: String, layout: BPFFSLayout
) throws
    -> BPFProgramHandle
{
    let path = "\(directory)/\(kind.object).o"
    guard let bytes = FileManager.default.contents(atPath: path) else { throw BenchError("cannot read \(path)") }
    let object = try BPFObject(bytes: [UInt8](bytes), name: kind.object, pinRoot: layout.directory)
    try object.load()
    // (The handle keeps the program once the object is closed.)
    return try BPFProgramHandle(id: try BPFProgramInfo(fd: try object.programFD(named: kind.function)).id)
}

func programLoop(tag: String, calls: Int, rounds: Int, json: Bool, otherObjects: String?) throws {
    var c = try LabCluster.load(
        Data(
            """
            { "name": "\(tag)l", "nodes": [
              { "name": "n1", "address": "172.18.0.2", "podCIDR": "10.0.2.0/24", "pods": [ { "name": "p1", "ip": "10.0.2.10" }, { "name": "p2", "ip": "10.0.2.11" } ] },
              { "name": "n2", "address": "172.18.0.3", "podCIDR": "10.0.1.0/24", "pods": [ { "name": "p3", "ip": "10.0.1.10" } ] } ],
              "services": \(nodePortServices) }
            """.utf8))
    c.datapathMode = .bpf
    c.ipv4BigTCP = .off
    defer { Lab.down(name: c.name) }
    try Lab(cluster: c).up()
    let n1 = c.namespace(ofNode: "n1")
    let layout = BPFFSLayout(directory: c.bpffsDirectory(ofNode: "n1"))
    var byKind: [DatapathProgram: BPFProgramHandle] = [:]
    for p in try LabPrograms.attached(bpffsDirectories: [layout.directory], namespaces: [n1]) {
        if let program = DatapathProgram(rawValue: p.kind), byKind[program] == nil { byKind[program] = p.handle }
    }
    var otherByKind: [DatapathProgram: BPFProgramHandle] = [:]
    if let otherObjects {
        for kind in DatapathProgram.allCases {
            otherByKind[kind] = try otherBuildProgram(kind, from: otherObjects, layout: layout)
        }
    }
    guard let endpoints = try BPFMap<nodenet_endpoint_key, nodenet_endpoint>.pinned(at: layout.path(.endpoints)) else {
        throw BenchError("n1 has no endpoints map under \(layout.directory)")
    }
    /// A pod's lxc: its ifindex, its MAC (the pod's gateway) and the pod's own MAC.
    func pod(_ ip: String) throws -> (device: Int32, gateway: MACAddress, mac: MACAddress) {
        guard let e = try endpoints.lookup(EndpointEntry.key(IPAddress(ip)!)).map(EndpointEntry.init) else {
            throw BenchError("n1 has no endpoint \(ip)")
        }
        return (Int32(bitPattern: e.ifindex), e.hostMAC, e.podMAC)
    }
    let (p1, p2) = (try pod("10.0.2.10"), try pod("10.0.2.11"))
    let node = try NetlinkSocket(namespace: .named(n1))
    guard let uplink = try node.link(named: "eth0"), let uplinkMAC = uplink.address else {
        throw BenchError("n1 has no eth0")
    }
    let device = Int32(uplink.index.unsigned)
    let outsideMAC = MACAddress(bytes: [0x02, 0, 0, 0, 0, 0x01])!
    func end(_ ip: String, _ port: UInt16) -> FlowEnd { FlowEnd(address: IPAddress(ip)!, port: port) }
    let client = end("172.18.0.1", 40_000)
    func outside(_ to: FlowEnd, _ flags: UInt8, from: FlowEnd = client) -> [UInt8] {
        tcpFrame(from: outsideMAC, to: uplinkMAC, from, to, flags: flags)
    }
    func fromPod(
        _ p: (device: Int32, gateway: MACAddress, mac: MACAddress), _ from: FlowEnd, _ to: FlowEnd, _ flags: UInt8
    )
        -> [UInt8]
    {
        tcpFrame(from: p.mac, to: p.gateway, from, to, flags: flags)
    }
    let (local, remote, nodePort) = (end("10.0.2.11", 7777), end("10.0.1.10", 7777), end("172.18.0.2", 30777))
    let remotePort = end("172.18.0.2", 31777)
    let (c1, c2, c3) = (end("172.18.0.1", 40_001), end("172.18.0.1", 40_002), end("172.18.0.1", 40_003))
    var cases: [LoopCase] = [
        LoopCase(
            name: "same node", program: .fromContainer, device: p1.device,
            packet: fromPod(p1, end("10.0.2.10", 40_010), local, tcpACK),
            expect: (end("10.0.2.10", 40_010), local)),
        LoopCase(
            name: "two nodes", program: .fromContainer, device: p1.device,
            packet: fromPod(p1, end("10.0.2.10", 40_011), remote, tcpACK),
            expect: (end("10.0.2.10", 40_011), remote)),
        LoopCase(
            name: "outside to pod", program: .fromNetdev, device: device, packet: outside(local, tcpACK, from: c1),
            expect: (c1, local), opening: [(.fromNetdev, device, outside(local, tcpSYN, from: c1))]),
        LoopCase(
            name: "outside to pod, reply", program: .fromContainer, device: p2.device,
            packet: fromPod(p2, local, c1, tcpACK), expect: (local, c1)),
        LoopCase(
            name: "NodePort local", program: .fromNetdev, device: device, packet: outside(nodePort, tcpACK, from: c2),
            expect: (c2, local), opening: [(.fromNetdev, device, outside(nodePort, tcpSYN, from: c2))]),
        LoopCase(
            name: "NodePort local, reply", program: .fromContainer, device: p2.device,
            packet: fromPod(p2, local, c2, tcpACK), expect: (nodePort, c2)),
    ]
    // The remote backend's flow: opened here, its SNAT port read off the translated packet.
    let opened = try NetworkNamespace.run(in: .named(n1)) {
        try byKind[.fromNetdev]!.testRun(packet: outside(remotePort, tcpSYN, from: c3), interfaceIndex: device)
    }
    guard opened.verdict == 7, let snat = flowEnds(opened.packet), snat.destination == remote,
        snat.source.address == IPAddress("172.18.0.2")
    else {
        throw BenchError(
            "NodePort remote: verdict \(opened.verdict), packet \(flowEnds(opened.packet).map { "\($0)" } ?? "?")")
    }
    cases += [
        LoopCase(
            name: "NodePort remote", program: .fromNetdev, device: device,
            packet: outside(remotePort, tcpACK, from: c3), expect: (snat.source, remote)),
        LoopCase(
            name: "NodePort remote, reply", program: .fromNetdev, device: device,
            packet: tcpFrame(from: outsideMAC, to: uplinkMAC, remote, snat.source, flags: tcpACK),
            expect: (remotePort, c3)),
    ]
    /// The run time of `program` on the case's packet over `calls` runs, each checked: the mean
    /// of the middle 80 % (the kernel's clock reads in steps of about 10 ns on this machine; a
    /// median stays on that grid, a mean of readings that noise spreads over it resolves finer).
    func measure(_ loop: LoopCase, _ program: BPFProgramHandle, _ build: String) throws -> Double {
        var times: [Double] = []
        times.reserveCapacity(calls)
        for _ in 0..<calls {
            let run = try program.testRun(packet: loop.packet, interfaceIndex: loop.device)
            guard run.verdict == 7, let ends = flowEnds(run.packet), ends == loop.expect else {
                throw BenchError(
                    "\(loop.name) (\(loop.program.rawValue) of \(build)): verdict \(run.verdict) (want 7, a redirect), packet \(flowEnds(run.packet).map { "\($0.source) -> \($0.destination)" } ?? "?") (want \(loop.expect.source) -> \(loop.expect.destination))"
                )
            }
            times.append(Double(run.nanoseconds))
        }
        times.sort()
        let middle = times[(calls / 10)..<(calls - calls / 10)]
        return middle.reduce(0, +) / Double(middle.count)
    }
    var perRound = [[Double]](repeating: [], count: cases.count)
    var otherPerRound = [[Double]](repeating: [], count: cases.count)
    try NetworkNamespace.run(in: .named(n1)) {
        for k in cases.indices {
            for open in cases[k].opening {
                _ = try byKind[open.program]!.testRun(packet: open.packet, interfaceIndex: open.device)
            }
        }
        for round in 0..<rounds {
            for (k, loop) in cases.enumerated() {  // (paths, and builds, interleaved within each round)
                guard let program = byKind[loop.program] else { throw BenchError("n1 has no \(loop.program.rawValue)") }
                guard let other = otherByKind[loop.program] else {
                    perRound[k].append(try measure(loop, program, "this build"))
                    continue
                }
                // Which build goes first alternates from round to round.
                if round % 2 == 0 {
                    perRound[k].append(try measure(loop, program, "this build"))
                    otherPerRound[k].append(try measure(loop, other, "the other build"))
                } else {
                    otherPerRound[k].append(try measure(loop, other, "the other build"))
                    perRound[k].append(try measure(loop, program, "this build"))
                }
            }
        }
    }
    let paths = cases.indices.map { k in
        LoopOutput.Path(
            path: cases[k].name, program: cases[k].program.rawValue, nanoseconds: median(perRound[k]),
            low: perRound[k].min()!, high: perRound[k].max()!,
            other: otherPerRound[k].isEmpty ? nil : median(otherPerRound[k]),
            ratio: otherPerRound[k].isEmpty ? nil : RatioSummary(zip(perRound[k], otherPerRound[k]).map { $0 / $1 }))
    }
    if json {
        try printJSON(LoopOutput(calls: calls, rounds: rounds, paths: paths))
        return
    }
    print("BPF program cost per packet (BPF_PROG_TEST_RUN on n1, \(calls) runs a round, \(rounds) rounds):")
    print("median over the rounds of each round's mean of the middle 80 % of its runs (range)")
    for p in paths {
        print(
            "\(p.path.padding(toLength: 24, withPad: " ", startingAt: 0)) \(p.program.padding(toLength: 15, withPad: " ", startingAt: 0)) "
                + String(format: "%4.0f ns (%.0f-%.0f)", p.nanoseconds, p.low, p.high)
                + (p.other.map { String(format: ", other build %4.0f ns", $0) } ?? "")
                + (p.ratio.map { ", this/other \($0)" } ?? ""))
    }
}
