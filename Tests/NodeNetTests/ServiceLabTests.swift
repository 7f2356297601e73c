import BPF
import CBPF
import CNodeNetBPF
import Foundation
import TestSupport
import Testing

@testable import NodeNet
@testable import NodeNetLab

/// Kube-proxy replacement on the lab (the seed's cluster plus a UDP NodePort service):
/// socket LB from pods and nodes, NodePort from the external host to local and remote
/// backends, masquerading, updates, per-packet translation. Requests are made by
/// `nodenetd lab probe`, which runs in the client's namespace *and* its node's cgroup (socket
/// LB only sees sockets of processes in that cgroup). Skipped without root.
@Suite(.serialized, .enabled(if: Privileges.runsBPFTests, Comment(rawValue: Privileges.skipReason)))
struct ServiceLabTests {
    static let dns = ServiceSpec(
        name: "kube-system/dns", type: .nodePort, clusterIP: IPAddress("10.96.0.10"),
        ports: [ServicePort(name: "dns", protocol: .udp, port: 53, targetPort: 53, nodePort: 30053)],
        backends: ["10.0.1.15", "10.0.2.204", "10.0.0.142"].map { ServiceBackend(ip: IPAddress($0)!) })
    static let servers = ["cilium-with-replacement-cp", "cilium-with-replacement-w1", "cilium-with-replacement-w2"].map
    { "PodName: \($0)" }

    typealias Probe = LabProbeReport

