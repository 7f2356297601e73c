import BPF
import CNodeNetBPF
import Foundation
import Logging
import TestSupport
import Testing

@testable import NodeNet
@testable import NodeNetAgent
@testable import NodeNetLab

/// Pods from a container runtime: `nodenet-cni` driven by the real libcni against a running
/// agent's endpoint API, chained with containernetworking-plugins. Skipped without root or
/// without Go and libcni (scripts/install-deps.sh installs them).
@Suite(.serialized, .enabled(if: CNIRuntime.available, Comment(rawValue: CNIRuntime.skipReason)))
struct CNITests {
    /// An in-process `nodenetd run` with its endpoint API on `socket`.
    final class RunningAgent {
        let agent: NodeAgent
        let task: Task<Void, any Error>
        let lines = AgentIntegrationTests.LogLines()

        init(spec: String, namespace: NamespaceReference, socket: String) {
            let lines = self.lines
            agent = NodeAgent(
                options: NodeAgent.Options(
                    specPath: spec, namespace: namespace, resyncInterval: .seconds(60),
                    specCheckInterval: .milliseconds(50), apiSocket: .path(socket)),
                logger: { label in
                    Logger(label: label) { _ in
                        StructuredLogHandler(subsystem: label, format: .logfmt, level: .info, output: lines.append)
                    }
                })
            task = Task { [agent] in try await agent.run() }
        }

        func healthy() async throws {
            try await AgentIntegrationTests.waitFor("the agent's first apply") { self.agent.health == .healthy }
        }

        func stop() async {
            agent.stop()
            _ = try? await task.value
        }
    }

    /// A test node (pod namespaces p0… of which p0 is the spec's pod `default/net`), a runtime on
    /// it, and a running agent; all removed afterwards.
    static func withNode(
        pods: Int = 4, mode: DatapathMode = .bpf,
        _ body: (TestNode, CNIRuntime, _ specFile: String, _ socket: String, Agents) async throws -> Void
    ) async throws {
        let directory = "/tmp/\(TestNames.unique("cni"))"
        let bpffs = "/sys/fs/bpf/\(TestNames.unique("cni"))"
        defer {
            try? FileManager.default.removeItem(atPath: directory)
            BPFFS.remove(bpffs)
        }
        let agents = Agents()
        try await TestNode.with(pods: pods) { t in
            var spec = t.spec(podCount: 1)
            spec.datapath = DatapathSettings(mode: mode)
            spec.bpffsDirectory = bpffs
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let specFile = directory + "/spec.json"
            try spec.jsonData().write(to: URL(fileURLWithPath: specFile))
            let runtime = try CNIRuntime(node: t.node, directory: directory)
            let socket = directory + "/run/nodenet.sock"
            let agent = agents.start(spec: specFile, namespace: t.namespace, socket: socket)
            do {
                try await agent.healthy()
                try await body(t, runtime, specFile, socket, agents)
            } catch {
                for agent in agents.all {
                    print("an agent's log before \(error):\n" + agent.lines.all.joined(separator: "\n"))
                }
                await agents.stopAll()
                throw error
            }
            await agents.stopAll()
        }
    }

