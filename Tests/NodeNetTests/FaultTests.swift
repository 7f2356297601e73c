import BPF
import CBPF
import CNodeNetBPF
import Foundation
import TestSupport
import Testing

@testable import NodeNet
@testable import NodeNetAgent

#if canImport(Glibc)
    import Glibc
#endif

/// The fault-injection suite (`swift test --filter FaultTests`): each fault is followed by a
/// check that the node converges (`plan` shows 0 changes), nothing nodenet owns was lost, and
/// pod traffic flows. Skipped without root.
@Suite(.serialized, .enabled(if: Privileges.runsNamespaceTests, Comment(rawValue: Privileges.skipReason)))
struct FaultTests {
    static var binary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("nodenetd")
    }

    /// 250 pods, 1 000 remote nodes and 2 000 services in BPF mode (`full`), or a smaller node
    /// (`!full`: 200 pods, 1 500 services), so that going from one to the other is real work.
    static func bigSpec(_ t: TestNode, full: Bool, bpffs: String) -> NodeSpec {
        var spec = t.spec(
            podCount: 0,
            remote: (0..<1000).map { i in
                RemoteNode(
                    name: "n\(i)", address: IPAddress(ipv4: 0xAC12_1000 + UInt32(i)),
                    podCIDR: IPPrefix(IPAddress(ipv4: 0x0B00_0000 + UInt32(i) << 8), length: 24)!)
            })
        // 250 addresses of the /24 (the router's .184 left out); the same pods in both specs.
        let ips = (1...254).filter { $0 != 184 }.prefix(full ? 250 : 200)
        spec.pods = zip(ips, t.pods).map {
            PodSpec(name: "pod\($0)", netns: $1, ip: IPAddress(ipv4: 0x0A00_0200 + UInt32($0)))
        }
        spec.datapath = DatapathSettings(mode: .bpf)
        spec.bpffsDirectory = bpffs
        spec.services = (0..<(full ? 2000 : 1500)).map { i in
            ServiceSpec(
                name: "default/s\(i)", type: .clusterIP, clusterIP: IPAddress(ipv4: 0x0A60_0000 + UInt32(i)),
                ports: [ServicePort(port: 80)],
                backends: (0..<3).map { ServiceBackend(ip: spec.pods[(i + $0 * 7) % spec.pods.count].ip) })
        }
        return spec
    }

    /// Each spec in a file of its own under the temporary directory (the caller removes them).
    static func specFiles(_ specs: [NodeSpec]) throws -> [URL] {
        try specs.map { spec in
            let file = FileManager.default.temporaryDirectory.appendingPathComponent(TestNames.unique("spec") + ".json")
            try spec.jsonData().write(to: file)
            return file
        }
    }

    /// A tc program that only returns TCX_NEXT (-1): `r0 = -1; exit`, loaded from two raw
    /// instructions (no object file). The caller closes the fd.
    static func loadPassThroughProgram() throws -> Int32 {
        let instructions: [UInt64] = [0xFFFF_FFFF_0000_00B7, 0x0000_0000_0000_0095]
        let fd = instructions.withUnsafeBytes { raw in
            bpf_prog_load(
                BPF_PROG_TYPE_SCHED_CLS, "foreign_next", "GPL", raw.baseAddress!.assumingMemoryBound(to: bpf_insn.self),
                2,
                nil)
        }
        guard fd >= 0 else { throw BPFError(fd < -1 ? -fd : errno, "loading a pass-through tc program") }
        return fd
    }

    /// A small, reproducible random source (the seed is printed; set NODENET_FAULT_SEED to replay).
    struct Random {
        var state: UInt64
        mutating func next(below bound: UInt64) -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return (state >> 33) % bound
        }
    }

    func converged(_ t: TestNode, _ spec: NodeSpec, _ what: String) throws {
        let report = try t.controller(spec).apply()
        #expect(report.verified, "\(what): \(report.mismatches.prefix(3))")
        #expect(try t.controller(spec).plan().isEmpty, "\(what): plan shows 0 changes")
        let lxcs = try NetlinkSocket(namespace: t.namespace).links().filter { NodeNetNames.isEndpointDevice($0.name) }
        #expect(lxcs.count == spec.pods.count, "\(what): every endpoint and no other")
    }

    @Test func killedAtRandomPointsOfABigApplyTheNextApplyConverges() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary.path), "build nodenetd first")
        let seed = ProcessInfo.processInfo.environment["NODENET_FAULT_SEED"].flatMap(UInt64.init) ?? UInt64(getpid())
        print("FaultTests: kill -9 during apply, seed \(seed)")
        var random = Random(state: seed)
        let bpffs = "/sys/fs/bpf/\(TestNames.unique("fault"))"
        defer { BPFFS.remove(bpffs) }
        try await TestNode.with(pods: 250) { t in
            let specs = [Self.bigSpec(t, full: true, bpffs: bpffs), Self.bigSpec(t, full: false, bpffs: bpffs)]
            let files = try Self.specFiles(specs)
            defer { for f in files { try? FileManager.default.removeItem(at: f) } }
            // How long one apply from the other state takes here: kills land anywhere in it.
            try converged(t, specs[1], "start")
            let clock = ContinuousClock()
            let start = clock.now
            try converged(t, specs[0], "timing")
            let applyMilliseconds = max(
                50,
                Int(
                    (clock.now - start).components.attoseconds / 1_000_000_000_000_000 + (clock.now - start).components
                        .seconds * 1000))
            var interrupted = 0
            var midApply = 0
            for i in 0..<50 {
                let spec = specs[(i + 1) % 2]
                let process = Process()
                process.executableURL = Self.binary
                process.arguments = ["apply", files[(i + 1) % 2].path, "--netns", t.node]
                process.standardOutput = FileHandle.nullDevice
                process.standardError = FileHandle.nullDevice
                try process.run()
                if i % 2 == 0 {
                    // Anywhere, from start-up to the end of the apply.
                    usleep(UInt32(random.next(below: UInt64(applyMilliseconds) * 3 / 2) * 1000))
                } else {
                    // Once the ledger says the apply is under way (the kernel is being changed).
                    let deadline = Date().addingTimeInterval(30)
                    while Date() < deadline, process.isRunning,
                        (try? Ledger.load(from: t.stateDirectory))??.complete != false
                    {
                        usleep(500)
                    }
                    usleep(UInt32(random.next(below: 200) * 1000))
                }
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                // Killed, not finished: the kernel's word (the signal ended it), and for the kills
                // timed by the ledger, the ledger the kill left says the apply was under way.
                if process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGKILL {
                    interrupted += 1
                    if i % 2 == 1, (try? Ledger.load(from: t.stateDirectory))??.complete == false { midApply += 1 }
                }
                try converged(t, spec, "after kill \(i)")
                if i % 10 == 9 {
                    #expect(try t.ping(from: 0, "10.0.2.2"), "pod to pod after kill \(i)")
                    #expect(try t.ping(from: 0, "172.18.0.3"), "pod to another node after kill \(i)")
                }
            }
            print(
                "FaultTests: 50 kills, \(interrupted) ended by the signal, \(midApply) with the ledger of an apply under way (apply takes ~\(applyMilliseconds) ms here)"
            )
            #expect(interrupted >= 25, "at least the kills timed by the ledger end the process")
            #expect(midApply >= 10, "kills timed by the ledger leave an incomplete ledger behind")
        }
    }

    @Test func twoWritersRacingNeverLeaveAHalfAppliedNode() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary.path), "build nodenetd first")
        try await TestNode.with(pods: 4) { t in
            let specs = [t.spec(podCount: 4), t.spec(podCount: 2)]
            let files = try Self.specFiles(specs)
            defer { for f in files { try? FileManager.default.removeItem(at: f) } }
            var refused = 0
            for round in 0..<10 {
                let runs = files.map { file -> (Process, Pipe) in
                    let process = Process()
                    process.executableURL = Self.binary
                    process.arguments = ["apply", file.path, "--netns", t.node]
                    let errors = Pipe()
                    process.standardOutput = FileHandle.nullDevice
                    process.standardError = errors
                    return (process, errors)
                }
                for (process, _) in runs { try process.run() }
                for (process, errors) in runs {
                    process.waitUntilExit()
                    let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                    if process.terminationStatus != 0 {
                        #expect(
                            text.contains("another nodenetd (pid "), "round \(round): refused, saying by whom: \(text)")
                        refused += 1
                    }
                }
                // One of the two won and left its node whole.
                let plans = try specs.map { try t.controller($0).plan().isEmpty }
                #expect(plans.contains(true), "round \(round): the node matches one of the two specs")
            }
            print("FaultTests: two writers, 10 rounds, \(refused) refusals")
            try converged(t, specs[0], "after racing writers")
            #expect(try t.ping(from: 0, "10.0.2.204"))
        }
    }

    @Test func aLedgerThatIsCorruptMissingUnreadableOrOnAFullDiskNeverWedgesTheNode() async throws {
        try await TestNode.with(pods: 2) { t in
            let spec = t.spec()
            try converged(t, spec, "start")
            let ledger = Ledger.path(in: t.stateDirectory)
            // Corrupt.
            try Data("{\"node\": \"worker2\", \"endpoints\": [".utf8).write(to: URL(fileURLWithPath: ledger))
            try converged(t, spec, "corrupt ledger")
            // Missing.
            unlink(ledger)
            try converged(t, spec, "missing ledger")
            // Unreadable: a directory where the file should be.
            unlink(ledger)
            try FileManager.default.createDirectory(atPath: ledger, withIntermediateDirectories: false)
            try converged(t, spec, "ledger is a directory")
            #expect(try t.ping(from: 0, "10.0.2.204"))
            // A full disk: the state directory on a 64 KiB tmpfs filled to the brim.
            try Self.withSmallTmpfs { small in
                var onSmall = spec
                onSmall.stateDirectory = small + "/state"
                try converged(t, onSmall, "state on the small tmpfs")
                let filler = try Self.fill(small)
                var fewer = onSmall
                fewer.pods.removeLast()
                let error = #expect(throws: (any Error).self) { try t.controller(fewer).apply() }
                #expect(
                    "\(error.map { "\($0)" } ?? "none")".contains("No space left on device"),
                    "says why: \(error as Any)")
                #expect(try t.ping(from: 0, "10.0.2.204"), "the datapath is untouched by a full disk")
                unlink(filler)
                try converged(t, fewer, "after the disk has room again")
                try converged(t, onSmall, "back to two pods")
            }
        }
    }

    /// The endpoint store on a full filesystem: a save that cannot be written says so in a
    /// sentence, leaves the last good file exactly as it was (atomic write: nothing half
    /// written, no temporary left behind), and works again once there is room.
    @Test func anEndpointStoreOnAFullDiskKeepsItsLastGoodFile() throws {
        try Self.withSmallTmpfs { small in
            let directory = small + "/state"
            let spec = EndpointStoreTests.spec()
            var store = EndpointStore(stateDirectory: directory, node: "w2")
            func add(_ name: String) throws {
                _ = try store.add(
                    EndpointStoreTests.attachment(name), netns: "/run/netns/\(name)", podNamespace: "default",
                    podName: name, spec: spec)
            }
            try add("a")
            try store.save()
            let path = EndpointStore.path(stateDirectory: directory)
            let good = try Data(contentsOf: URL(fileURLWithPath: path))
            let filler = try Self.fill(small)
            for name in (0..<40).map({ "pod\($0)" }) { try add(name) }
            let error = #expect(throws: NodeNetError.self) { try store.save() }
            let text = "\(error.map { "\($0)" } ?? "none")"
            #expect(text.contains("the endpoint store") && text.contains("No space left on device"), "\(text)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == good, "the last good file is untouched")
            #expect(
                try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".tmp") }.isEmpty,
                "no temporary file is left behind")
            let loaded = try EndpointStore.load(stateDirectory: directory, node: "w2", podCIDR: "10.0.2.0/24")
            #expect(loaded.endpoints.map(\.podName) == ["a"])
            unlink(filler)
            try store.save()
            #expect(
                try EndpointStore.load(stateDirectory: directory, node: "w2", podCIDR: "10.0.2.0/24").endpoints.count
                    == 41)
        }
    }

    /// A 64 KiB tmpfs, mounted for `body` and removed after, whatever happens.
    static func withSmallTmpfs<T>(_ body: (String) throws -> T) throws -> T {
        let small = FileManager.default.temporaryDirectory.appendingPathComponent(TestNames.unique("tmpfs")).path
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        defer { rmdir(small) }
        try #require(mount("tmpfs", small, "tmpfs", 0, "size=64k") == 0, "mounting a test tmpfs")
        defer { umount2(small, Int32(MNT_DETACH)) }
        return try body(small)
    }

    /// Fills what is left of the filesystem at `directory`, block by block until the kernel
    /// says no; returns the filler (unlink it to make room again).
    static func fill(_ directory: String) throws -> String {
        let filler = directory + "/filler"
        let fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        try #require(fd >= 0)
        let block = [UInt8](repeating: 1, count: 1024)
        var filled = 0
        while filled < 1 << 20, write(fd, block, block.count) == block.count { filled += block.count }
        close(fd)
        return filler
    }

    /// Faults under a running agent, each repaired without a restart.
    @Test func faultsUnderARunningAgent() async throws {
        let bpffs = "/sys/fs/bpf/\(TestNames.unique("fault"))"
        defer { BPFFS.remove(bpffs) }
        let configure: (inout NodeSpec) -> Void = {
            $0.datapath = DatapathSettings(mode: .bpf)
            $0.bpffsDirectory = bpffs
        }
        try await AgentIntegrationTests.withAgent(pods: 3, configure: configure) { t, agent, file, lines in
            let spec = try NodeSpec.load(path: file.path)
            func settled(_ what: String) async throws {
                _ = try await AgentIntegrationTests.waitFor(what, seconds: 30) {
                    guard agent.health == .healthy else { return false }
                    return try t.controller(spec).plan().isEmpty
                }
            }
            // Pins removed under the agent (what unmounting bpffs does to a node; the machine's
            // own bpffs is never unmounted here).
            #expect(BPFFSLayout(directory: bpffs).removeOwnedPins())
            try await settled("the pins are back")
            #expect(try t.ping(from: 0, "10.0.2.204"))
            // Sysctls flipped.
            try Sysctl.write("net/ipv4/conf/cilium_host/rp_filter", "1", in: t.namespace)
            try Sysctl.write("net.ipv4.ip_forward", "0", in: t.namespace)
            try await settled("the sysctls are reset")
            #expect(try Sysctl.read("net.ipv4.ip_forward", in: t.namespace) == "1")
            // A pod's namespace deleted behind the agent: reported, cleaned, the rest untouched.
            try NetworkNamespace.delete(t.pods[2])
            // Nothing of ours holds the namespace between reconciles: it goes at once, with its veth.
            try await AgentIntegrationTests.waitFor("the vanished pod reported", seconds: 30) {
                agent.httpResponse(path: "/healthz").2.contains("pod default/pod2: network namespace")
            }
            #expect(agent.health == .healthy, "one vanished pod does not make the node unhealthy")
            let entries = try #require(
                try BPFMap<nodenet_endpoint_key, nodenet_endpoint>.pinned(at: spec.bpffs.path(.endpoints)))
            try await AgentIntegrationTests.waitFor("its endpoint entry removed", seconds: 30) {
                (try entries.keys().count) == 2
            }
            #expect(try t.ping(from: 0, "10.0.2.204"))
            // The native device removed, then back.
            try NetlinkSocket(namespace: t.namespace).delete(.link(named: "eth0"))
            try await AgentIntegrationTests.waitFor("unhealthy without eth0", seconds: 30) {
                if case .unhealthy(let why) = agent.health { return why.contains("eth0") }
                return false
            }
            try t.wire()
            try await AgentIntegrationTests.waitFor("healthy with eth0 back", seconds: 30) { agent.health == .healthy }
            #expect(try t.ping(from: 0, "172.18.0.3"))
            // A SIGHUP storm (what SIGHUP does: reload the spec file).
            let before = agent.reconcileCount
            let storm = lines.all.count
            for _ in 0..<200 { agent.reload() }
            try await AgentIntegrationTests.waitFor("the 200 reloads to be handled", seconds: 60) {
                lines.all.dropFirst(storm).filter { $0.contains("subsystem=spec") && $0.contains("reason=SIGHUP") }
                    .count
                    == 200
            }
            #expect(agent.health == .healthy)
            #expect(agent.reconcileCount - before <= 2, "an unchanged spec reloads nothing")
            // The spec file deleted: the running spec stays.
            let text = try Data(contentsOf: file)
            try FileManager.default.removeItem(at: file)
            agent.reload()
            try await AgentIntegrationTests.waitFor("the missing spec logged", seconds: 30) {
                lines.all.contains { $0.contains("new spec rejected") && $0.contains("does not exist") }
            }
            #expect(agent.health == .healthy)
            try text.write(to: file)
            #expect(try t.ping(from: 0, "10.0.2.204"))
            guard TCXLink.isSupported else {
                try Test.cancel("the last fault (a foreign tcx program ahead of ours) needs tcx, kernel 6.6 or later")
            }
            // The last fault: a foreign program attached ahead of ours on the first pod's lxc and on eth0 (tcx,
            // BPF_F_BEFORE): it returns TCX_NEXT, so ours still runs; nothing of ours changes.
            let foreign = try Self.loadPassThroughProgram()
            defer { close(foreign) }
            let lxc = NodeNetNames.endpointDevice(for: spec.pods[0])
            let links = try NetworkNamespace.run(in: t.namespace) { () throws -> [Int32] in
                try [lxc, "eth0"].map { device in
                    var opts = bpf_link_create_opts()
                    opts.sz = MemoryLayout<bpf_link_create_opts>.size
                    opts.flags = 1 << 3  // BPF_F_BEFORE: ahead of every program on the hook
                    let fd = bpf_link_create(
                        foreign, Int32(if_nametoindex(device)), bpf_attach_type(rawValue: 46), &opts)
                    guard fd >= 0 else {
                        throw BPFError(fd < -1 ? -fd : errno, "attaching a foreign program to \(device)")
                    }
                    return fd
                }
            }
            defer { links.forEach { close($0) } }
            #expect(try t.ping(from: 0, "10.0.2.204"), "pod to pod with a foreign program ahead of ours")
            #expect(try t.ping(from: 0, "172.18.0.3"))
            try await AgentIntegrationTests.waitQuiet(agent)
            #expect(try t.controller(spec).plan().isEmpty, "nothing of ours was touched or lost")
            #expect(agent.health == .healthy)
            print(
                "FaultTests: under the agent, 8 faults (pins removed, 2 sysctls, pod namespace deleted, eth0 removed and back, a foreign program ahead of ours, 200 SIGHUPs, spec deleted)"
            )
        }
    }
}