    /// Brings the lab up through the CLI (pod servers in the nodes' cgroups).
    static func up(_ cluster: LabCluster) throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: LabIntegrationTests.nodenetd.path), "build nodenetd first")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("\(cluster.name).json")
        try cluster.jsonData().write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let up = try LabIntegrationTests.cli(["lab", "up", file.path, "--name", cluster.name])
        try #require(up.status == 0, "\(up.output)")
    }

    static func cluster(_ tag: String) -> LabCluster {
        var c = LabCluster.seed(name: LabIntegrationTests.labName(tag))
        c.services.append(dns)
        return c
    }

    static func probe(
        _ lab: String, _ from: String, _ destination: String, udp: Bool = false, v4Mapped: Bool = false, count: Int = 1,
        timeout: Int = 2, size: Int? = nil
    ) throws -> Probe {
        var args = [
            "lab", "probe", "--name", lab, from, destination, "--count", "\(count)", "--timeout", "\(timeout)",
            "--json",
        ]
        if udp { args.append("--udp") }
        if let size { args += ["--size", "\(size)"] }
        if v4Mapped { args.append("--v4-mapped") }
        let r = try LabIntegrationTests.cli(args)
        guard r.status == 0, let probe = try? JSONDecoder().decode(Probe.self, from: Data(r.output.utf8)) else {
            throw NodeNetError.state("lab probe \(from) \(destination): \(r.output)")
        }
        return probe
    }

    /// The kernel's conntrack table of a lab node after `traffic`, with tracking switched on there
    /// first (an iptables rule that uses it), and required to hold one flow the kernel does track
    /// (a ping from the external host to the node): an empty table proves nothing.
    static func kernelConntrack(_ cluster: LabCluster, node: String, traffic: () throws -> Void) throws -> String {
        let ns = cluster.namespace(ofNode: node)
        let address = try #require(cluster.nodes.first { $0.name == node }).address
        let rule = try runTool([
            "ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED",
            "-j", "ACCEPT",
        ])
        try #require(rule.status == 0, "iptables (scripts/install-deps.sh installs it): \(rule.output)")
        try traffic()
        let ping = try runTool([
            "ip", "netns", "exec", cluster.externalNamespace, "ping", "-c", "1", "-W", "2", "\(address)",
        ])
        try #require(ping.status == 0, "\(ping.output)")
        let listed = try runTool(["ip", "netns", "exec", ns, "conntrack", "-L"])
        try #require(listed.status == 0, "conntrack -L (scripts/install-deps.sh installs it): \(listed.output)")
        try #require(
            listed.output.contains("icmp") && listed.output.contains("dst=\(address)"),
            "the ping to the node is tracked: \(listed.output)")
        return listed.output
    }

    /// A controller of `node` of a lab that is up, for the lab's spec of it.
    static func controller(_ cluster: LabCluster, _ node: String) throws -> NodeController {
        try NodeController(spec: cluster.spec(forNode: node)!, namespace: .named(cluster.namespace(ofNode: node)))
    }

    static func services(_ cluster: LabCluster, node: String) throws -> [ServiceStatus] {
        try controller(cluster, node).services()
    }

    /// Updates the services of every node of a lab that is up (as the agent would on a spec change).
    static func apply(_ cluster: LabCluster) throws {
        for node in cluster.nodes {
            let report = try Self.controller(cluster, node.name).apply()
            try #require(report.verified, "\(report.mismatches)")
        }
    }

    @Test func socketLBConnectsPodsAndNodesStraightToBackends() throws {
        let cluster = Self.cluster("sl")
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let lab = cluster.name

        // What the client pod's interface sees while it talks to the services.
        let capture = try FrameCapture(namespace: .named(cluster.namespace(ofPod: "net")), device: "eth0")
        let clusterIP = try Self.probe(lab, "net", "10.96.18.68:80", count: 300)
        #expect(clusterIP.failures == 0)
        for server in Self.servers {
            #expect(
                clusterIP.answers[server, default: 0] >= 45, "each backend gets at least 15 %: \(clusterIP.answers)")
        }
        #expect(clusterIP.requests.allSatisfy { $0.peer == "10.96.18.68:80" }, "getpeername shows the service address")
        let nodePort = try Self.probe(lab, "net", "172.18.0.2:32000", count: 30)
        let otherNodePort = try Self.probe(lab, "net", "172.18.0.3:32000", count: 30)
        #expect(nodePort.failures == 0 && otherNodePort.failures == 0)
        #expect(nodePort.requests.allSatisfy { $0.peer == "172.18.0.2:32000" })
        let frames = capture.drain().compactMap(CapturedIPv4.init)
        #expect(
            frames.contains { $0.destination == "10.0.1.15" && $0.destinationPort == 80 },
            "the capture saw the backends")
        let leaked = frames.filter {
            $0.source == "10.96.18.68" || $0.destination == "10.96.18.68" || $0.sourcePort == 32000
                || $0.destinationPort == 32000
        }
        #expect(leaked.isEmpty, "no frame carries a service address: \(leaked.prefix(3))")

        // A dual-stack (IPv6) socket connecting to the v4-mapped ClusterIP is translated too.
        let mapped = try Self.probe(lab, "net", "10.96.18.68:80", v4Mapped: true, count: 60)
        #expect(
            mapped.failures == 0 && mapped.answers.count == 3
                && mapped.requests.allSatisfy { $0.peer == "10.96.18.68:80" }, "\(mapped.answers)")

        // From the nodes themselves, to a ClusterIP and to another node's NodePort.
        #expect(try Self.probe(lab, "worker2", "10.96.18.68:80", count: 30).failures == 0)
        #expect(try Self.probe(lab, "worker", "172.18.0.4:32000", count: 60).answers.count == 3)

        // UDP through socket LB: replies seem to come from the service.
        let udp = try Self.probe(lab, "net", "10.96.0.10:53", udp: true, count: 60)
        #expect(udp.failures == 0 && udp.answers.count == 3, "\(udp.answers)")
        #expect(udp.requests.allSatisfy { $0.peer == "10.96.0.10:53" }, "recvmsg shows the service address")

        // Nothing in iptables or the kernel's conntrack.
        let ns = cluster.namespace(ofNode: "worker2")
        let iptables = try runTool(["ip", "netns", "exec", ns, "iptables-save"])
        try #require(iptables.status == 0, "iptables-save (scripts/install-deps.sh installs it): \(iptables.output)")
        #expect(!iptables.output.contains("32000") && !iptables.output.contains("10.96.18.68"))
        // With the kernel's conntrack switched on in the node, service traffic still makes no entry
        // there, while a ping to the node does.
        let conntrack = try Self.kernelConntrack(cluster, node: "worker2") {
            let pod = try Self.probe(lab, "net", "10.96.18.68:80", count: 10)
            let outside = try Self.probe(lab, "external", "172.18.0.2:32000", count: 10)
            #expect(pod.failures == 0 && outside.failures == 0)
        }
        #expect(!conntrack.contains("32000") && !conntrack.contains("10.96.18.68"), "\(conntrack)")

        // `service list`: the seed's frontends, ids stable across a re-apply and a new reader.
        let rows = try Self.services(cluster, node: "worker2")
        let byFrontend = Dictionary(rows.map { ("\($0.frontend)/\($0.protocol)", $0) }, uniquingKeysWith: { a, _ in a })
        #expect(
            byFrontend["10.96.18.68:80/TCP"]?.type == "ClusterIP"
                && byFrontend["10.96.18.68:80/TCP"]?.backends.count == 3)
        #expect(
            byFrontend["172.18.0.2:32000/TCP"]?.type == "NodePort"
                && byFrontend["0.0.0.0:32000/TCP"]?.type == "NodePort")
        #expect(byFrontend["10.96.0.10:53/UDP"]?.backends.map(\.protocol) == ["UDP", "UDP", "UDP"])
        #expect(rows.allSatisfy { $0.state == "ok" && $0.service != nil })
        let cli = try LabIntegrationTests.cli(["service", "list", "--netns", ns, try Self.specFile(cluster, "worker2")])
        #expect(
            cli.output.contains("10.96.18.68:80/TCP") && cli.output.contains("1 => 10.0.1.15:80/TCP (active)"),
            "\(cli.output)")
        var more = cluster
        more.services.append(
            ServiceSpec(
                name: "default/extra", type: .clusterIP, clusterIP: IPAddress("10.96.7.7"),
                ports: [ServicePort(port: 8080, targetPort: 80)],
                backends: [ServiceBackend(ip: IPAddress("10.0.2.32"))]))
        try Self.apply(more)
        let after = try Self.services(more, node: "worker2")
        for row in rows {
            #expect(
                after.first { $0.frontend == row.frontend && $0.protocol == row.protocol }?.id == row.id,
                "id of \(row.frontend) kept")
        }
        #expect(try Self.probe(lab, "net", "10.96.7.7:8080").answers.keys.first == "PodName: net")

        // The programs are on the node's cgroup (bpftool shows them by name); teardown takes them off.
        let cgroup = try #require(cluster.cgroupPath(ofNode: "worker2"))
        let attached = try runTool(["bpftool", "cgroup", "show", cgroup])
        for hook in [
            "connect4", "sendmsg4", "recvmsg4", "getpeername4", "connect6", "sendmsg6", "recvmsg6", "getpeername6",
        ] { #expect(attached.output.contains("nodenet_sock_\(hook)"), "\(attached.output)") }
        let down = try NodeController(spec: more.spec(forNode: "worker2")!, namespace: .named(ns)).teardown()
        #expect(down.pinsRemoved)
        #expect(
            !(try runTool(["bpftool", "cgroup", "show", cgroup]).output.contains("nodenet_sock")),
            "teardown detached socket LB")
    }

    static func specFile(_ cluster: LabCluster, _ node: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(cluster.name)-\(node).json").path
        try cluster.spec(forNode: node)!.jsonData().write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func nodePortFromOutsideReachesLocalAndRemoteBackends() throws {
        let cluster = Self.cluster("np")
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let worker2 = NamespaceReference.named(cluster.namespace(ofNode: "worker2"))
        for node in cluster.nodes {
            let tcp = try Self.probe(cluster.name, "external", "\(node.address):32000", count: 40)
            #expect(tcp.failures == 0, "\(node.name): \(tcp.requests.compactMap(\.error).prefix(2))")
            let local = "PodName: " + node.pods[0].name
            #expect(
                tcp.answers[local, default: 0] > 0 && tcp.answers.count >= 2,
                "\(node.name) sends to local and remote backends: \(tcp.answers)")
            #expect(tcp.requests.allSatisfy { $0.peer == "\(node.address):32000" })
            let udp = try Self.probe(cluster.name, "external", "\(node.address):30053", udp: true, count: 20)
            #expect(
                udp.failures == 0 && udp.requests.allSatisfy { $0.peer == "\(node.address):30053" },
                "replies come back from the NodePort")
            // Datagrams larger than the MTU: every fragment of request and reply is translated.
            let big = try Self.probe(
                cluster.name, "external", "\(node.address):30053", udp: true, count: 20, size: 3000)
            #expect(
                big.failures == 0
                    && big.requests.allSatisfy { $0.peer == "\(node.address):30053" && ($0.bytes ?? 0) > 3000 },
                "fragmented: \(big.answers) \(big.requests.compactMap(\.error).prefix(2))")
            #expect(big.answers.count >= 2, "local and remote backends: \(big.answers)")
        }
        // The translations live in BPF conntrack, not the kernel's; the node's stack forwards nothing.
        let forwarded = try LabProbe.forwardedDatagrams(in: worker2)
        #expect(try Self.probe(cluster.name, "external", "172.18.0.2:32000", count: 20).failures == 0)
        #expect(
            try LabProbe.forwardedDatagrams(in: worker2) == forwarded, "remote backends are reached past the IP stack")
        let ct = try Conntrack.list(bpffsDirectory: cluster.bpffsDirectory(ofNode: "worker2"))
        #expect(
            ct.contains {
                $0.kind == "service" && $0.destination == "172.18.0.2:32000" && $0.source.hasPrefix("172.18.0.1:")
            })
        #expect(
            ct.contains { $0.kind == "nat-in" && $0.translated.hasPrefix("172.18.0.1:") },
            "remote backends see the node's address")
        let kernel = try Self.kernelConntrack(cluster, node: "worker2") {
            let outside = try Self.probe(cluster.name, "external", "172.18.0.2:32000", count: 10)
            #expect(outside.failures == 0)
        }
        #expect(!kernel.contains("32000"), "\(kernel)")
        // Garbage collection by age: nothing is idle for ten minutes yet (the default 10 s for
        // closed TCP flows could pass on a loaded machine); everything is, an hour from now.
        var patient = Conntrack.Timeouts()
        patient.tcpClosing = .seconds(600)
        patient.other = .seconds(600)
        patient.tcpOpening = .seconds(600)
        #expect(
            try Conntrack.collect(bpffsDirectory: cluster.bpffsDirectory(ofNode: "worker2"), timeouts: patient).removed
                == 0)
        let later = BPFClock.nanoseconds() + 3_600 * 1_000_000_000
        let gc = try Conntrack.collect(bpffsDirectory: cluster.bpffsDirectory(ofNode: "worker2"), now: later)
        #expect(gc.removed == gc.scanned && gc.scanned > 0, "closed TCP and idle UDP flows expire")
    }

    /// Service connections whose reverse entries went (a full LRU table evicts the least used
    /// entries, and may take one direction of a flow first) keep going, from outside through node
    /// ports and from a pod through ClusterIPs translated per packet (socket LB off), to a backend
    /// on the node and to one on another. An open TCP flow from outside to a backend on another
    /// node looks the reverse entry up only when its own entry is refreshed (about every half
    /// second), so it is made again within a second; that backend's reply in the window, taken
    /// back by the node's source NAT, is dropped (counted as a reply whose flow is gone) and sent
    /// again by TCP, never sent on to the client from the backend's own address. Every other
    /// flow looks it up with each packet: before, a pod client's requests skipped it too, the
    /// replies reached the pod untranslated and its resets ended both connections. The window is
    /// made certain: each flow's own entry is marked fresh as its reverse entry goes.
    @Test(arguments: [false, true])
    func serviceConnectionsWhoseReverseEntriesWentKeepGoing(fromPod: Bool) throws {
        var cluster = Self.cluster(fromPod ? "prev" : "nrev")
        cluster.socketLB = !fromPod  // (a pod's connections are then translated by from-container)
        for (name, backend, nodePort) in [("local", "10.0.2.204", 31610), ("remote", "10.0.1.15", 31611)] {
            cluster.services.append(
                ServiceSpec(
                    name: "default/echo-\(name)", type: .nodePort, clusterIP: IPAddress("10.96.9.\(nodePort % 100)")!,
                    ports: [ServicePort(port: 7100, targetPort: 7100, nodePort: nodePort)],
                    backends: [ServiceBackend(ip: IPAddress(backend)!)]))
        }
        // Where the client is and what it connects to (local backend first, then the remote one).
        let (clientNamespace, clientAddress, targets) =
            fromPod
            ? (cluster.namespace(ofPod: "net"), "10.0.2.32", "((\"10.96.9.10\", 7100), (\"10.96.9.11\", 7100))")
            : (cluster.externalNamespace, "172.18.0.1", "((\"172.18.0.2\", 31610), (\"172.18.0.2\", 31611))")
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        var servers: [Process] = []
        defer { servers.forEach(Self.stop) }
        for pod in ["cilium-with-replacement-w2", "cilium-with-replacement-w1"] {
            servers.append(
                try Self.startServer(
                    in: cluster.namespace(ofPod: pod), port: 7100, seconds: 60,
                    handle: Self.echo))
        }
        let layout = BPFFSLayout(directory: cluster.bpffsDirectory(ofNode: "worker2"))
        let ct = try #require(try BPFMap<nodenet_tuple, nodenet_ct_entry>.pinned(at: layout.path(.conntrack)))
        let verdicts = try #require(try BPFMap<UInt32, UInt64>.pinned(at: layout.path(.verdicts), perCPU: true))
        // The client: one connection to each target, 5 echoes on each (a thread each), its ports
        // printed; then (once told) 20 more on each, 20 ms apart, each answer awaited up to 5 s.
        // Bounded: 30 s.
        let script = """
            import socket, sys, time, threading, os
            threading.Timer(30, lambda: os._exit(1)).start()
            conns = []
            for target in \(targets):
                c = socket.create_connection(target, timeout=5)
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conns.append(c)
            def echo(c, i):
                c.sendall(b"%02d" % i)
                got = b""
                while len(got) < 2:
                    data = c.recv(2 - len(got))
                    if not data:
                        raise OSError("closed")
                    got += data
                return got == b"%02d" % i
            first = [0, 0]
            def run(count):
                results = ["", ""]
                def one(k):
                    ok = 0
                    try:
                        for i in range(count):
                            if i == 0:
                                first[k] = time.monotonic_ns()
                            ok += echo(conns[k], i)
                            time.sleep(0.02)
                        results[k] = "%d" % ok
                    except OSError as e:
                        results[k] = "%d:%s" % (ok, e)
                threads = [threading.Thread(target=one, args=(k,)) for k in range(2)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                return " ".join(results)
            print(run(5), " ".join("%d" % c.getsockname()[1] for c in conns), flush=True)
            sys.stdin.readline()
            print(run(20), first[1], flush=True)
            os._exit(0)
            """
        let client = Process()
        client.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        client.arguments = ["netns", "exec", clientNamespace, "python3", "-c", script]
        let input = Pipe()
        let output = Pipe()
        client.standardInput = input
        client.standardOutput = output
        try client.run()
        defer { Self.stop(client) }
        var buffer = Data()
        func nextLine() -> String? {
            while true {
                if let end = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: buffer[..<end], as: UTF8.self)
                    buffer = Data(buffer[(end + 1)...])
                    return line
                }
                let chunk = output.fileHandleForReading.availableData
                if chunk.isEmpty { return nil }
                buffer.append(chunk)
            }
        }
        let first = try #require(nextLine(), "the client's first echoes").split(separator: " ")
        try #require(first.count == 4 && first[0] == "5" && first[1] == "5", "both connections echo: \(first)")
        let clientPorts = try first[2...].map { try #require(UInt16($0)) }
        func entries(_ kind: nodenet_ct_kind) throws -> [(key: nodenet_tuple, value: nodenet_ct_entry)] {
            try ct.entries().filter { e in
                let toClient = kind == NODENET_CT_REPLY
                let (address, port) = toClient ? (e.key.daddr, e.key.dport) : (e.key.saddr, e.key.sport)
                return e.key.kind == UInt8(kind.rawValue)
                    && IPAddress(ipv4: UInt32(bigEndian: address)) == IPAddress(clientAddress)
                    && clientPorts.contains(UInt16(bigEndian: port))
            }
        }
        let replies = try entries(NODENET_CT_REPLY)
        try #require(replies.count == 2, "a reverse entry for each connection: \(replies.count)")
        let dropsBefore = try verdicts.sum(NODENET_VERDICT_DROP_NO_FLOW.rawValue)
        let marked = BPFClock.nanoseconds()
        for var service in try entries(NODENET_CT_SERVICE) {
            service.value.last_seen_ns = marked
            try ct.update(service.key, service.value)
        }
        for reply in replies { #expect(try ct.delete(reply.key)) }
        input.fileHandleForWriting.write(Data("go\n".utf8))
        let after = try #require(nextLine(), "the client's later echoes").split(separator: " ")
        try #require(after.count == 3, "\(after)")
        #expect(after[0] == "20" && after[1] == "20", "both connections went on (local, remote): \(after)")
        #expect(try entries(NODENET_CT_REPLY).count == 2, "the reverse entries are made again")
        // The window lasts while the flow's own entry is not due for a refresh (2^29 ns after it
        // was marked); python's clock is the kernel's monotonic one, as BPFClock's is.
        let firstRequest = try #require(UInt64(after[2]))
        let delay = firstRequest > marked ? firstRequest - marked : 0
        let dropped = try verdicts.sum(NODENET_VERDICT_DROP_NO_FLOW.rawValue) - dropsBefore
        if fromPod {
            // (Nothing to judge: every request made the reverse entry again.)
        } else if delay < 400_000_000 {
            #expect(dropped > 0, "the remote backend's reply in the window was dropped at the node")
        } else {
            print(
                "the client's request came \(delay / 1_000_000) ms after the entries were marked: the drop not judged")
        }
    }

    /// `externalTrafficPolicy: Local`: from outside, a node port reaches only the node's own
    /// backends, with the client's address (no source NAT); a node without one drops the traffic
    /// (counted, no reset). `internalTrafficPolicy: Local`: the clusterIP reaches only local
    /// backends. `service list` shows the policy.
    @Test func localTrafficPolicies() throws {
        var cluster = LabCluster.seed(name: LabIntegrationTests.labName("etp"))
        cluster.services.append(
            ServiceSpec(
                name: "default/local", type: .nodePort, clusterIP: IPAddress("10.96.7.7"),
                ports: [ServicePort(port: 80, nodePort: 31000)],
                backends: ["10.0.1.15", "10.0.2.204"].map { ServiceBackend(ip: IPAddress($0)!) },
                externalTrafficPolicy: .local, internalTrafficPolicy: .local))
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        for (node, pod) in [("worker", "cilium-with-replacement-w1"), ("worker2", "cilium-with-replacement-w2")] {
            let address = cluster.nodes.first { $0.name == node }!.address
            let probe = try Self.probe(cluster.name, "external", "\(address):31000", count: 20)
            #expect(probe.failures == 0 && probe.answers == ["PodName: \(pod)": 20], "\(node): \(probe.answers)")
            // The backend sees the client: a service flow from 172.18.0.1 and no source NAT.
            let ct = try Conntrack.list(bpffsDirectory: cluster.bpffsDirectory(ofNode: node))
            #expect(
                ct.contains {
                    $0.kind == "service" && $0.destination == "\(address):31000" && $0.source.hasPrefix("172.18.0.1:")
                })
            #expect(
                !ct.contains { $0.kind.hasPrefix("nat") && ($0.source + $0.destination).contains("172.18.0.1:") },
                "\(ct)")
        }
        // control-plane has no backend of its own: dropped (a timeout, not a refusal), counted.
        let layout = BPFFSLayout(directory: cluster.bpffsDirectory(ofNode: "control-plane"))
        let verdicts = try #require(try BPFMap<UInt32, UInt64>.pinned(at: layout.path(.verdicts), perCPU: true))
        let dropped = try verdicts.sum(UInt32(NODENET_VERDICT_DROP_NO_LOCAL_BACKEND.rawValue))
        let none = try Self.probe(cluster.name, "external", "172.18.0.4:31000", count: 2, timeout: 1)
        #expect(none.failures == 2, "\(none.answers)")
        #expect(
            none.requests.allSatisfy { $0.error?.contains("refused") == false }, "\(none.requests.compactMap(\.error))")
        #expect(try verdicts.sum(UInt32(NODENET_VERDICT_DROP_NO_LOCAL_BACKEND.rawValue)) >= dropped + 2)
        // The seed's service (Cluster policy) still reaches every backend from control-plane.
        #expect(try Self.probe(cluster.name, "external", "172.18.0.4:32000", count: 30).answers.count == 3)
        // internalTrafficPolicy: Local: from net (worker2) the clusterIP reaches worker2's backend only.
        let inside = try Self.probe(cluster.name, "net", "10.96.7.7:80", count: 20)
        #expect(inside.answers == ["PodName: cilium-with-replacement-w2": 20], "\(inside.answers)")
        let rows = try Self.services(cluster, node: "control-plane").filter {
            $0.port == 31000 || $0.frontend == "10.96.7.7:80"
        }
        #expect(
            rows.filter { $0.port == 31000 }.allSatisfy {
                $0.flags == ["ExternalTrafficPolicy=Local"] && $0.backends.isEmpty
            })
        #expect(rows.first { $0.frontend == "10.96.7.7:80" }?.flags == ["InternalTrafficPolicy=Local"])
    }

    /// Backend conditions (KEP-1669): a backend marked terminating takes no new flows while a
    /// ready one exists, keeps the connections it has, and takes new flows again when it is the
    /// only one serving; `service list` shows it as terminating.
    @Test func terminatingBackendsKeepTheirFlowsAndServeWhenNothingElseDoes() throws {
        var cluster = LabCluster.seed(name: LabIntegrationTests.labName("term"))
        // This service alone names its backends (a backend shared with another service would
        // stay in the map for that one's sake).
        cluster.services = []
        cluster.services.append(
            ServiceSpec(
                name: "default/term", type: .nodePort, clusterIP: IPAddress("10.96.8.8"),
                ports: [ServicePort(port: 80, nodePort: 31100)],
                backends: ["10.0.1.15", "10.0.2.204"].map { ServiceBackend(ip: IPAddress($0)!) }))
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let held = try (0..<12).map { _ in
            try HeldConnection(from: .named(cluster.externalNamespace), to: IPAddress("172.18.0.2"), port: 31100)
        }
        let ct = try Conntrack.list(bpffsDirectory: cluster.bpffsDirectory(ofNode: "worker2"))
        let toW2 = held.filter { c in
            ct.contains {
                $0.kind == "service" && $0.source == "172.18.0.1:\(c.localPort)"
                    && $0.translated.hasPrefix("10.0.2.204:")
            }
        }
        try #require(!toW2.isEmpty, "some held connections went to w2")
        // w2 is terminating: no new flow, its own flows kept.
        let index = cluster.services.count - 1
        cluster.services[index].backends[1] = ServiceBackend(
            ip: IPAddress("10.0.2.204"), ready: false, serving: true, terminating: true)
        try Self.apply(cluster)
        for c in held {
            let answer = try c.request()
            if toW2.contains(where: { $0 === c }) {
                #expect(answer.hasPrefix("PodName: cilium-with-replacement-w2"), "a terminating backend keeps its flow")
            } else {
                #expect(answer.hasPrefix("PodName: cilium-with-replacement-w1"), "\(answer)")
            }
        }
        let fresh = try Self.probe(cluster.name, "external", "172.18.0.2:31100", count: 30)
        #expect(
            fresh.answers == ["PodName: cilium-with-replacement-w1": 30],
            "\(fresh.answers) \(fresh.requests.compactMap(\.error))")
        let row = try #require(try Self.services(cluster, node: "worker2").first { $0.frontend == "172.18.0.2:31100" })
        #expect(row.backends.map(\.state) == ["active", "terminating"], "\(row.backends)")
        // w1 goes; w2, still terminating and serving, is all there is: it answers.
        cluster.services[index].backends.removeFirst()
        try Self.apply(cluster)
        let last = try Self.probe(cluster.name, "external", "172.18.0.2:31100", count: 10)
        #expect(last.answers == ["PodName: cilium-with-replacement-w2": 10], "\(last.answers)")
    }

    /// `sessionAffinity: ClientIP`: a client's requests keep going to one backend (a pod through
    /// socket LB, the external host through the node port), a new choice is made after the
    /// timeout, and at once when the backend leaves the service.
    @Test func sessionAffinityHoldsThenMoves() throws {
        var cluster = LabCluster.seed(name: LabIntegrationTests.labName("aff"))
        cluster.services[0].sessionAffinity = .clientIP
        cluster.services[0].sessionAffinityTimeoutSeconds = 1
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let fromPod = try Self.probe(cluster.name, "net", "10.96.18.68:80", count: 100)
        #expect(fromPod.failures == 0 && fromPod.answers.count == 1, "one backend for the pod: \(fromPod.answers)")
        let fromOutside = try Self.probe(cluster.name, "external", "172.18.0.2:32000", count: 100)
        #expect(
            fromOutside.failures == 0 && fromOutside.answers.count == 1,
            "one backend from outside: \(fromOutside.answers)")
        let row = try #require(try Self.services(cluster, node: "worker2").first { $0.frontend == "10.96.18.68:80" })
        #expect(row.flags == ["sessionAffinity=ClientIP (1 s)"], "\(row.flags)")
        // After the timeout a new choice: over 12 waits, more than one backend (all alike: p = 3^-11).
        var chosen: Set<String> = []
        for _ in 0..<12 {
            usleep(1_150_000)
            chosen.formUnion(try Self.probe(cluster.name, "net", "10.96.18.68:80").answers.keys)
        }
        #expect(chosen.count > 1, "\(chosen)")
        // The affine backend leaves the service: the next request goes elsewhere, at once.
        cluster.services[0].sessionAffinityTimeoutSeconds = 3600
        try Self.apply(cluster)
        let held = try #require(try Self.probe(cluster.name, "net", "10.96.18.68:80").answers.keys.first)
        let names = [
            "PodName: cilium-with-replacement-w1": "10.0.1.15", "PodName: cilium-with-replacement-w2": "10.0.2.204",
            "PodName: cilium-with-replacement-cp": "10.0.0.142",
        ]
        #expect(try Self.probe(cluster.name, "net", "10.96.18.68:80", count: 20).answers == [held: 20])
        cluster.services[0].backends.removeAll { $0.ip == IPAddress(names[held]!)! }
        try Self.apply(cluster)
        let after = try Self.probe(cluster.name, "net", "10.96.18.68:80", count: 20)
        #expect(after.failures == 0 && after.answers.count == 1 && after.answers[held] == nil, "\(after.answers)")
    }

    /// The seed's lab with `service` added, up, and the outside network routing `prefix` to
    /// worker2 (as a load balancer or a router would); removed again when that fails.
    static func upRouted(
        _ tag: String, with service: ServiceSpec, routing prefix: IPPrefix,
        configure: (inout LabCluster) -> Void = { _ in }
    ) throws -> LabCluster {
        var cluster = LabCluster.seed(name: LabIntegrationTests.labName(tag))
        cluster.services.append(service)
        configure(&cluster)
        do {
            try Self.up(cluster)
            let external = try NetlinkSocket(namespace: .named(cluster.externalNamespace))
            try external.add(
                Route(
                    destination: prefix, gateway: IPAddress("172.18.0.2"),
                    interfaceIndex: try #require(try external.link(named: "eth0")).index))
        } catch {
            Lab.down(name: cluster.name)
            throw error
        }
        return cluster
    }

    /// A client outside that reaches a pod both through a node port and at the pod's own address
    /// (routed to its node), from the same source port, one connection after the other: each
    /// over (half reset by the client, half closed with FINs, the client's first) before the
    /// next opens. Before, the direct connection's replies were rewritten to the node port (the
    /// reverse entry of the closed NodePort flow has the same tuple) and it failed until the
    /// agent's collection; now the backend's SYN-ACK to a SYN that did not come through the
    /// frontend retires the closed pair (once it was quiet as long as its NAT port would have to
    /// be). A NodePort connection still open keeps its translation through a SYN straight to the
    /// pod on its tuple.
    @Test func aDirectConnectionOnTheTupleOfAClosedNodePortFlowIsNotTranslated() throws {
        let cluster = try Self.upRouted(
            "direct",
            with: ServiceSpec(
                name: "default/direct", type: .nodePort, clusterIP: IPAddress("10.96.9.41"),
                ports: [ServicePort(port: 7000, nodePort: 31601)],
                backends: [ServiceBackend(ip: IPAddress("10.0.2.204"))]),
            routing: IPPrefix("10.0.2.0/24"))
        defer { Lab.down(name: cluster.name) }
        // The backend: an echo server that closes once the client did (so the pod holds no
        // TIME_WAIT on the tuple, which TCP itself may refuse a new SYN on). Bounded: killed at
        // the end, gone by itself in 120 s.
        let server = try Self.startServer(
            in: cluster.namespace(ofPod: "cilium-with-replacement-w2"), port: 7000, seconds: 120,
            handle: Self.echo)
        defer { Self.stop(server) }
        // Bounded: 3 s a connection (one SYN retransmission), 40 connections and one kept open.
        let script = """
            import json, socket, struct, time
            def connect(address, port):
                s = socket.socket()
                s.settimeout(3)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", port))
                s.connect(address)
                return s
            def echo(address, port, reset):
                try:
                    s = connect(address, port)
                except OSError as e:
                    return "%r" % e
                try:
                    s.sendall(b"x")
                    answered = s.recv(64) == b"x"
                    peer = "%s:%d" % s.getpeername()
                    if reset:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    else:
                        # FINs, the client's first; over once the pod's came.
                        s.shutdown(socket.SHUT_WR)
                        while s.recv(64):
                            pass
                    return "%s %s" % (peer, answered)
                except OSError as e:
                    return "%r" % e
                finally:
                    s.close()
            node, pod = ("172.18.0.2", 31601), ("10.0.2.204", 7000)
            deadline = time.monotonic() + 20
            while echo(node, 0, True) != "172.18.0.2:31601 True" and time.monotonic() < deadline:
                time.sleep(0.2)
            results = []
            for n, port in enumerate(range(41100, 41120)):
                reset = n % 2 == 0
                results.append(["node port", echo(node, port, reset)])
                time.sleep(0.15)  # (past the old flow's quiet time; a client reopening at once waits a second)
                results.append(["pod", echo(pod, port, reset)])
            kept = connect(node, 41200)
            results.append(["open, then pod", echo(pod, 41200, True)])
            kept.sendall(b"k")
            results.append(["open", "%s:%d %s" % (kept.getpeername() + (kept.recv(64) == b"k",))])
            print(json.dumps(results))
            """
        let run = try runTool(["ip", "netns", "exec", cluster.externalNamespace, "python3", "-c", script])
        try #require(run.status == 0, "\(run.output)")
        let line = try #require(run.output.split(separator: "\n").last { $0.hasPrefix("[") })
        let results = try JSONDecoder().decode([[String]].self, from: Data(line.utf8))
        try #require(results.count == 42, "\(results)")
        for (n, result) in results.prefix(40).enumerated() {
            let wanted = result[0] == "pod" ? "10.0.2.204:7000 True" : "172.18.0.2:31601 True"
            #expect(result[1] == wanted, "connection \(n), \(result[0]): \(result[1])")
        }
        #expect(!results[40][1].hasPrefix("10.0.2.204:7000 True"), "a SYN on an open flow's tuple: \(results[40][1])")
        #expect(results[41][1] == "172.18.0.2:31601 True", "the open NodePort connection: \(results[41][1])")
    }

    /// A LoadBalancer service with a load balancer address and an external address, both routed
    /// to worker2 by the outside network: reached from the external host on each (remote
    /// backends too, the replies from the address it asked), from a pod through socket LB, and
    /// on its node port; `service list` says LoadBalancer.
    @Test func loadBalancerAndExternalAddressesAreReachedFromOutside() throws {
        var lb = ServiceSpec(
            name: "default/lb", type: .loadBalancer, clusterIP: IPAddress("10.96.9.9"),
            ports: [ServicePort(port: 8080, targetPort: 80, nodePort: 31200)],
            backends: ["10.0.1.15", "10.0.2.204", "10.0.0.142"].map { ServiceBackend(ip: IPAddress($0)!) })
        lb.loadBalancerIPs = [IPAddress("172.18.200.10")]
        lb.externalIPs = [IPAddress("172.18.200.11")]
        let cluster = try Self.upRouted("lb", with: lb, routing: IPPrefix("172.18.200.0/24"))
        defer { Lab.down(name: cluster.name) }
        for address in ["172.18.200.10", "172.18.200.11"] {
            let probe = try Self.probe(cluster.name, "external", "\(address):8080", count: 30)
            #expect(probe.failures == 0, "\(address): \(probe.requests.compactMap(\.error).prefix(2))")
            #expect(probe.answers.count >= 2, "local and remote backends: \(probe.answers)")
            #expect(probe.requests.allSatisfy { $0.peer == "\(address):8080" }, "replies come from \(address)")
        }
        let fromPod = try Self.probe(cluster.name, "net", "172.18.200.10:8080", count: 20)
        #expect(fromPod.failures == 0 && fromPod.answers.count >= 2, "\(fromPod.answers)")
        #expect(try Self.probe(cluster.name, "external", "172.18.0.3:31200", count: 10).failures == 0)
        let rows = try Self.services(cluster, node: "worker2").filter { $0.service == "default/lb" }
        #expect(
            Set(rows.filter { $0.type == "LoadBalancer" }.map(\.frontend)) == [
                "172.18.200.10:8080", "172.18.200.11:8080",
            ],
            "\(rows.map { "\($0.frontend) \($0.type)" })")
    }

    /// loadBalancerSourceRanges: from outside, a LoadBalancer address takes only the listed
    /// clients (the others are dropped and counted); its external IPs, node ports and traffic
    /// from inside the cluster are not governed by them; a change of the ranges takes effect.
    @Test func loadBalancerSourceRangesKeepOtherClientsOut() throws {
        var lb = ServiceSpec(
            name: "default/guarded", type: .loadBalancer, clusterIP: IPAddress("10.96.9.19"),
            ports: [ServicePort(port: 8080, targetPort: 80, nodePort: 31300)],
            backends: ["10.0.1.15", "10.0.2.204"].map { ServiceBackend(ip: IPAddress($0)!) })
        lb.loadBalancerIPs = [IPAddress("172.18.201.10")]
        lb.externalIPs = [IPAddress("172.18.201.11")]
        lb.loadBalancerSourceRanges = [IPPrefix("192.0.2.0/24")]
        var cluster = try Self.upRouted("lsr", with: lb, routing: IPPrefix("172.18.201.0/24"))
        defer { Lab.down(name: cluster.name) }
        let layout = BPFFSLayout(directory: cluster.bpffsDirectory(ofNode: "worker2"))
        let verdicts = try #require(try BPFMap<UInt32, UInt64>.pinned(at: layout.path(.verdicts), perCPU: true))
        let denied = UInt32(NODENET_VERDICT_DROP_SOURCE_RANGE.rawValue)
        let before = try verdicts.sum(denied)
        // 172.18.0.1 is not in 192.0.2.0/24: dropped (a timeout, not a refusal), counted.
        let outside = try Self.probe(cluster.name, "external", "172.18.201.10:8080", count: 3, timeout: 1)
        #expect(outside.failures == 3, "\(outside.answers)")
        #expect(
            outside.requests.allSatisfy { $0.error?.contains("refused") == false },
            "\(outside.requests.compactMap(\.error))")
        #expect(try verdicts.sum(denied) >= before + 3)
        // What the ranges do not govern.
        #expect(try Self.probe(cluster.name, "external", "172.18.201.11:8080", count: 10).failures == 0)
        #expect(try Self.probe(cluster.name, "external", "172.18.0.2:31300", count: 10).failures == 0)
        #expect(try Self.probe(cluster.name, "net", "172.18.201.10:8080", count: 10).failures == 0)
        let row = try Self.services(cluster, node: "worker2").first { $0.frontend == "172.18.201.10:8080" }
        #expect(row?.flags == ["loadBalancerSourceRanges=192.0.2.0/24"], "\(row?.flags ?? [])")
        // The client's /32 added: it gets in.
        let index = try #require(cluster.services.firstIndex { $0.name == "default/guarded" })
        cluster.services[index].loadBalancerSourceRanges = [IPPrefix("192.0.2.0/24"), IPPrefix("172.18.0.1/32")]
        try Self.apply(cluster)
        let allowed = try Self.probe(cluster.name, "external", "172.18.201.10:8080", count: 20)
        #expect(allowed.failures == 0 && allowed.answers.count == 2, "\(allowed.answers)")
        // Ranges removed: every client, and nothing left in the map.
        cluster.services[index].loadBalancerSourceRanges = []
        try Self.apply(cluster)
        #expect(try Self.probe(cluster.name, "external", "172.18.201.10:8080", count: 5).failures == 0)
        let ranges = try #require(
            try BPFMap<nodenet_source_range_key, UInt8>.pinned(at: layout.path(.sourceRanges)))
        #expect(try ranges.keys().isEmpty)
    }

    /// A TCP server in `namespace` on `port` (python3's socketserver, a thread per connection),
    /// each connection served by `handle` (the body of its handler, `self.request` the socket;
    /// OSError ends it) after `preamble` ran, started once it listens; gone by itself after
    /// `seconds`, else when the caller stops it (`stop`).
    static func startServer(
        in namespace: String, port: Int, seconds: Int, preamble: String = "", handle: String
    ) throws -> Process {
        let body = handle.split(separator: "\n", omittingEmptySubsequences: false).map { "            " + $0 }
        let script = """
            import os, socketserver, threading
            threading.Timer(\(seconds), lambda: os._exit(0)).start()
            \(preamble)
            class Handler(socketserver.BaseRequestHandler):
                def handle(self):
                    try:
            \(body.joined(separator: "\n"))
                    except OSError:
                        pass
            class Server(socketserver.ThreadingTCPServer):
                allow_reuse_address = True
                daemon_threads = True
                request_queue_size = 256
            server = Server(("0.0.0.0", \(port)), Handler)
            print("ready", flush=True)
            server.serve_forever()
            """
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        server.arguments = ["netns", "exec", namespace, "python3", "-c", script]
        let ready = Pipe()
        server.standardOutput = ready
        try server.run()
        let greeting = ready.fileHandleForReading.availableData
        guard String(decoding: greeting, as: UTF8.self).hasPrefix("ready") else {
            stop(server)
            throw NodeNetError.state("the server in \(namespace) did not start")
        }
        return server
    }

    /// A `startServer` handler that echoes what it receives and closes once the client did.
    static let echo = """
        while True:
            data = self.request.recv(64)
            if not data:
                return
            self.request.sendall(data)
        """

    static func stop(_ server: Process) {
        if server.isRunning { kill(server.processIdentifier, SIGKILL) }
        server.waitUntilExit()
    }

    /// The lab with one more node port, `nodePort` on every node, whose one backend (10.0.1.15 at
    /// `targetPort`, on node worker) is remote from worker2: its flows through worker2 take NAT ports.
    static func nodePortToRemoteBackend(_ tag: String, nodePort: Int, targetPort: Int = 80) -> LabCluster {
        var cluster = Self.cluster(tag)
        cluster.services.append(
            ServiceSpec(
                name: "default/remote-\(tag)", type: .nodePort, clusterIP: IPAddress("10.96.9.39"),
                ports: [ServicePort(port: 8080, targetPort: targetPort, nodePort: nodePort)],
                backends: [ServiceBackend(ip: IPAddress("10.0.1.15"))]))
        return cluster
    }

    /// A SYN flood from outside to a node port with a remote backend: 6 000 SYNs nobody completes
    /// (from six addresses on the fabric nobody answers for, each within its own conntrack part)
    /// take every one of the 4 536 NAT ports for that backend. Before, they held them for the TCP timeout (6 h) and every new client
    /// was dropped; now a port whose flow never got established is given to a new flow after
    /// a second idle, and the agent's collection removes such flows after 15 s.
    @Test func aSYNFloodCannotHoldTheNodePortsNATPorts() throws {
        let cluster = Self.nodePortToRemoteBackend("syn", nodePort: 31500)
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let bpffs = cluster.bpffsDirectory(ofNode: "worker2")
        func held() throws -> Int {
            try Conntrack.list(bpffsDirectory: bpffs).filter {
                $0.kind == "nat-in" && $0.source == "10.0.1.15:80"
            }.count
        }
        let script = """
            import socket, struct
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            for i in range(6000):
                tcp = struct.pack("!HHIIBBHHH", 10000 + i, 31500, 1, 0, 5 << 4, 0x02, 8192, 0, 0)
                ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0,
                                 socket.inet_aton("172.18.0.%d" % (50 + i % 6)), socket.inet_aton("172.18.0.2"))
                s.sendto(ip + tcp, ("172.18.0.2", 0))
            """
        // The agent's collection has run once (its first marks older flows established).
        try Conntrack.collect(bpffsDirectory: bpffs)
        let flood = try runTool(["ip", "netns", "exec", cluster.externalNamespace, "python3", "-c", script])
        try #require(flood.status == 0, "\(flood.output)")
        let taken = try held()
        #expect(taken >= 4_000, "the flood took \(taken) of the 4 536 NAT ports")
        // A client keeps connecting: every connection made (a SYN dropped while the flood's ports
        // were younger than a second is sent again by the client's TCP).
        let client = try Self.probe(cluster.name, "external", "172.18.0.2:31500", count: 20, timeout: 5)
        #expect(client.failures == 0, "\(client.requests.compactMap(\.error).prefix(3))")
        // The agent's collection: the flood's flows are gone 15 s after they went idle.
        let soon = BPFClock.nanoseconds() + 16 * 1_000_000_000
        try Conntrack.collect(bpffsDirectory: bpffs, now: soon)
        #expect(try held() < 100, "flows that never got established outlive their 15 s")
    }

    /// A client outside opening and closing connections quickly to a node port with a remote
    /// backend: 6 000 connections one after another, half closed with a FIN and half with a
    /// reset, more than the 4 536 NAT ports that backend has. Before, a closed flow kept its
    /// port until the agent's collection removed it (10 s on), so past the ~4 000th connection
    /// every SYN was dropped until then (88 connections a second in datapath-bench); now the
    /// port of a flow that is over and quiet (20 ms after a reset, 100 ms after FINs) goes to the next flow, its service
    /// entries with it, and the outside's conntrack count gets them back. Connections that are
    /// not over keep theirs through the churn: 20 opened again on a tuple whose earlier flow was
    /// reset (they must not inherit its end), idle meanwhile, and 20 the client half-closed.
    @Test func aClientClosingConnectionsQuicklyDoesNotRunOutOfNATPorts() throws {
        let cluster = Self.nodePortToRemoteBackend("churn", nodePort: 31501, targetPort: 7000)
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let bpffs = cluster.bpffsDirectory(ofNode: "worker2")
        // The agent's collection has run once: quotas are enforced from here on.
        try Conntrack.collect(bpffsDirectory: bpffs)
        // The backend: an echo server; "H" half-closed by the client is answered "bye" once a
        // "G" came on another connection. Bounded: killed at the end, gone by itself in 300 s.
        let server = try Self.startServer(
            in: cluster.namespace(ofPod: "cilium-with-replacement-w1"), port: 7000, seconds: 300,
            preamble: "go = threading.Event()",
            handle: """
                while True:
                    data = self.request.recv(64)
                    if not data:
                        return
                    if data == b"H":
                        self.request.sendall(b"H")
                        while self.request.recv(64):
                            pass
                        # Half-closed: a byte every 2 s (the agents' collection takes a closing
                        # flow idle for 10 s), "bye" once "G" came.
                        while not go.wait(2):
                            self.request.sendall(b".")
                        self.request.sendall(b"bye")
                        return
                    if data == b"G":
                        go.set()
                    self.request.sendall(data)
                """)
        defer { Self.stop(server) }
        // Bounded: 2 s a connection, 90 s for the churn, which stops at the 10th failure.
        let script = """
            import json, socket, struct, time
            node = ("172.18.0.2", 31501)
            def connect(port=None):
                s = socket.socket()
                s.settimeout(2)
                if port:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("0.0.0.0", port))
                s.connect(node)
                return s
            def echo(s, data):
                s.sendall(data)
                if s.recv(64) != data:
                    raise RuntimeError("no echo")
            def reset(s):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            deadline = time.monotonic() + 20
            while True:
                try:
                    s = connect()
                    echo(s, b"x")
                    reset(s)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            kept = []
            for port in range(40000, 40020):
                s = connect(port)
                echo(s, b"k")
                reset(s)
                s = connect(port)
                echo(s, b"k")
                kept.append(s)
            halves = []
            for _ in range(20):
                s = connect()
                echo(s, b"H")
                s.shutdown(socket.SHUT_WR)
                halves.append(s)
            done, failures, deadline = 0, [], time.monotonic() + 90
            for i in range(6000):
                if time.monotonic() > deadline or len(failures) >= 10:
                    break
                try:
                    s = connect()
                    try:
                        echo(s, b"c")
                        if i % 2 == 0:
                            reset(s)
                        done += 1
                    finally:
                        s.close()
                except Exception as e:
                    failures.append("connection %d: %r" % (i, e))
            lost = []
            for n, s in enumerate(kept):
                try:
                    echo(s, b"k")
                except Exception as e:
                    lost.append("reopened %d: %r" % (n, e))
            s = connect()
            echo(s, b"G")
            reset(s)
            for n, s in enumerate(halves):
                try:
                    got = b""
                    while not got.endswith(b"bye"):
                        data = s.recv(64)
                        if not data:
                            raise RuntimeError("closed without the answer")
                        got += data
                except Exception as e:
                    lost.append("half-closed %d: %r" % (n, e))
            print(json.dumps({"done": done, "failures": failures, "lost": lost}))
            """
        let run = try runTool(["ip", "netns", "exec", cluster.externalNamespace, "python3", "-c", script])
        try #require(run.status == 0, "\(run.output)")
        struct Outcome: Decodable {
            var done: Int
            var failures: [String]
            var lost: [String]
        }
        let line = try #require(run.output.split(separator: "\n").last { $0.hasPrefix("{") })
        let outcome = try JSONDecoder().decode(Outcome.self, from: Data(line.utf8))
        #expect(outcome.failures.isEmpty, "\(outcome.failures)")
        #expect(outcome.done == 6000, "\(outcome.done) of 6 000 connections made")
        #expect(outcome.lost.isEmpty, "connections that were not over lost their port: \(outcome.lost)")
        // The outside's count holds about what the table holds (at most 4 entries for each of
        // the 4 536 ports), not 4 entries for every connection made (24 000).
        let quotas = try #require(
            try BPFMap<UInt32, UInt32>.pinned(at: BPFFSLayout(directory: bpffs).path(.conntrackQuota)))
        let outside = try quotas.lookup(UInt32(NODENET_CT_QUOTA_OUTSIDE)) ?? 0
        #expect(outside <= 4 * 4_536 + 200, "the outside's count: \(outside)")
    }

    /// Socket LB's reverse entries (for getpeername() and UDP replies) go when their socket is
    /// released: 50 connections and 50 unconnected UDP sockets from a pod leave none behind
    /// (before, each left one until the LRU evicted it). Attack: a pod opening connections in a loop filled the map and evicted
    /// other pods' entries.
    @Test func socketReverseEntriesGoWithTheirSockets() throws {
        let cluster = Self.cluster("srel")
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let layout = BPFFSLayout(directory: cluster.bpffsDirectory(ofNode: "worker2"))
        let map = try #require(
            try BPFMap<nodenet_sock_key, nodenet_sock_revnat>.pinned(at: layout.path(.socketRevNat)))
        let before = try map.keys().count
        let probe = try Self.probe(cluster.name, "net", "10.96.18.68:80", count: 50)
        #expect(probe.failures == 0 && probe.answers.count >= 2, "\(probe.answers)")
        #expect(probe.requests.allSatisfy { $0.peer == "10.96.18.68:80" }, "getpeername() still shows the service")
        let left = try map.keys().count
        #expect(left <= before, "\(left - before) reverse entries left by 50 closed connections")
        // Unconnected UDP sockets (sendto to the service): one entry per backend each sent to,
        // gone with the socket (they used to stay until the LRU evicted them).
        let udp = try Self.probe(cluster.name, "net", "10.96.0.10:53", udp: true, count: 50)
        #expect(udp.failures == 0 && udp.answers.count >= 2, "\(udp.answers)")
        let afterUDP = try map.keys().count
        #expect(afterUDP <= before, "\(afterUDP - before) reverse entries left by 50 closed UDP sockets")
        let sent = try #require(try BPFMap<UInt64, nodenet_sock_sent>.pinned(at: layout.path(.socketSent)))
        #expect(try sent.keys().isEmpty, "the released sockets' notes went with them")
    }

    @Test func podTrafficLeavingTheClusterIsMasqueradedAndPodToPodIsNot() throws {
        let cluster = Self.cluster("mq")
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let seen = PeerLog()
        let external = try PodServer(
            name: "external", ip: cluster.externalAddress, namespace: .named(cluster.externalNamespace)
        ) { seen.add($0) }
        external.start()
        defer { external.stop() }
        let out = try Self.probe(cluster.name, "net", "172.18.0.1:80", count: 3)
        #expect(out.failures == 0 && out.answers.keys.first == "PodName: external")
        #expect(
            seen.lines.count == 3 && seen.lines.allSatisfy { $0.hasPrefix("http 172.18.0.2:") },
            "the external host sees the node's address: \(seen.lines)")
        let ping = try runTool([
            "ip", "netns", "exec", cluster.namespace(ofPod: "net"), "ping", "-c", "2", "-i", "0.2", "-W", "2", "-w",
            "10", "172.18.0.1",
        ])
        #expect(ping.output.contains("2 received"), "ICMP echo is masqueraded too: \(ping.output)")
        // A datagram larger than the MTU: every fragment leaves with the node's address, and the
        // fragmented reply is restored to the pod.
        let big = try Self.probe(cluster.name, "net", "172.18.0.1:53", udp: true, count: 3, size: 3000)
        #expect(
            big.failures == 0 && big.requests.allSatisfy { $0.peer == "172.18.0.1:53" && ($0.bytes ?? 0) > 3000 },
            "\(big.requests)")
        #expect(
            seen.lines.filter { $0.hasPrefix("udp 172.18.0.2:") && $0.hasSuffix(" 3000 bytes") }.count == 3,
            "\(seen.lines)")
        // Pod to pod across nodes keeps the pod's address (inside nativeRoutingCIDR).
        let capture = try FrameCapture(
            namespace: .named(cluster.namespace(ofPod: "cilium-with-replacement-w1")), device: "eth0")
        #expect(try Self.probe(cluster.name, "net", "10.0.1.15:80").failures == 0)
        let frames = capture.drain().compactMap(CapturedIPv4.init)
        #expect(frames.contains { $0.source == "10.0.2.32" && $0.destination == "10.0.1.15" }, "\(frames.prefix(4))")
    }

    /// Traffic keeps going while a service's backends grow and shrink: twelve applies cycle
    /// through three backends, four (the client pod `net` joins), `net` terminating (it keeps its
    /// flows, takes no new ones), three again, while connections run from a pod (socket LB to the
    /// ClusterIP) and from outside (the node port); not one fails, and the backend that comes
    /// and goes answers some of them. (A backend removed outright takes its flows in progress
    /// with it, as in Cilium: Kubernetes drains it first, as here.)
    @Test func trafficRunsThroughRepeatedBackendChanges() throws {
        var cluster = Self.cluster("gs")
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let three = cluster.services[0].backends
        let four = three + [ServiceBackend(ip: IPAddress("10.0.2.32"))]
        let draining = three + [ServiceBackend(ip: IPAddress("10.0.2.32"), ready: false, terminating: true)]
        let log = PeerLog()
        let changes = Thread { [cluster] in
            var changing = cluster
            for round in 0..<12 {
                changing.services[0].backends = [four, draining, three][round % 3]
                do {
                    try Self.apply(changing)
                    log.add("applied \(changing.services[0].backends.count)")
                } catch {
                    log.add("failed: \(error)")
                }
                Thread.sleep(forTimeInterval: 0.3)
            }
            log.add("done")
        }
        changes.start()
        var requests = 0
        var failures: [String] = []
        var answers: [String: Int] = [:]
        let deadline = Date().addingTimeInterval(120)
        while !log.lines.contains("done") && Date() < deadline {
            for (from, to) in [("cilium-with-replacement-cp", "10.96.18.68:80"), ("external", "172.18.0.2:32000")] {
                let probe = try Self.probe(cluster.name, from, to, count: 10)
                requests += probe.requests.count
                failures += probe.requests.compactMap { $0.error.map { "\(from) → \(to): \($0)" } }
                answers.merge(probe.answers) { $0 + $1 }
            }
        }
        #expect(log.lines.filter { $0.hasPrefix("applied") }.count == 12, "\(log.lines)")
        #expect(requests >= 100, "traffic ran through the changes: \(requests) requests")
        #expect(failures.isEmpty, "\(failures.count) of \(requests) failed: \(failures.prefix(5))")
        #expect(answers["PodName: net", default: 0] > 0, "the backend that comes and goes took some: \(answers)")
    }

    @Test func backendChangesAreMakeBeforeBreak() throws {
        var cluster = Self.cluster("up")
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let idsBefore = try Self.services(cluster, node: "worker2").map(\.id)
        // Connections from outside, established (handshake done, conntrack entries made) but
        // not yet used.
        let held = try (0..<16).map { _ in
            try HeldConnection(from: .named(cluster.externalNamespace), to: IPAddress("172.18.0.2"), port: 32000)
        }
        // Which backend each connection went to, from worker2's BPF conntrack.
        let ct = try Conntrack.list(bpffsDirectory: cluster.bpffsDirectory(ofNode: "worker2"))
        let backendOf: [Int: String] = Dictionary(
            held.enumerated().compactMap { i, c in
                ct.first { $0.kind == "service" && $0.source == "172.18.0.1:\(c.localPort)" }.map {
                    (i, String($0.translated.split(separator: ":")[0]))
                }
            }, uniquingKeysWith: { a, _ in a })
        #expect(backendOf.count == held.count, "every held connection is tracked")
        // One backend (cp) goes, the client pod `net` (it serves HTTP too) comes in.
        cluster.services[0].backends = ["10.0.1.15", "10.0.2.204", "10.0.2.32"].map {
            ServiceBackend(ip: IPAddress($0)!)
        }
        try Self.apply(cluster)
        let names = [
            "10.0.1.15": "PodName: cilium-with-replacement-w1", "10.0.2.204": "PodName: cilium-with-replacement-w2",
        ]
        var survivors = 0
        for (i, c) in held.enumerated() {
            guard let backend = backendOf[i], let name = names[backend] else { continue }
            survivors += 1
            let answer = try c.request()
            #expect(answer.hasPrefix(name), "an established connection to a surviving backend keeps it: \(answer)")
        }
        #expect(survivors > 0)
        let wanted: Set<String> = [
            "PodName: cilium-with-replacement-w1", "PodName: cilium-with-replacement-w2", "PodName: net",
        ]
        let fromPod = try Self.probe(cluster.name, "cilium-with-replacement-cp", "10.96.18.68:80", count: 60)
        let fromOutside = try Self.probe(cluster.name, "external", "172.18.0.2:32000", count: 60)
        #expect(
            Set(fromPod.answers.keys) == wanted && Set(fromOutside.answers.keys) == wanted,
            "the removed backend gets no new connection: \(fromPod.answers) \(fromOutside.answers)")
        let rows = try Self.services(cluster, node: "worker2")
        #expect(rows.map(\.id) == idsBefore, "frontend ids are stable")
        #expect(
            rows.first { $0.frontend == "10.96.18.68:80" }?.backends.map(\.address) == [
                "10.0.1.15", "10.0.2.204", "10.0.2.32",
            ])
        // No backend at all: refused at once, not a hang.
        cluster.services[0].backends = []
        try Self.apply(cluster)
        // "At once": well under the 5 s timeout and under TCP's first SYN retransmit (1 s).
        let refused = try Self.probe(cluster.name, "net", "10.96.18.68:80", timeout: 5)
        #expect(
            refused.failures == 1 && (refused.requests.first?.error ?? "").contains("refused"), "\(refused.requests)")
        #expect(
            (refused.requests.first?.milliseconds ?? 5000) < 900,
            "refused at once by the socket LB: \(refused.requests)")
        let capture = try FrameCapture(namespace: .named(cluster.externalNamespace), device: "eth0")
        let outside = try Self.probe(cluster.name, "external", "172.18.0.3:32000", timeout: 5)
        #expect(
            outside.failures == 1 && (outside.requests.first?.error ?? "").contains("refused"),
            "a reset from the node: \(outside.requests)")
        let reset = try #require(
            capture.next { CapturedIPv4($0).map { $0.source == "172.18.0.3" && $0.sourcePort == 32000 } ?? false })
        let checks = try #require(CapturedChecksums(reset))
        #expect(
            checks.tcpFlags == 0x14 && checks.ipHeaderValid && checks.transportValid,
            "RST|ACK from the NodePort with valid checksums")
        #expect(
            (outside.requests.first?.milliseconds ?? 5000) < 900, "refused at once by the node: \(outside.requests)")
        // A fragmented datagram to a UDP NodePort without backends: one port unreachable, for the
        // first fragment; the later ones carry no ports to answer about.
        cluster.services[1].backends = []
        try Self.apply(cluster)
        let errors = try FrameCapture(namespace: .named(cluster.externalNamespace), device: "eth0")
        let udp = try Self.probe(cluster.name, "external", "172.18.0.3:30053", udp: true, timeout: 2, size: 3000)
        #expect(
            udp.failures == 1, "no reply (the probe's unconnected socket is not told of ICMP errors): \(udp.requests)")
        let unreachable = errors.drain().filter {
            $0.count > 35 && $0[12] == 0x08 && $0[13] == 0x00 && $0[23] == 1 && $0[34] == 3
                && Array($0[26..<30]) == [172, 18, 0, 3]
        }
        #expect(unreachable.count == 1, "one ICMP error per datagram, not per fragment: \(unreachable.count)")
    }

    /// Before maps of another layout or size are replaced: `service list` refuses to read them
    /// (saying `refusal`), and the plan replaces every service table in one change (returned).
    @discardableResult
    func expectServiceTablesReplaced(_ controller: NodeController, refusal: String) throws -> PlannedChange {
        let error = #expect(throws: NodeNetError.self) { try controller.services() }
        #expect("\(error.map { "\($0)" } ?? "")".contains(refusal), "\(String(describing: error))")
        let plan = try controller.plan()
        let migration = try #require(plan.changes.first { $0.subject.hasPrefix("pinned maps ") })
        for map in BPFFSLayout.Map.serviceTables {
            #expect(migration.subject.contains(map.rawValue), "\(migration.subject)")
        }
        return migration
    }

    /// An upgrade that changes one service map's layout replaces all of them together (ids in
    /// one refer to the others): new maps are filled, programs replaced, services keep working.
    @Test func anIncompatibleServiceMapReplacesThemAllTogether() throws {
        let cluster = Self.cluster("mg")
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let dir = cluster.bpffsDirectory(ofNode: "worker2")
        let path = "\(dir)/nodenet_backends"
        try pinMapOfAnotherLayout(
            // value 4 B instead of 8
            at: path, type: BPF_MAP_TYPE_HASH, name: "nodenet_backend", keySize: 4, valueSize: 4, maxEntries: 128)
        let controller = try Self.controller(cluster, "worker2")
        // Before the migration, the maps are not read in this build's layout.
        try expectServiceTablesReplaced(controller, refusal: "another build's layout")
        let report = try controller.apply()
        #expect(report.verified, "\(report.mismatches)")
        #expect(try BPFMapShape.pinned(at: path)?.valueSize == 8)
        #expect(
            try controller.services().count == 6
                && (try controller.services()).allSatisfy { $0.state == "ok" && !$0.backends.isEmpty })
        #expect(try Self.probe(cluster.name, "net", "10.96.18.68:80", count: 60).answers.count == 3)
        #expect(try Self.probe(cluster.name, "external", "172.18.0.2:32000", count: 10).failures == 0)
        #expect(try controller.plan().isEmpty)
    }

    /// A migration cut short after its maps were set aside (and before the programs were
    /// replaced) leaves programs that may use the maps set aside: the next apply attaches every
    /// program again before those maps go. Before, it only dropped them: names, build and tags
    /// were the same, so the programs kept serving the old maps while apply wrote the new ones.
    @Test func aMigrationCutShortReplacesTheProgramsBeforeTheMapsLeftAsideGo() throws {
        var cluster = Self.cluster("ia")
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let node = "worker2"
        let layout = BPFFSLayout(directory: cluster.bpffsDirectory(ofNode: node))
        // The state a migration leaves when it stops right after setting the tables aside.
        for map in BPFFSLayout.Map.serviceTables where FileManager.default.fileExists(atPath: layout.path(map)) {
            try BPFPin.move(from: layout.path(map), to: layout.setAsidePath(map))
        }
        // One backend only: the programs must read the maps apply writes to.
        cluster.services[0].backends = [ServiceBackend(ip: IPAddress("10.0.1.15"))]
        let controller = try Self.controller(cluster, node)
        let report = try controller.apply()
        #expect(report.verified, "\(report.mismatches)")
        let subjects = report.changes.map(\.subject)
        #expect(subjects.contains { $0.hasPrefix("socket LB connect4") }, "socket LB attached again: \(subjects)")
        #expect(subjects.contains { $0.hasPrefix("from-container on lxc") }, "\(subjects)")
        #expect(subjects.contains("pinned maps left aside"), "\(subjects)")
        #expect(layout.setAsideMaps().isEmpty)
        let probe = try Self.probe(cluster.name, "net", "10.96.18.68:80", count: 30)
        #expect(probe.failures == 0 && probe.answers.count == 1, "the new maps' one backend: \(probe.answers)")
        #expect(try controller.plan().isEmpty)
    }

    /// `loadBalancer.mapEntries` sizes the service tables: a node asking for another size gets
    /// new maps of that size (all service tables together, as an upgrade of their layout), its
    /// services keep working, and a spec beyond the size is refused before anything changes.
    @Test func theServiceMapSizeIsTheSpecsAndChangingItReplacesTheTables() throws {
        var cluster = Self.cluster("msz")
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let node = "worker2"
        let layout = BPFFSLayout(directory: cluster.bpffsDirectory(ofNode: node))
        func sizes() throws -> [BPFFSLayout.Map: UInt32] {
            try Dictionary(
                uniqueKeysWithValues: [BPFFSLayout.Map.services, .backends, .revnat, .maglevIndex].map {
                    ($0, try #require(try BPFMapShape.pinned(at: layout.path($0))).maxEntries)
                })
        }
        let before = try sizes()
        #expect(before == ServiceMapCapacity.default.maxEntries, "the default: \(before)")
        func conntrackID() throws -> UInt32 {
            let pin = try #require(try BPFPin.open(layout.path(.conntrack)))
            return try BPFMapInfo(fd: pin.fd, what: "conntrack").id
        }
        let conntrack = try conntrackID()

        cluster.loadBalancer.mapCapacity = ServiceMapCapacity(entries: 8192)
        let controller = try Self.controller(cluster, node)
        let migration = try expectServiceTablesReplaced(controller, refusal: "another loadBalancer.mapEntries")
        #expect(!migration.subject.contains(BPFFSLayout.Map.conntrack.rawValue), "conntrack is kept")
        let report = try controller.apply()
        #expect(report.verified, "\(report.mismatches)")
        let after = try sizes()
        #expect(after == [.services: 8192, .backends: 16384, .revnat: 2048, .maglevIndex: 2048], "\(after)")
        #expect(try conntrackID() == conntrack, "the same conntrack map")
        let rows = try controller.services()
        #expect(rows.count == 6 && rows.allSatisfy { $0.state == "ok" }, "\(rows)")
        #expect(try Self.probe(cluster.name, "net", "10.96.18.68:80", count: 60).answers.count == 3)
        #expect(try Self.probe(cluster.name, "external", "172.18.0.3:32000", count: 10).failures == 0)
        #expect(try controller.plan().isEmpty, "converged at the new size")

        // 2 048 frontends do not fit 8 192 entries (ids 1 ..< 2 048): refused, nothing touched.
        var crowded = cluster
        crowded.services += (0..<2048).map { i in
            ServiceSpec(
                name: "fill/svc\(i)", type: .clusterIP, clusterIP: IPAddress(ipv4: 0x0A64_0000 + UInt32(i) + 1),
                ports: [ServicePort(protocol: .tcp, port: 80)], backends: [ServiceBackend(ip: IPAddress("10.0.1.15"))])
        }
        let refused = #expect(throws: SpecError.self) {
            try Self.controller(crowded, node).apply()
        }
        #expect(
            refused?.problems.map(\.description).contains {
                $0.hasPrefix("services: 2054 frontends") && $0.hasSuffix("loadBalancer.mapEntries: 16384 holds them")
            } == true, "\(refused?.problems ?? [])")
    }

    /// A spec that replaces every service at once, then every backend at once, on maps big
    /// enough for one set but not for both: services that go are taken out before new ones go in,
    /// and a backend no frontend will name is taken out as soon as nothing names it, so the maps
    /// never hold the old set and the new one together (they did, and the kernel refused the
    /// inserts past the maps' size: the node could never take the new spec).
    @Test func replacingEveryServiceOrBackendFitsMapsSizedForOneSet() throws {
        var cluster = Self.cluster("swap")
        cluster.loadBalancer.mapCapacity = ServiceMapCapacity(entries: 4096)  // 1 023 frontends
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let seed = cluster.services
        let node = "worker2"
        // 800 services of 3 backends each: 3 200 service entries and 2 400 backends a set.
        func services(clusterIPs: UInt32, backends: UInt32) -> [ServiceSpec] {
            (0..<800).map { (i: UInt32) in
                let base = backends + 3 * i
                return ServiceSpec(
                    name: "fill/svc\(i)", type: .clusterIP, clusterIP: IPAddress(ipv4: clusterIPs + i + 1),
                    ports: [ServicePort(protocol: .tcp, port: 80)],
                    backends: (1...3).map { ServiceBackend(ip: IPAddress(ipv4: base + $0)) })
            }
        }
        func apply(_ what: String) throws {
            let controller = try Self.applyChecked(cluster, node, what)
            #expect(try controller.services().count == 806, "\(what)")
        }
        cluster.services = seed + services(clusterIPs: 0x0A64_0000, backends: 0x0AC8_0000)  // 10.100/16, 10.200/16
        try apply("the first set")
        cluster.services = seed + services(clusterIPs: 0x0A65_0000, backends: 0x0AC9_0000)  // 10.101/16, 10.201/16
        try apply("every service replaced")
        cluster.services = seed + services(clusterIPs: 0x0A65_0000, backends: 0x0ACA_0000)  // 10.202/16
        try apply("every backend replaced")
    }

    /// Applies `cluster`'s spec on `node` and checks what every map-size test checks: verified,
    /// every service row ok, the backends map holding exactly the wanted backends, and a seed
    /// service still answering from its 3 backends.
    @discardableResult
    static func applyChecked(_ cluster: LabCluster, _ node: String, _ what: String) throws -> NodeController {
        let controller = try Self.controller(cluster, node)
        let report = try controller.apply()
        try #require(report.verified, "\(what): \(report.mismatches.prefix(3))")
        let rows = try controller.services()
        #expect(rows.allSatisfy { $0.state == "ok" }, "\(what): \(rows.filter { $0.state != "ok" }.prefix(3))")
        let maps = try #require(try ServiceMaps(pinnedIn: BPFFSLayout(directory: cluster.bpffsDirectory(ofNode: node))))
        let wanted = Set(try controller.desiredState().frontends.flatMap(\.backends)).count
        #expect(maps.backends.nonZeroIndices().count == wanted, "\(what): only the wanted backends")
        #expect(try Self.probe(cluster.name, "net", "10.96.18.68:80", count: 30).answers.count == 3, "\(what)")
        return controller
    }

    /// Services that grow while others shrink, on a services map nearly full: 300 go from 1
    /// backend to 7 while 300 go from 7 to 1 (3 000 entries before and after, 1 800 of them
    /// new). The frontends that free entries are written before those that take them, so the
    /// map never holds more than its size: first with the backends kept (one batch), then with
    /// every backend replaced too (in groups, as the backends map has no room for both sets).
    @Test func servicesGrowingWhileOthersShrinkFitANearlyFullServicesMap() throws {
        var cluster = Self.cluster("grow")
        cluster.loadBalancer.mapCapacity = ServiceMapCapacity(entries: 4096)
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let seed = cluster.services
        let node = "worker2"
        let maps = try #require(try ServiceMaps(pinnedIn: BPFFSLayout(directory: cluster.bpffsDirectory(ofNode: node))))
        let held = try maps.services.keys().count
        // Services 0..<300 take `first` backends, 300..<600 the others; `pool`: one shared set
        // of 7 backends, else each service its own under `base`.
        func services(first: Int, pool: Bool, base: UInt32) -> [ServiceSpec] {
            (0..<600).map { (i: UInt32) in
                let count = i < 300 ? first : 8 - first
                let start = pool ? base : base + 8 * i
                return ServiceSpec(
                    name: "fill/svc\(i)", type: .clusterIP, clusterIP: IPAddress(ipv4: 0x0A64_0000 + i + 1),
                    ports: [ServicePort(protocol: .tcp, port: 80)],
                    backends: (1...UInt32(count)).map { ServiceBackend(ip: IPAddress(ipv4: start + $0)) })
            }
        }
        func apply(_ what: String) throws {
            try Self.applyChecked(cluster, node, what)
            #expect(try maps.services.keys().count == held + 3000, "\(what): 600 frontends, 2 400 slots")
        }
        cluster.services = seed + services(first: 1, pool: true, base: 0x0AC8_0000)
        try apply("the first set")
        cluster.services = seed + services(first: 7, pool: true, base: 0x0AC8_0000)
        try apply("counts swapped, the same 7 backends")
        cluster.services = seed + services(first: 1, pool: false, base: 0x0AC9_0000)
        try apply("counts swapped, a backend set each")
        cluster.services = seed + services(first: 7, pool: false, base: 0x0ACA_0000)
        try apply("counts swapped, every backend replaced")
    }

    /// A services apply that fails midway (the services map filled behind nodenet's back with
    /// entries it cannot read, so the kernel refuses an insert) is rolled back, batch by batch:
    /// the services, backends and reverse-NAT maps are as before, entry by entry, and the failure
    /// says the map is full.
    @Test func aServicesApplyThatFailsMidwayLeavesTheMapsAsTheyWere() throws {
        var cluster = Self.cluster("undo")
        cluster.loadBalancer.mapCapacity = ServiceMapCapacity(entries: 4096)
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let node = "worker2"
        let maps = try #require(try ServiceMaps(pinnedIn: BPFFSLayout(directory: cluster.bpffsDirectory(ofNode: node))))
        func services(_ range: Range<UInt32>) -> [ServiceSpec] {
            range.map { i in
                ServiceSpec(
                    name: "fill/svc\(i)", type: .clusterIP, clusterIP: IPAddress(ipv4: 0x0A64_0000 + i + 1),
                    ports: [ServicePort(protocol: .tcp, port: 80)],
                    backends: (1...3).map { ServiceBackend(ip: IPAddress(ipv4: 0x0AC8_0000 + 3 * i + $0)) })
            }
        }
        let seed = cluster.services
        cluster.services = seed + services(0..<100)
        try #require(try Self.controller(cluster, node).apply().verified)
        // Room for 110 more services map entries (150 once the 10 that go are out); the next spec
        // adds 100 frontends of 3 backends (400). Junk keys of protocol 0: no plan reads them.
        let junk = (0..<UInt32(4096 - 110 - (try maps.services.keys().count))).map { i in
            var key = nodenet_service_key()
            key.address = (0x0B00_0000 + i).bigEndian
            key.slot = 1
            return key
        }
        try maps.services.update(keys: junk, values: Array(repeating: nodenet_service(), count: junk.count))
        func entries() throws -> [String] {
            let s = try maps.services.contents()
            let b = maps.backends.nonZeroIndices().map { "\($0) \(maps.backends[$0])" }
            let r = maps.revnat.nonZeroIndices().map { "\($0) \(maps.revnat[$0])" }
            return (zip(s.keys, s.values).map { "\($0) \($1)" } + b + r).sorted()
        }
        let before = try entries()
        // 10 go (out first: their 40 entries free room), 100 come (400 entries: 150 fit).
        cluster.services = seed + services(10..<200)
        let failure = #expect(throws: ApplyFailure.self) { try Self.controller(cluster, node).apply() }
        #expect(failure?.rollback.complete == true, "\(failure.map { "\($0)" } ?? "")")
        #expect(failure.map { "\($0)" }?.contains("the map is full (it holds at most 4096 entries)") == true)
        #expect(try entries() == before, "the maps as they were")
        // Without the junk, the same spec applies.
        try maps.services.delete(keys: junk)
        #expect(try Self.controller(cluster, node).apply().verified)
    }

    /// More frontends than 16 bits can number: a service added after 65 600 others gets ids
    /// beyond 65 535 and is served on the packet path (socket LB off): its conntrack entries and
    /// its session affinity carry the whole id, the node stays converged, and the service keeps
    /// its ids when the others go.
    @Test func frontendIDsBeyondSixteenBitsAreServed() throws {
        var cluster = Self.cluster("id32")
        cluster.socketLB = false
        cluster.loadBalancer.mapCapacity = ServiceMapCapacity(entries: 524_288)  // 131 071 frontends
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let seed = cluster.services
        let filler = ServiceBackend(ip: IPAddress("10.0.1.15"))
        let fillers = (0..<65_600).map { (i: Int) -> ServiceSpec in
            let third = UInt32(i / 250) << 8
            let address = IPAddress(ipv4: 0x0A64_0000 + third + UInt32(i % 250 + 1))  // 10.100.0.1 ...
            return ServiceSpec(
                name: "fill/svc\(i)", type: .clusterIP, clusterIP: address,
                ports: [ServicePort(protocol: .tcp, port: 80)], backends: [filler])
        }
        var far = ServiceSpec(
            name: "default/far", type: .clusterIP, clusterIP: IPAddress("10.99.0.1"),
            ports: [ServicePort(protocol: .tcp, port: 80)],
            backends: ["10.0.1.15", "10.0.2.204", "10.0.0.142"].map { ServiceBackend(ip: IPAddress($0)!) })
        far.sessionAffinity = .clientIP
        cluster.services = seed + fillers + [far]
        let node = "worker2"  // the client pod's
        let controller = try Self.controller(cluster, node)
        let report = try controller.apply()
        try #require(report.verified, "\(report.mismatches.prefix(3))")
        let row = try #require(try controller.services().first { $0.frontend == "10.99.0.1:80" })
        try #require(row.id > 65_535, "the service added last has an id beyond 16 bits: \(row.id)")
        #expect(row.state == "ok" && row.backends.count == 3, "\(row)")
        #expect(try controller.plan().isEmpty, "converged with ids beyond 16 bits")
        // The verification took the maps as written (compared entry by entry, not decoded).
        let layout = BPFFSLayout(directory: cluster.bpffsDirectory(ofNode: node))
        let ids = try #require(try controller.plan().serviceIDs)
        let image = ServiceMapsImage(try controller.desiredState().frontends, ids: ids)
        #expect(try ObservedServices.read(layout, expected: image).servicesAsWritten != nil, "held as written")

        let probe = try Self.probe(cluster.name, "net", "10.99.0.1:80", count: 20)
        #expect(probe.failures == 0 && probe.answers.count == 1, "one backend (affinity): \(probe.answers)")
        #expect(probe.requests.allSatisfy { $0.peer == "10.99.0.1:80" }, "replies translated back")
        let ct = try #require(try BPFMap<nodenet_tuple, nodenet_ct_entry>.pinned(at: layout.path(.conntrack)))
        let farAddress = IPAddress("10.99.0.1").ipv4Value!.bigEndian
        let flows = try ct.entries().filter {
            $0.0.kind == UInt8(NODENET_CT_SERVICE.rawValue) && $0.0.daddr == farAddress
        }
        #expect(!flows.isEmpty, "the flows are tracked")
        #expect(
            flows.allSatisfy { FrontendID($0.1.id) | FrontendID($0.1.id_high) << 16 == row.id },
            "conntrack entries name the whole id: \(flows.map { ($0.1.id, $0.1.id_high) }.prefix(3))")
        let affinity = try #require(
            try BPFMap<nodenet_affinity_key, nodenet_affinity>.pinned(at: layout.path(.affinity)))
        #expect(try affinity.keys().contains { $0.id == row.id }, "the client's backend is kept under the whole id")

        // The others go: the service keeps its ids and its flows' backend.
        cluster.services = seed + [far]
        let fewer = try Self.controller(cluster, node)
        #expect(try fewer.apply().verified)
        let after = try #require(try fewer.services().first { $0.frontend == "10.99.0.1:80" })
        #expect(after.id == row.id, "ids are stable")
        let again = try Self.probe(cluster.name, "net", "10.99.0.1:80", count: 10)
        #expect(again.failures == 0 && again.answers == [probe.answers.keys.first!: 10], "\(again.answers)")
    }

    /// A controller's plans after one that found the service maps as it wants them (an apply's
    /// verification, a plan with nothing to do) compare the maps with that, entry by entry,
    /// instead of decoding them (a resync, an event, a status); any drift makes them decode and
    /// plan as before, and the repair's verification takes them as written again.
    @Test func plansAfterAConvergedOneCompareTheServiceMapsEntryByEntry() throws {
        let cluster = Self.cluster("hw")
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let controller = try Self.controller(cluster, "worker2")
        let desired = try controller.desiredState()
        func compared() throws -> (asWritten: Bool, empty: Bool) {
            let (plan, observed) = try controller.observedPlan(desired, ledger: nil)
            return (observed.services.servicesAsWritten != nil, plan.isEmpty)
        }
        #expect(try compared() == (false, true), "a new controller decodes the maps: nothing to do")
        #expect(try compared() == (true, true), "then compares them with what the ids make")
        #expect(try compared() == (true, true))
        // Drift: one slot names another backend.
        let layout = BPFFSLayout(directory: cluster.bpffsDirectory(ofNode: "worker2"))
        let maps = try #require(try ServiceMaps(pinnedIn: layout))
        let frontend = try #require(desired.frontends.first { $0.backends.count >= 2 })
        let (slot1, slot2) = (frontend.key.mapKey(slot: 1), frontend.key.mapKey(slot: 2))
        let second = try #require(try maps.services.lookup(slot2))
        try maps.services.update(slot1, second)
        #expect(try compared() == (false, false), "the drift is decoded and planned")
        let report = try controller.apply()
        #expect(report.verified && report.changes.count == 1, "\(report.changes.map(\.subject))")
        #expect(try compared() == (true, true), "the repair's verification held them as written")
        #expect(try Self.probe(cluster.name, "net", "10.96.18.68:80", count: 60).answers.count == 3)
        // A controller replacing this one (the agent's, on a new spec or endpoint) takes over what
        // it held: its first plan compares too. One for another map size does not.
        let next = try Self.controller(cluster, "worker2")
        next.continuing(from: controller)
        let (plan, observed) = try next.observedPlan(desired, ledger: nil)
        #expect(observed.services.servicesAsWritten != nil && plan.isEmpty, "taken over")
        var resized = cluster
        resized.loadBalancer.mapCapacity = ServiceMapCapacity(entries: 8192)
        let other = try Self.controller(resized, "worker2")
        other.continuing(from: next)
        #expect(other.heldServiceIDs.withLock { $0 } == nil, "not for maps of another size")
    }

    /// An apply's verification compares the service maps with what it wrote, entry by entry,
    /// before decoding them. Maps that differ in anything (slots, a backend, an id, an entry too
    /// many, a key standing for another's) are decoded and planned again, and the plan sees it.
    @Test func verificationComparesTheServiceMapsEntryByEntry() throws {
        let cluster = Self.cluster("vf")
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        let controller = try Self.controller(cluster, "worker2")
        let layout = BPFFSLayout(directory: cluster.bpffsDirectory(ofNode: "worker2"))
        let maps = try #require(try ServiceMaps(pinnedIn: layout))
        let desired = try controller.desiredState()
        // What the maps hold as applied, with the ids a plan takes (as the apply's verification
        // does; a repair may give a backend a new id).
        func applied() throws -> ServiceMapsImage {
            let ids = try #require(try controller.plan().serviceIDs)
            let image = ServiceMapsImage(desired.frontends, ids: ids)
            #expect(
                try ObservedServices.read(layout, expected: image).servicesAsWritten.map(ServiceIDs.init) == ids,
                "the maps as applied")
            return image
        }
        var image = try applied()

        let frontend = try #require(desired.frontends.first { $0.backends.count >= 2 })
        let other = try #require(desired.frontends.first { $0.key != frontend.key })
        let (slot1, slot2) = (frontend.key.mapKey(slot: 1), frontend.key.mapKey(slot: 2))
        let first = try #require(try maps.services.lookup(slot1))
        let second = try #require(try maps.services.lookup(slot2))
        let master = try #require(try maps.services.lookup(frontend.key.mapKey(slot: 0)))
        func expectSeen(_ what: String, tamper: () throws -> Void, cleanup: () throws -> Void = {}) throws {
            try tamper()
            #expect(
                try ObservedServices.read(layout, expected: image).servicesAsWritten == nil,
                "\(what): taken as applied")
            #expect(try !controller.plan().isEmpty, "\(what): not planned")
            try cleanup()
            let report = try controller.apply()
            #expect(report.verified, "\(what): \(report.mismatches)")
            image = try applied()
        }
        try expectSeen("two slots swapped") {
            try maps.services.update(slot1, second)
            try maps.services.update(slot2, first)
        }
        try expectSeen("an entry beyond the frontend's count") {
            try maps.services.update(frontend.key.mapKey(slot: UInt16(frontend.backends.count + 1)), first)
        }
        // Keys are unique in a map, but two that differ only in padding decode alike: as many
        // entries as the image, each decoding to one of its entries, and one of them missing.
        // (A key with padding is not one the datapath looks up, nor one a plan can tell apart:
        // the test removes it.)
        for field in ["pad", "pad2"] {
            var padded = slot1
            if field == "pad" { padded.pad = 1 } else { padded.pad2 = 1 }
            try expectSeen(
                "a key standing for another's by its \(field), a slot gone",
                tamper: {
                    try maps.services.update(padded, first)
                    _ = try maps.services.delete(slot2)
                },
                cleanup: { _ = try maps.services.delete(padded) })
        }
        // As many entries as the image, one slot past the frontend's count instead of its last,
        // holding what the image has next (the following frontend's first backend).
        let place = try #require(
            desired.frontends.indices.first {
                $0 + 1 < desired.frontends.count && desired.frontends[$0].backends.count >= 2
                    && !desired.frontends[$0 + 1].backends.isEmpty
            })
        let (tampered, following) = (desired.frontends[place], desired.frontends[place + 1])
        let last = tampered.key.mapKey(slot: UInt16(tampered.backends.count))
        let beyond = tampered.key.mapKey(slot: UInt16(tampered.backends.count + 1))
        let next = try #require(try maps.services.lookup(following.key.mapKey(slot: 1)))
        try expectSeen("a slot past the count instead of the last one") {
            _ = try maps.services.delete(last)
            try maps.services.update(beyond, next)
        }
        try expectSeen("a backend's port") {
            var backend = maps.backends[Int(first.backend_id)]
            backend.port = (UInt16(bigEndian: backend.port) &+ 1).bigEndian
            try maps.backends.store(backend, at: first.backend_id)
        }
        try expectSeen("a frontend's id naming another frontend") {
            try maps.revnat.store(other.key.revnat, at: UInt32(master.id))
        }
        try expectSeen("a frontend id too many") {
            try maps.revnat.store(other.key.revnat, at: UInt32(maps.revnat.count - 1))
        }
        try expectSeen("slot 0's flags") {
            var changed = master
            changed.flags ^= UInt8(NODENET_SERVICE_LOCAL_ONLY)
            try maps.services.update(frontend.key.mapKey(slot: 0), changed)
        }
        try expectSeen("a backend too many") {
            try maps.backends.store(
                BackendAddress(address: IPAddress("10.0.1.99"), port: 1, protocol: .tcp).mapValue, at: 60_000)
        }
        // Entries that decode to nothing (only tampering makes them): cleared, not left for good.
        try expectSeen("a backend entry of protocol 0 that is not zeros") {
            try maps.backends.store(nodenet_backend(address: 7, port: 0, proto: 0, flags: 0), at: 60_001)
        }
        #expect(maps.backends[60_001].address == 0, "the malformed backend entry cleared")
        let spare = UInt32(maps.revnat.count - 2)
        try expectSeen("a frontend id of a protocol nodenet never writes") {
            try maps.revnat.store(nodenet_revnat(address: 7, port: 0, proto: 99, pad: 0), at: spare)
        }
        #expect(maps.revnat[Int(spare)].address == 0, "the malformed reverse-NAT entry cleared")
    }

    /// ICMP errors about translated flows reach the original sender, quoting its own packet:
    /// a connected UDP socket then sees ECONNREFUSED (the kernel matches the quote).
    @Test func icmpErrorsOfTranslatedFlowsReachTheOriginalSender() throws {
        var cluster = Self.cluster("ie")
        // A NodePort whose only backend (remote from worker2) has nothing listening on 54.
        cluster.services.append(
            ServiceSpec(
                name: "default/closed", type: .nodePort, clusterIP: IPAddress("10.96.0.54"),
                ports: [ServicePort(protocol: .udp, port: 54, nodePort: 30054)],
                backends: [ServiceBackend(ip: IPAddress("10.0.1.15"))]))
        // ... and one whose only backend is local to worker2.
        cluster.services.append(
            ServiceSpec(
                name: "default/closedlocal", type: .nodePort, clusterIP: IPAddress("10.96.0.55"),
                ports: [ServicePort(protocol: .udp, port: 55, nodePort: 30055)],
                backends: [ServiceBackend(ip: IPAddress("10.0.2.204"))]))
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        // Outside client -> NodePort -> remote backend: the backend's port unreachable comes back.
        #expect(try udpError(from: .named(cluster.externalNamespace), to: "172.18.0.2", port: 30054) == ECONNREFUSED)
        // ... and from a local backend (quote and source rewritten in from-container).
        #expect(try udpError(from: .named(cluster.externalNamespace), to: "172.18.0.2", port: 30055) == ECONNREFUSED)
        // Masqueraded pod -> external host's closed port: the external host's port unreachable comes back.
        #expect(
            try udpError(from: .named(cluster.namespace(ofPod: "net")), to: "172.18.0.1", port: 9999) == ECONNREFUSED)
    }

    /// The errno a connected UDP socket reports after one datagram to a closed port (0: none within 2 s).
    func udpError(from namespace: NamespaceReference, to address: String, port: UInt16) throws -> Int32 {
        let fd = try LabProbe.socket(in: namespace, family: AF_INET, type: SOCK_DGRAM, timeout: 2)
        defer { close(fd) }
        try #require(SocketAddress(IPAddress(address)!, port: port).withSockaddr { connect(fd, $0, $1) } == 0)
        _ = "x".withCString { send(fd, $0, 1, 0) }
        var buffer = [UInt8](repeating: 0, count: 64)
        return recv(fd, &buffer, buffer.count, 0) < 0 ? errno : 0
    }

    @Test func withoutSocketLBPodsAreTranslatedPerPacket() throws {
        var cluster = Self.cluster("pp")
        cluster.socketLB = false
        cluster.services.append(
            ServiceSpec(
                name: "default/closed", type: .clusterIP, clusterIP: IPAddress("10.96.0.54"),
                ports: [ServicePort(protocol: .udp, port: 54)], backends: [ServiceBackend(ip: IPAddress("10.0.1.15"))])
        )
        cluster.services.append(
            ServiceSpec(
                name: "default/self-closed", type: .clusterIP, clusterIP: IPAddress("10.96.0.55"),
                ports: [ServicePort(protocol: .udp, port: 55)], backends: [ServiceBackend(ip: IPAddress("10.0.2.204"))]
            ))
        defer { Lab.down(name: cluster.name) }
        try Self.up(cluster)
        #expect(
            !FileManager.default.fileExists(atPath: cluster.bpffsDirectory(ofNode: "worker2") + "/sock"),
            "no cgroup programs")
        let tcp = try Self.probe(cluster.name, "net", "10.96.18.68:80", count: 60)
        #expect(
            tcp.failures == 0 && Set(tcp.answers.keys) == Set(Self.servers), "local and remote backends: \(tcp.answers)"
        )
        #expect(tcp.requests.allSatisfy { $0.peer == "10.96.18.68:80" })
        let udp = try Self.probe(cluster.name, "net", "10.96.0.10:53", udp: true, count: 30)
        #expect(udp.failures == 0 && udp.requests.allSatisfy { $0.peer == "10.96.0.10:53" }, "replies translated back")
        let big = try Self.probe(cluster.name, "net", "10.96.0.10:53", udp: true, count: 30, size: 3000)
        #expect(
            big.failures == 0 && big.answers.count == 3
                && big.requests.allSatisfy { $0.peer == "10.96.0.10:53" && ($0.bytes ?? 0) > 3000 },
            "fragmented datagrams to and from local and remote backends: \(big.answers) \(big.requests.compactMap(\.error).prefix(2))"
        )
        #expect(
            try Self.probe(cluster.name, "net", "172.18.0.4:32000", count: 10).failures == 0, "another node's NodePort")
        // Hairpin: a backend reaching its own service, sometimes given itself, over TCP and UDP.
        let hairpin = try Self.probe(cluster.name, "cilium-with-replacement-w2", "10.96.18.68:80", count: 60)
        #expect(
            hairpin.failures == 0 && hairpin.answers["PodName: cilium-with-replacement-w2", default: 0] > 0,
            "\(hairpin.answers) \(hairpin.requests.compactMap(\.error).prefix(2))")
        #expect(hairpin.requests.allSatisfy { $0.peer == "10.96.18.68:80" })
        let hairpinUDP = try Self.probe(
            cluster.name, "cilium-with-replacement-w2", "10.96.0.10:53", udp: true, count: 60)
        #expect(
            hairpinUDP.failures == 0 && hairpinUDP.answers["PodName: cilium-with-replacement-w2", default: 0] > 0,
            "\(hairpinUDP.answers)")
        #expect(
            try Conntrack.list(bpffsDirectory: cluster.bpffsDirectory(ofNode: "worker2")).contains {
                $0.kind == "nat-in" && $0.destination.hasPrefix("169.254.42.1:")
            })
        // The backend's own port unreachable about a hairpinned datagram reaches it as an error
        // about the datagram it sent to the service.
        let w2 = NamespaceReference.named(cluster.namespace(ofPod: "cilium-with-replacement-w2"))
        #expect(try udpError(from: w2, to: "10.96.0.55", port: 55) == ECONNREFUSED)
        // A packet to the hairpin address that belongs to no flow is dropped, never sent on.
        let verdicts = try #require(
            try BPFMap<UInt32, UInt64>.pinned(
                at: cluster.bpffsDirectory(ofNode: "worker2") + "/nodenet_verdicts", perCPU: true))
        let noFlow = UInt32(NODENET_VERDICT_DROP_NO_FLOW.rawValue)
        let dropsBefore = try verdicts.sum(noFlow)
        do {
            let fd = try LabProbe.socket(in: w2, family: AF_INET, type: SOCK_DGRAM, timeout: 2)
            defer { close(fd) }
            _ = SocketAddress(IPAddress("169.254.42.1"), port: 61_234).withSockaddr { sendto(fd, "x", 1, 0, $0, $1) }
        }
        try poll { try verdicts.sum(noFlow) != dropsBefore }
        #expect(try verdicts.sum(noFlow) == dropsBefore + 1, "dropped as a reply without its flow")
        // The remote backend's port unreachable names the ClusterIP by the time it reaches the pod.
        #expect(try udpError(from: .named(cluster.namespace(ofPod: "net")), to: "10.96.0.54", port: 54) == ECONNREFUSED)
        let ct = try Conntrack.list(bpffsDirectory: cluster.bpffsDirectory(ofNode: "worker2"))
        #expect(
            ct.contains {
                $0.kind == "service" && $0.source.hasPrefix("10.0.2.32:") && $0.destination == "10.96.18.68:80"
            })
        // No backend: from-container answers a TCP reset at once (an ICMP error would reach the
        // client while connect() holds its socket and only count after the SYN's retransmit).
        cluster.services[0].backends = []
        try Self.apply(cluster)
        let capture = try FrameCapture(namespace: .named(cluster.namespace(ofPod: "net")), device: "eth0")
        let refused = try Self.probe(cluster.name, "net", "10.96.18.68:80", timeout: 5)
        #expect(
            (refused.requests.first?.error ?? "").contains("refused")
                && (refused.requests.first?.milliseconds ?? 5000) < 900, "\(refused.requests)")
        let reset = try #require(
            capture.next { CapturedIPv4($0).map { $0.source == "10.96.18.68" && $0.sourcePort == 80 } ?? false })
        let checks = try #require(CapturedChecksums(reset))
        #expect(
            checks.tcpFlags == 0x14 && checks.ipHeaderValid && checks.transportValid,
            "RST|ACK from the service with valid checksums")
    }
}

/// Lines a test's own pod server logged (thread-safe).
final class PeerLog: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    func add(_ line: String) {
        lock.lock()
        stored.append(line)
        lock.unlock()
    }
    var lines: [String] {
        lock.lock()
        defer { lock.unlock() }
        return stored
    }
}

/// A TCP connection opened from a namespace, used later (the request is sent on demand).
final class HeldConnection {
    let fd: Int32
    let localPort: UInt16

    init(from namespace: NamespaceReference, to address: IPAddress, port: UInt16) throws {
        let fd = try LabProbe.connect(from: namespace, to: SocketAddress(address, port: port))
        self.fd = fd
        localPort = SocketAddress.receiving { getsockname(fd, $0, $1) }.1?.port ?? 0
    }

    deinit { close(fd) }

    func request() throws -> String { try LabProbe.get(fd, host: "x") }
}
