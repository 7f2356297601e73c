import BPF
import CNodeNetBPF
import Foundation
import Logging
import TestSupport
import Testing

@testable import NodeNet
@testable import NodeNetAgent

/// A damaged or planted ledger and a second writer, against a real kernel. Skipped without root.
@Suite(.serialized, .enabled(if: Privileges.runsNamespaceTests, Comment(rawValue: Privileges.skipReason)))
struct ReliabilityIntegrationTests {
    func asideFiles(_ t: TestNode) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: t.stateDirectory).filter {
            $0.hasPrefix("ledger.json.corrupt-")
        }
    }

    /// Before: `reading the ledger …: DecodingError.dataCorrupted` on every apply, for good.
    @Test func aCorruptLedgerIsMovedAsideAndTheNodeConverges() async throws {
        try await TestNode.with(pods: 2) { t in
            let spec = t.spec()
            _ = try t.controller(spec).apply()
            // A stale endpoint device the lost ledger knew about: ownership rebuilt from the
            // kernel finds it by its name.
            let node = try NetlinkSocket(namespace: t.namespace)
            try node.add(
                LinkConfiguration(name: "lxc0000000000aa", kind: .veth(peer: VethPeer(name: "tmp0aa")), up: true))
            try Data("{\"apiVersion\": \"nodenet/v1\", \"node\": \u{0}garbage".utf8).write(
                to: URL(fileURLWithPath: Ledger.path(in: t.stateDirectory)))
            let status = try t.controller(spec).status()
            #expect(status.ledger.hasPrefix("untrusted: "), "\(status.ledger)")
            #expect(try asideFiles(t).isEmpty, "status changes nothing")

            let report = try t.controller(spec).apply()
            #expect(report.verified, "\(report.mismatches)")
            let warning = try #require(report.warnings.first)
            #expect(
                warning.contains("is not text (binary data at byte") && warning.contains("moved aside to"), "\(warning)"
            )
            #expect(!warning.contains("DecodingError"))
            #expect(try asideFiles(t).count == 1)
            #expect(try node.link(named: "lxc0000000000aa") == nil, "an lxc device the spec does not want is removed")
            #expect(try t.controller(spec).plan().isEmpty)
            #expect(try t.controller(spec).status().ledger.hasPrefix("rebuilt: "), "shown until the next clean apply")
            #expect(try t.controller(spec).apply().warnings.isEmpty)
            #expect(try t.controller(spec).status().ledger == "ok")
            #expect(try t.ping(from: 0, "10.0.2.204"))
        }
    }

    /// Before: a planted ledger naming `eth0` as an endpoint made the next apply delete the uplink.
    @Test func aPlantedLedgerCannotDeleteTheUplink() async throws {
        try await TestNode.with(pods: 1) { t in
            let spec = t.spec()
            _ = try t.controller(spec).apply()
            var planted = try #require(try Ledger.load(from: t.stateDirectory))
            planted.endpoints.append(
                Ledger.Endpoint(pod: "default/evil", hostDevice: "eth0", netns: "x", ip: "10.0.2.9"))
            try planted.save(to: t.stateDirectory)
            let report = try t.controller(spec).apply()
            #expect(try NetlinkSocket(namespace: t.namespace).link(named: "eth0") != nil, "the uplink stays")
            #expect(!report.changes.contains { $0.subject.contains("evil") || $0.found?.contains("eth0") == true })
            #expect(report.warnings.first?.contains(#"endpoint device "eth0""#) == true, "\(report.warnings)")
            #expect(try t.ping(from: 0, "172.18.0.3"))
        }
    }

    /// Before: teardown wrote whatever sysctl a planted ledger named, as root.
    @Test func teardownWritesNoSysctlAPlantedLedgerNames() async throws {
        try await TestNode.with(pods: 1) { t in
            let controller = try t.controller(t.spec())
            _ = try controller.apply()
            let key = "net/ipv4/conf/lo/accept_local"
            let before = try Sysctl.read(key, in: t.namespace)
            var planted = try #require(try Ledger.load(from: t.stateDirectory))
            planted.sysctlOriginals[key] = before == "1" ? "0" : "1"
            try planted.save(to: t.stateDirectory)
            let report = try controller.teardown()
            #expect(try Sysctl.read(key, in: t.namespace) == before, "the planted value is not written")
            #expect(report.sysctlsRestored.isEmpty)
            #expect(report.warnings.first?.contains(#"sysctl "\#(key)""#) == true, "\(report.warnings)")
            #expect(report.endpoints == 1 && report.hostPair, "what the kernel shows as nodenet's still goes")
        }
    }

    /// A second writer is refused with who holds the node; the lock goes with its holder.
    @Test func aRunningAgentIsTheOnlyWriter() async throws {
        try await AgentIntegrationTests.withAgent { t, agent, file, _ in
            let holder = try #require(NodeLock.holder(stateDirectory: t.stateDirectory))
            #expect(holder.pid == getpid() && holder.command == "run")
            let spec = try NodeSpec.load(path: file.path)
            let error = #expect(throws: NodeNetError.self) { try t.controller(spec).apply() }
            #expect("\(error!)".hasPrefix("another nodenetd (pid \(getpid()), nodenetd run, since "), "\(error!)")
            #expect(throws: NodeNetError.self) { try t.controller(spec).teardown() }
            let second = NodeAgent(
                options: NodeAgent.Options(specPath: file.path, namespace: t.namespace), logger: { Logger(label: $0) })
            await #expect(throws: NodeNetError.self) { try await second.run() }
            #expect(try t.controller(spec).status().lockHolder?.command == "run")
            #expect(agent.health == .healthy, "the running agent is undisturbed")
        }
    }

    /// Before: a detached program or emptied service maps stayed broken until the next full
    /// resync (60 s here). The audit finds each within its interval and a reconcile repairs it.
    @Test(arguments: [AttachMode.tcx, .clsact])
    func bpfDriftIsRepairedWithinSeconds(_ attach: AttachMode) async throws {
        let directory = "/sys/fs/bpf/\(TestNames.unique("audit"))"
        defer { BPFFS.remove(directory) }
        let configure: (inout NodeSpec) -> Void = {
            $0.datapath = DatapathSettings(mode: .bpf, attachMode: attach)
            $0.bpffsDirectory = directory
            $0.services = [
                ServiceSpec(
                    name: "default/web", type: .clusterIP, clusterIP: "10.96.0.10",
                    ports: [ServicePort(port: 80)], backends: [ServiceBackend(ip: "10.0.2.204")])
            ]
        }
        try await AgentIntegrationTests.withAgent(configure: configure) { t, agent, file, lines in
            let spec = try NodeSpec.load(path: file.path)
            let layout = spec.bpffs
            let node = try NetlinkSocket(namespace: t.namespace)
            let lxc = NodeNetNames.endpointDevice(for: spec.pods[0])
            // 1. The program on the first pod's lxc goes away.
            if attach == .tcx {
                let pin = try #require(layout.tcxLinks().first { $0.contains("@\(lxc)@") })
                try BPFPin.remove(layout.tcxLinkPath(pin))  // the last reference: the link detaches
            } else {
                let index = try #require(try node.link(named: lxc)).index
                try node.delete(.filter(interfaceIndex: index, direction: .ingress, priority: 1))
            }
            // A tcx link's pin has no netlink event: the audit finds it. A pod's cls_bpf filter is not
            // in the audit's fingerprint: its tc event starts the reconcile. The resync is 60 s
            // away: back within 30 s means one of them did (however long a loaded machine takes).
            _ = try await AgentIntegrationTests.waitFor("the program's repair", seconds: 30) {
                guard agent.health == .healthy else { return false }
                return try t.controller(spec).plan().isEmpty
            }
            #expect(try t.controller(spec).plan().isEmpty)
            // 2. The service maps are emptied behind the agent's back.
            let services = try #require(
                try BPFMap<nodenet_service_key, nodenet_service>.pinned(at: layout.path(.services)))
            for key in try services.keys() { _ = try services.delete(key) }
            #expect(try services.keys().isEmpty)
            try await AgentIntegrationTests.waitFor("the service map's repair", seconds: 30) {
                (try services.keys().count) == 2
            }
            #expect(try t.controller(spec).plan().isEmpty)
            // 3. Once the agent is quiet (no reconcile of its own to meet it), the backend is zeroed
            // in the backends array. An array holds every index: the audit counts the entries that
            // are not zeros (counting keys, it saw no change, and the resync is 60 s away).
            try await AgentIntegrationTests.waitQuiet(agent)
            let backends = try #require(try BPFMappedArray<nodenet_backend>.pinned(at: layout.path(.backends)))
            let id = try #require((0..<backends.count).first { backends[$0].proto != 0 })
            try backends.store(nodenet_backend(), at: UInt32(id))
            #expect(backends[id].proto == 0)
            try await AgentIntegrationTests.waitFor("the backend's repair", seconds: 30) { backends[id].proto != 0 }
            #expect(try t.controller(spec).plan().isEmpty)
            #expect(
                lines.all.contains { $0.contains("bpf drift") && $0.contains("map nodenet_backends") },
                "the audit saw it")
            #expect(agent.metrics.exposition().contains("nodenet_bpf_audit_drift_total"))
            // The record is written once the repairing reconcile has verified, just after the map
            // is whole again, with the time of the last audit when one ran before (repairs made by
            // event reconciles early on may come first: a later periodic save writes the time).
            var summary: String?
            _ = try? await AgentIntegrationTests.waitFor("status to report the repaired drift", seconds: 30) {
                summary = try t.controller(spec).status().bpfAudit
                return summary?.hasSuffix(", repaired") == true && summary?.contains("last audit at ") == true
            }
            // Status shows both.
            #expect(summary?.hasPrefix("every 1 s, last audit at ") == true, "\(summary as Any)")
            #expect(summary?.contains("; last drift at ") == true, "\(summary as Any)")
            #expect(summary?.hasSuffix(", repaired") == true, "\(summary as Any)")
        }
    }

    /// 200 real SIGHUPs to a `nodenetd run` process, 2 ms apart, with the spec edited halfway:
    /// the process stays up, the edit lands (a node added), the node stays converged and its pods
    /// keep talking; every signal is at most one reload (no reload of an unchanged spec changes
    /// the kernel).
    @Test func aStormOfSIGHUPsToTheProcess() async throws {
        try await TestNode.with(pods: 2) { t in
            let file = URL(fileURLWithPath: t.stateDirectory + ".spec.json")
            defer { try? FileManager.default.removeItem(at: file) }
            var spec = t.spec()
            try spec.jsonData().write(to: file)
            let log = URL(fileURLWithPath: t.stateDirectory + ".log")
            defer { try? FileManager.default.removeItem(at: log) }
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            let agent = Process()
            agent.executableURL = LabIntegrationTests.nodenetd
            agent.arguments = [
                "run", "--spec", file.path, "--netns", t.node, "--log-format", "json", "--api-socket", "off",
            ]
            agent.standardError = try FileHandle(forWritingTo: log)
            agent.standardOutput = FileHandle.nullDevice
            try agent.run()
            defer {
                agent.terminate()
                agent.waitUntilExit()
            }
            try await AgentIntegrationTests.waitFor("the first apply", seconds: 30) {
                (try? t.controller(spec).plan().isEmpty) == true
            }
            for i in 0..<200 {
                kill(agent.processIdentifier, SIGHUP)
                if i == 100 {
                    spec.nodes.append(
                        RemoteNode(name: "extra", address: IPAddress("172.18.0.9"), podCIDR: IPPrefix("10.0.9.0/24")))
                    try spec.jsonData().write(to: file, options: .atomic)
                }
                usleep(2000)
            }
            #expect(agent.isRunning, "the agent survived the storm")
            try await AgentIntegrationTests.waitFor("the edit to land and the node to converge") {
                (try? t.controller(spec).plan().isEmpty) == true
            }
            #expect(try t.ping(from: 0, "10.0.2.204"))
            let lines = try String(contentsOf: log, encoding: .utf8).split(separator: "\n")
            #expect(lines.contains { $0.contains("\"msg\":\"spec reloaded\"") }, "the edit was reloaded")
            #expect(
                !lines.contains { $0.contains("\"level\":\"error\"") },
                "\(lines.filter { $0.contains("error") }.prefix(3))")
            #expect(agent.isRunning)
        }
    }

    /// The node's bpffs unmounted under a running agent (BPF mode): every pin goes at once. The
    /// programs keep forwarding meanwhile (they hold their maps); the audit finds the pins gone,
    /// the agent pins everything again in the directory (now on the parent bpffs) and the node
    /// converges, pods still talking.
    @Test func bpffsUnmountedUnderTheAgent() async throws {
        let mount = "/sys/fs/bpf/\(TestNames.unique("mnt"))"
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: false)
        defer {
            _ = try? runTool(["umount", "-l", mount])
            BPFFS.remove(mount)
            rmdir(mount)
        }
        let mounted = try runTool(["mount", "-t", "bpf", "bpf", mount])
        try #require(mounted.status == 0, "\(mounted.output)")
        let configure: (inout NodeSpec) -> Void = {
            $0.datapath = DatapathSettings(mode: .bpf)
            $0.bpffsDirectory = mount + "/node"
        }
        try await AgentIntegrationTests.withAgent(configure: configure) { t, agent, file, _ in
            let spec = try NodeSpec.load(path: file.path)
            #expect(FileManager.default.fileExists(atPath: spec.bpffs.path(.services)))
            let unmounted = try runTool(["umount", "-l", mount])
            try #require(unmounted.status == 0, "\(unmounted.output)")
            #expect(!FileManager.default.fileExists(atPath: spec.bpffs.path(.services)), "the pins went with the mount")
            #expect(try t.ping(from: 0, "10.0.2.204"), "the programs keep forwarding without their pins")
            try await AgentIntegrationTests.waitFor("the pins to be made again", seconds: 30) {
                FileManager.default.fileExists(atPath: spec.bpffs.path(.services))
                    && agent.health == .healthy && (try? t.controller(spec).plan().isEmpty) == true
            }
            #expect(try t.ping(from: 0, "10.0.2.204"))
            #expect(try t.ping(from: 1, "10.0.2.32"))
        }
    }

    /// Before: an endpoint store the agent could not trust (damaged, a directory) stopped it from
    /// starting, and the node went unmanaged. Now it is moved aside and rebuilt from the ledger:
    /// the CNI pod keeps its device, route and address, /healthz says what happened, and the
    /// recovered endpoint goes once its network namespace does.
    @Test func aDamagedEndpointStoreIsRebuiltFromTheLedger() async throws {
        try await TestNode.with(pods: 2) { t in
            let spec = t.spec(podCount: 1)
            var store = try EndpointStore.load(
                stateDirectory: t.stateDirectory, node: spec.node.name, podCIDR: spec.node.podCIDR)
            let (endpoint, _) = try store.add(
                Endpoint.Attachment(containerID: "c0ffee", interface: "eth0"), netns: "/var/run/netns/\(t.pods[1])",
                podNamespace: "default", podName: "cni-pod", spec: spec)
            try store.save()
            #expect(try t.controller(spec.including(store)).apply().verified)
            let storePath = EndpointStore.path(stateDirectory: t.stateDirectory)
            func asides() throws -> [String] {
                try FileManager.default.contentsOfDirectory(atPath: t.stateDirectory).filter {
                    $0.hasPrefix(EndpointStore.fileName + ".corrupt-")
                }
            }
            // The ledger says which endpoint is the runtime's (a spec pod never is).
            guard case .valid(let ledger) = Ledger.read(from: t.stateDirectory, node: spec.node.name, moveAside: false)
            else { throw NodeNetError.state("no valid ledger after the apply") }
            #expect(ledger.endpoints.filter { $0.runtime == true }.map(\.pod) == ["default/cni-pod"])
            #expect(ledger.endpoints.count == 2, "\(ledger.endpoints)")
            for damage in ["garbage", "directory", "missing"] {
                try? FileManager.default.removeItem(atPath: storePath)
                if damage == "garbage" {
                    try Data("{\"version\": 1, \u{0}".utf8).write(to: URL(fileURLWithPath: storePath))
                } else if damage == "directory" {
                    try FileManager.default.createDirectory(atPath: storePath, withIntermediateDirectories: false)
                }
                let before = try asides().count
                try await AgentIntegrationTests.withAgent(on: t, spec: spec) { agent, _, _ in
                    let (status, _, body) = agent.httpResponse(path: "/healthz")
                    #expect(status == 200 && body.contains("warning: endpoint store rebuilt: "), "\(damage): \(body)")
                    #expect(body.contains("1 endpoint(s) recovered from the ledger"), "\(body)")
                    #expect(try asides().count == before + (damage == "missing" ? 0 : 1), "\(damage): moved aside")
                    if damage == "missing" { #expect(body.contains("is missing"), "\(body)") }
                    let rebuilt = try EndpointStore.load(
                        stateDirectory: t.stateDirectory, node: spec.node.name, podCIDR: spec.node.podCIDR)
                    #expect(rebuilt.endpoints.map(\.ip) == [endpoint.ip])
                    #expect(rebuilt.endpoints.first?.attachment.containerID == "recovered-\(endpoint.hostDevice)")
                    #expect(try t.ping(from: 0, endpoint.ip.description), "\(damage): the CNI pod kept its network")
                    #expect(try t.controller(spec.including(rebuilt)).plan().isEmpty)
                }
            }
            // Its namespace goes (no DEL can name a recovered endpoint): the next start drops it.
            try NetworkNamespace.delete(t.pods[1])
            try await AgentIntegrationTests.withAgent(on: t, spec: spec) { _, _, _ in
                let after = try EndpointStore.load(
                    stateDirectory: t.stateDirectory, node: spec.node.name, podCIDR: spec.node.podCIDR)
                #expect(after.endpoints.isEmpty)
                #expect(try NetlinkSocket(namespace: t.namespace).link(named: endpoint.hostDevice) == nil)
            }
        }
    }

    /// A ledger damaged under a running agent: the reconcile that meets it moves it aside and
    /// rebuilds ownership from the kernel, and /healthz keeps saying so (the reconciles after it
    /// are clean again at once, so a warning that lasted one reconcile would never be seen).
    @Test func healthzShowsALedgerSetAsideUnderTheAgent() async throws {
        try await AgentIntegrationTests.withAgent { t, agent, _, _ in
            try Data("{\"apiVersion\": \u{0}".utf8).write(to: URL(fileURLWithPath: Ledger.path(in: t.stateDirectory)))
            // Drift makes the agent reconcile (and read the ledger).
            let node = try NetlinkSocket(namespace: t.namespace)
            let direct = try #require(
                try node.routes(RouteFilter(protocol: NodeNetNames.routeProtocol)).first {
                    $0.destination == IPPrefix("10.0.1.0/24")
                })
            try node.delete(direct)
            try await AgentIntegrationTests.waitFor("the route back and the ledger set aside") {
                let body = agent.httpResponse(path: "/healthz").2
                return body.contains("warning: ") && body.contains("moved aside to")
            }
            try await AgentIntegrationTests.waitQuiet(agent)
            let (status, _, body) = agent.httpResponse(path: "/healthz")
            #expect(status == 200 && body.contains("moved aside to"), "still shown after later reconciles: \(body)")
            #expect(try t.controller(t.spec()).plan().isEmpty)
        }
    }
}