    /// Every agent a test started, stopped when it ends (also when it fails).
    final class Agents: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var all: [RunningAgent] = []
        func start(spec: String, namespace: NamespaceReference, socket: String) -> RunningAgent {
            let agent = RunningAgent(spec: spec, namespace: namespace, socket: socket)
            lock.lock()
            all.append(agent)
            lock.unlock()
            return agent
        }
        func stopAll() async {
            for agent in all { await agent.stop() }
        }
    }

    static func netns(_ name: String) -> String { "/var/run/netns/\(name)" }
    static func k8s(_ name: String) -> String { "K8S_POD_NAMESPACE=default;K8S_POD_NAME=\(name);IgnoreUnknown=1" }

    /// The pod address a CNI result gives.
    static func address(_ result: [String: Any]?) -> String? {
        ((result?["ips"] as? [[String: Any]])?.first?["address"] as? String)?.split(separator: "/").first.map(
            String.init)
    }

    static func endpointKeys(_ bpffs: String) throws -> [String] {
        guard
            let map = try BPFMap<nodenet_endpoint_key, nodenet_endpoint>.pinned(
                at: BPFFSLayout(directory: bpffs).path(.endpoints))
        else { return [] }
        return try map.keys().map { "\(IPAddress(ipv4: UInt32(bigEndian: $0.ip)))" }
    }

    @Test func addedPodsReachEachOtherSpecPodsAndServicesAndDeleteLeavesNoTrace() async throws {
        try await Self.withNode { t, cni, specFile, socket, _ in
            let list = try cni.conflist(socket: socket)
            // The runtime's first contact: VERSION, as libcni validates a configuration.
            let versions = try #require(try await cni.run("version", conflist: list)?["supportedVersions"] as? [String])
            #expect(versions == ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
            try await cni.run("validate", conflist: list)

            let a = try await cni.run(
                "add", conflist: list, id: "ctr-a", netns: Self.netns(t.pods[1]), args: Self.k8s("web-a"))
            let b = try await cni.run(
                "add", conflist: list, id: "ctr-b", netns: Self.netns(t.pods[2]), args: Self.k8s("web-b"))
            let ipA = try #require(Self.address(a))
            let ipB = try #require(Self.address(b))
            #expect(ipA == "10.0.2.1" && ipB == "10.0.2.2", "the first free addresses of podCIDR: \(ipA), \(ipB)")
            let ips = try #require((a?["ips"] as? [[String: Any]])?.first)
            #expect(ips["gateway"] as? String == "10.0.2.184", "the router IP is the gateway")
            let interfaces = try #require(a?["interfaces"] as? [[String: Any]])
            #expect(interfaces.count == 2 && interfaces[1]["name"] as? String == "eth0")
            #expect(interfaces[1]["sandbox"] as? String == Self.netns(t.pods[1]))
            #expect(
                ((a?["dns"] as? [String: Any])?["nameservers"] as? [String]) == ["10.96.0.10"], "dns passed through")
            // ADD answered: the pod can send and receive now (no wait).
            #expect(try t.ping(from: 1, ipB), "CNI pod to CNI pod")
            #expect(try t.ping(from: 1, "10.0.2.32"), "CNI pod to the spec's pod")
            #expect(try t.ping(from: 0, ipA), "the spec's pod to a CNI pod")
            let device = NodeNetNames.endpointDevice(for: PodSpec(name: "web-a", netns: "", ip: "10.0.2.1"))
            let node = try NetlinkSocket(namespace: t.namespace)
            #expect(try node.link(named: device) != nil)
            #expect(try Self.endpointKeys(try NodeSpec.load(path: specFile).bpffsDirectory).contains(ipA))
            // Repeated ADD: the same answer.
            let again = try await cni.run(
                "add", conflist: list, id: "ctr-a", netns: Self.netns(t.pods[1]), args: Self.k8s("web-a"))
            #expect(Self.address(again) == ipA)
            // A second pod with the same name from another container is refused with a reason.
            let clash = await #expect(throws: CNIRuntime.CNIFailure.self) {
                try await cni.run(
                    "add", conflist: list, id: "ctr-x", netns: Self.netns(t.pods[3]), args: Self.k8s("web-a"))
            }
            #expect(
                clash?.code == 100 && clash?.msg.contains("already has an endpoint from container ctr-a") == true,
                "\(clash as Any)")
            // So is a pod named like the spec's.
            let specClash = await #expect(throws: CNIRuntime.CNIFailure.self) {
                try await cni.run(
                    "add", conflist: list, id: "ctr-y", netns: Self.netns(t.pods[3]), args: Self.k8s("net"))
            }
            #expect(
                specClash?.code == 100 && specClash?.msg.contains("is in the node spec") == true, "\(specClash as Any)")
            // Before: a FIFO as the pod's namespace hung the agent (opening it waited for a writer),
            // and the node's own namespace was taken for a pod's. Both are refused at once.
            let fifo = cni.directory + "/fifo"
            try #require(mkfifo(fifo, 0o600) == 0)
            let notNamespace = await #expect(throws: CNIRuntime.CNIFailure.self) {
                try await cni.run("add", conflist: list, id: "ctr-f", netns: fifo, args: Self.k8s("web-f"))
            }
            #expect(notNamespace?.code == 4 && notNamespace?.msg.contains("is not a network namespace") == true)
            let nodeOwn = await #expect(throws: CNIRuntime.CNIFailure.self) {
                try await cni.run(
                    "add", conflist: list, id: "ctr-n", netns: Self.netns(t.node), args: Self.k8s("web-n"))
            }
            #expect(
                nodeOwn?.code == 4 && nodeOwn?.msg.contains("node's own network namespace") == true, "\(nodeOwn as Any)"
            )

            // A service whose backend is a CNI pod, reached from the spec's pod.
            var spec = try NodeSpec.load(path: specFile)
            spec.services = [
                ServiceSpec(
                    name: "default/web", type: .clusterIP, clusterIP: "10.96.0.50", ports: [ServicePort(port: 80)],
                    backends: [ServiceBackend(ip: IPAddress(ipA)!)])
            ]
            try spec.jsonData().write(to: URL(fileURLWithPath: specFile))
            let server = try PodServer(name: "web-a", ip: IPAddress(ipA)!, namespace: .named(t.pods[1]))
            server.start()
            defer { server.stop() }
            var answer = ""
            try await AgentIntegrationTests.waitFor("the service to answer") {
                answer = (try? LabProbe.httpGet(from: .named(t.pods[0]), to: "10.96.0.50", timeout: 1).body) ?? ""
                return answer.hasPrefix("PodName: web-a")
            }

            // CHECK: passes, then names what a deleted route in the pod broke.
            try await cni.run(
                "check", conflist: list, id: "ctr-a", netns: Self.netns(t.pods[1]), args: Self.k8s("web-a"))
            let pod = try NetlinkSocket(namespace: .named(t.pods[1]))
            let defaultRoute = try #require(try pod.routes(RouteFilter()).first { $0.destination == "0.0.0.0/0" })
            try pod.delete(defaultRoute)
            let check = await #expect(throws: CNIRuntime.CNIFailure.self) {
                try await cni.run(
                    "check", conflist: list, id: "ctr-a", netns: Self.netns(t.pods[1]), args: Self.k8s("web-a"))
            }
            #expect(check?.code == 103 && check?.msg.contains("route default") == true, "\(check as Any)")

            // DEL: every trace of the pod goes (device, routes, map entry, store), twice is fine.
            try await cni.run("del", conflist: list, id: "ctr-a", netns: Self.netns(t.pods[1]), args: Self.k8s("web-a"))
            #expect(try node.link(named: device) == nil)
            #expect(try !node.routes(RouteFilter()).contains { $0.destination.description == "\(ipA)/32" })
            #expect(try !Self.endpointKeys(spec.bpffsDirectory).contains(ipA))
            let store = try EndpointStore.load(
                stateDirectory: t.stateDirectory, node: "worker2", podCIDR: "10.0.2.0/24")
            #expect(store.endpoints.map(\.attachment.containerID) == ["ctr-b"])
            #expect(
                try NetlinkSocket(namespace: .named(t.pods[1])).link(named: "eth0") == nil,
                "the pod's eth0 went with its peer")
            try await cni.run("del", conflist: list, id: "ctr-a", netns: Self.netns(t.pods[1]), args: Self.k8s("web-a"))

            // DEL after the pod's namespace is gone.
            let deviceB = NodeNetNames.endpointDevice(for: PodSpec(name: "web-b", netns: "", ip: "10.0.2.2"))
            try NetworkNamespace.delete(t.pods[2])
            try await cni.run("del", conflist: list, id: "ctr-b", netns: Self.netns(t.pods[2]), args: Self.k8s("web-b"))
            #expect(try node.link(named: deviceB) == nil)
            #expect(try !Self.endpointKeys(spec.bpffsDirectory).contains(ipB))
            #expect(
                try EndpointStore.load(stateDirectory: t.stateDirectory, node: "worker2", podCIDR: "10.0.2.0/24")
                    .endpoints.isEmpty)
            #expect(try t.controller(try NodeSpec.load(path: specFile)).plan().isEmpty)
        }
    }

    @Test func withTheAgentDownAddSaysTryAgainAndDelIsFinishedAtStart() async throws {
        try await Self.withNode { t, cni, specFile, socket, agents in
            let first = agents.all[0]
            let list = try cni.conflist(socket: socket)
            let a = try await cni.run(
                "add", conflist: list, id: "ctr-a", netns: Self.netns(t.pods[1]), args: Self.k8s("web-a"))
            let device = NodeNetNames.endpointDevice(for: PodSpec(name: "web-a", netns: "", ip: "10.0.2.1"))
            let node = try NetlinkSocket(namespace: t.namespace)
            #expect(try Self.address(a) == "10.0.2.1" && node.link(named: device) != nil)
            await first.stop()

            // ADD with nobody answering: "try again later" (11) at once, nothing created.
            let start = Date()
            let refused = await #expect(throws: CNIRuntime.CNIFailure.self) {
                try await cni.run(
                    "add", conflist: list, id: "ctr-c", netns: Self.netns(t.pods[3]), args: Self.k8s("web-c"))
            }
            let seconds = Date().timeIntervalSince(start)
            print("CNITests: ADD with the agent down answered code \(refused?.code ?? -1) in \(Int(seconds * 1000)) ms")
            #expect(refused?.code == 11, "\(refused as Any)")
            // DEL with nobody answering: recorded for the agent, and a success for the runtime.
            try await cni.run("del", conflist: list, id: "ctr-a", netns: Self.netns(t.pods[1]), args: Self.k8s("web-a"))
            #expect(
                EndpointStore.recordedDeletions(stateDirectory: t.stateDirectory).attachments.map(\.description) == [
                    "ctr-a/eth0"
                ])
            #expect(try node.link(named: device) != nil, "nothing is deleted without the agent")

            // The agent starts: it finishes the deletion before its first apply.
            let second = agents.start(spec: specFile, namespace: t.namespace, socket: socket)
            try await second.healthy()
            #expect(try node.link(named: device) == nil)
            #expect(EndpointStore.recordedDeletions(stateDirectory: t.stateDirectory).attachments.isEmpty)
            #expect(
                try EndpointStore.load(stateDirectory: t.stateDirectory, node: "worker2", podCIDR: "10.0.2.0/24")
                    .endpoints.isEmpty)
            #expect(
                second.lines.all.contains { $0.contains("completing a deletion recorded while the agent was down") })

            // A restart adopts API endpoints and changes nothing.
            let d = try await cni.run(
                "add", conflist: list, id: "ctr-d", netns: Self.netns(t.pods[2]), args: Self.k8s("web-d"))
            let ipD = try #require(Self.address(d))
            await second.stop()
            let third = agents.start(spec: specFile, namespace: t.namespace, socket: socket)
            try await third.healthy()
            let converged = try #require(third.lines.all.first { $0.contains("msg=converged") }, "\(third.lines.all)")
            #expect(AgentIntegrationTests.field("changes", of: converged) == "0", "\(converged)")
            #expect(try t.ping(from: 0, ipD))
            let listing = third.agent.pods
            #expect(listing.spec.map(\.id) == ["default/net"] && listing.endpoints.map(\.pod.id) == ["default/web-d"])
            await third.stop()
            // Before: a hand-run apply planned from the spec alone and removed the runtime's pods.
            let nodenetd = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
                .appendingPathComponent("nodenetd").path
            let apply = try runTool([nodenetd, "apply", specFile, "--netns", t.node])
            #expect(apply.status == 0, "\(apply.output)")
            let deviceD = NodeNetNames.endpointDevice(for: PodSpec(name: "web-d", netns: "", ip: "10.0.2.1"))
            #expect(try node.link(named: deviceD) != nil, "\(apply.output)")
            #expect(try t.ping(from: 0, ipD))
        }
    }

    @Test func statusGarbageCollectionAndNonRootPeers() async throws {
        try await Self.withNode { t, cni, specFile, socket, agents in
            let agent = agents.all[0]
            let list = try cni.conflist(socket: socket, version: "1.1.0")
            try await cni.run("status", conflist: list)
            let listed = try cni.conflist(socket: socket, name: "v100")
            try await cni.run(
                "add", conflist: listed, id: "ctr-a", netns: Self.netns(t.pods[1]), args: Self.k8s("web-a"))
            try await cni.run("add", conflist: listed, id: "ctr-b", netns: Self.netns(t.pods[2]))
            // Without Kubernetes names the pod is cni/<container id>.
            #expect(agent.agent.pods.endpoints.map(\.pod.id).sorted() == ["cni/ctr-b", "default/web-a"])
            let node = try NetlinkSocket(namespace: t.namespace)
            let deviceB = try #require(agent.agent.pods.endpoints.first { $0.attachment.containerID == "ctr-b" })
                .hostDevice
            #expect(try node.link(named: deviceB) != nil)
            // GC: the runtime knows only ctr-a now.
            try await cni.run("gc", conflist: list, valid: ["ctr-a/eth0"])
            #expect(agent.agent.pods.endpoints.map(\.attachment.containerID) == ["ctr-a"])
            #expect(try node.link(named: deviceB) == nil)
            #expect(try t.ping(from: 1, "10.0.2.32"), "the kept pod still works")
            // `endpoint list` shows both kinds with their source.
            let nodenetd = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
                .appendingPathComponent("nodenetd").path
            let table = try runTool([nodenetd, "endpoint", "list", specFile, "--netns", t.node, "--json"])
            let rows = try JSONDecoder().decode([EndpointStatus].self, from: Data(table.output.utf8))
            let summary = rows.map { row -> String in
                "\(row.pod) \(row.source) \(row.attachment ?? "-") \(row.state)"
            }
            #expect(
                summary.sorted() == ["default/net spec - ready", "default/web-a cni ctr-a/eth0 ready"],
                "\(table.output)")

            // A peer that is not root: refused (the socket is 0600; opened up here to reach the check).
            let mode = try FileManager.default.attributesOfItem(atPath: socket)[.posixPermissions] as? Int
            #expect(mode == 0o600)
            chmod((socket as NSString).deletingLastPathComponent, 0o755)
            chmod(socket, 0o666)
            let config =
                "{\"cniVersion\":\"1.1.0\",\"name\":\"nodenet\",\"type\":\"nodenet-cni\",\"socket\":\"\(socket)\"}"
            let out = try await CNIRuntime.tool([
                "sh", "-c",
                "echo '\(config)' | CNI_COMMAND=STATUS setpriv --reuid=65534 --regid=65534 --clear-groups \(cni.pluginDirectory)/nodenet-cni",
            ])
            #expect(out.status == 1 && out.output.contains("\"code\":104"), "\(out.output)")
            try await AgentIntegrationTests.waitFor("the refusal logged") {
                agent.lines.all.contains {
                    $0.contains("refused a request from a non-root peer") && $0.contains("uid=65534")
                }
            }
        }
    }

    /// Chained after nodenet-cni, containernetworking-plugins' portmap gets a correct prevResult:
    /// a hostPort on the node reaches the CNI pod from the lab's external host.
    @Test func portmapChainedAfterNodenetPublishesAHostPort() async throws {
        try await Self.withNode(mode: .kernel) { t, cni, _, socket, _ in
            let list = try cni.conflist(socket: socket, portmap: true)
            let a = try await cni.run(
                "add", conflist: list, id: "ctr-a", netns: Self.netns(t.pods[1]), args: Self.k8s("web-a"),
                capabilityArgs: "8080:80")
            let ipA = try #require(Self.address(a))
            let server = try PodServer(name: "web-a", ip: IPAddress(ipA)!, namespace: .named(t.pods[1]))
            server.start()
            defer { server.stop() }
            // The fabric holds the other hosts' addresses (172.18.0.3, .4): an outside client.
            let answer = try LabProbe.httpGet(from: .named(t.fabric), to: "172.18.0.2", port: 8080, timeout: 5)
            #expect(answer.body.hasPrefix("PodName: web-a"), "\(answer.body)")
            // No CHECK through this list: Debian's portmap fails CHECK for IPv4-only pods whatever
            // came before it (containernetworking/plugins#819); nodenet's CHECK is tested above.
            try await cni.run(
                "del", conflist: list, id: "ctr-a", netns: Self.netns(t.pods[1]), args: Self.k8s("web-a"),
                capabilityArgs: "8080:80")
            #expect(throws: (any Error).self) {
                try LabProbe.httpGet(from: .named(t.fabric), to: "172.18.0.2", port: 8080, timeout: 1)
            }
        }
    }
}
