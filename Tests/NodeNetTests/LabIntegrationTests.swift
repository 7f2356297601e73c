import BPF
import Foundation
import TestSupport
import Testing

@testable import NodeNet
@testable import NodeNetLab

/// The lab, through the library and through the nodenetd CLI. Skipped without root.
@Suite(.serialized, .enabled(if: Privileges.runsNamespaceTests, Comment(rawValue: Privileges.skipReason)))
struct LabIntegrationTests {
    static var nodenetd: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("nodenetd")
    }

    /// Short, unique lab names (at most 12 characters).
    static func labName(_ tag: String) -> String { "t\(tag)\(getpid() % 100000)" }

    /// What a lab can leave on the machine: namespaces, cgroup/bpffs/run directories, processes.
    static func traces(of lab: String) -> [String] {
        var t = NetworkNamespace.list().filter { $0.hasPrefix("nnl-\(lab)-") }
        for dir in [
            CgroupV2.root.map { "\($0)/nodenet-lab/\(lab)" }, "\(BPFFS.root)/nodenet-lab/\(lab)",
            "/run/nodenet/lab/\(lab)",
        ].compactMap({ $0 })
        where FileManager.default.fileExists(atPath: dir) {
            t.append(dir)
        }
        let procs = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for pid in procs where Int(pid) != nil {
            let cmd =
                (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))).map {
                    String(decoding: $0, as: UTF8.self)
                } ?? ""
            if cmd.contains("lab\0serve\0--name\0\(lab)\0") || cmd.contains("\0nodenet-lab-\(lab)\0")
                || cmd.contains("\0--spec\0/run/nodenet/lab/\(lab)/")
            {
                t.append("process \(pid)")
            }
        }
        return t
    }

    static func cli(_ args: [String]) throws -> (status: Int32, output: String) {
        try runTool([nodenetd.path] + args)
    }

    @Test func upAndDownThroughTheCLILeaveNoTrace() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.nodenetd.path), "build nodenetd first")
        let lab = Self.labName("ud")
        defer { Lab.down(name: lab) }
        let rootLinksBefore = try NetlinkSocket().links().map(\.name)
        let up = try Self.cli(["lab", "up", "--name", lab])
        #expect(up.status == 0, "\(up.output)")
        #expect(Self.traces(of: lab).contains { $0.hasPrefix("process ") }, "pod servers run")
        let status = try Self.cli(["lab", "status", "--name", lab, "--json"])
        #expect(status.status == 0 && status.output.contains("\"serving :80/tcp :53/udp\""))
        let exec = try Self.cli(["lab", "exec", "--name", lab, "net", "--", "ping", "-c", "1", "-w", "5", "10.0.0.142"])
        #expect(exec.status == 0, "\(exec.output)")
        #expect(
            try Self.cli(["lab", "exec", "--name", lab, "net", "--", "false"]).status == 1,
            "exec returns the command's status")
        let spec = try Self.cli(["lab", "spec", "worker2", "--name", lab])
        #expect(
            try NodeSpec.load(Data(spec.output.utf8)).pods.map(\.name).sorted() == [
                "cilium-with-replacement-w2", "net",
            ])
        let down = try Self.cli(["lab", "down", "--name", lab])
        #expect(down.status == 0)
        #expect(Self.traces(of: lab) == [])
        #expect(try Self.cli(["lab", "down", "--name", lab]).output.contains("nothing to remove"))
        #expect(try NetlinkSocket().links().map(\.name) == rootLinksBefore, "the root namespace is untouched")
    }

    /// `lab demo --control-plane etcd`: the seed's checks with nodes and services from a real
    /// 3-member etcd on the fabric, a node joining, an agent killed and back, a member killed, a
    /// cluster service; then nothing left (etcd members and agents included).
    @Test(.enabled(if: EtcdServer.isInstalled || Privileges.required, Comment(rawValue: EtcdServer.skipReason)))
    func theDemoPassesWithTheEtcdControlPlane() throws {
        let lab = Self.labName("ce")
        defer { Lab.down(name: lab) }
        let demo = try Self.cli(["lab", "demo", "--control-plane", "etcd", "--name", lab])
        #expect(demo.status == 0, "\(demo.output)")
        #expect(demo.output.contains(" passed, 0 failed, 0 not yet"), "\(demo.output)")
        #expect(demo.output.contains("PASS     worker's agent killed"), "\(demo.output)")
        #expect(Self.traces(of: lab) == [])
    }

    /// `lab pod add|del`: a pod made through nodenet-cni against the node's agent, reached by
    /// the lab's pods, and gone without a trace.
    @Test func podsAddedThroughTheCNIPluginJoinTheLab() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.nodenetd.path), "build nodenetd first")
        let lab = Self.labName("cn")
        defer { Lab.down(name: lab) }
        let up = try Self.cli(["lab", "up", "--name", lab])
        try #require(up.status == 0, "\(up.output)")
        let add = try Self.cli(["lab", "pod", "add", "worker2", "extra", "--name", lab])
        #expect(add.status == 0, "\(add.output)")
        let ip = try #require(add.output.split(separator: " ").first { $0.hasPrefix("10.0.2.") }.map(String.init))
        // The new pod reaches a pod of another node and is reached by the lab's pods over HTTP.
        let ping = try Self.cli([
            "lab", "exec", "--name", lab, "extra", "--", "ping", "-c", "1", "-w", "5", "10.0.1.15",
        ])
        #expect(ping.status == 0, "\(ping.output)")
        let probe = try Self.cli(["lab", "probe", "--name", lab, "net", "\(ip):80", "--timeout", "5"])
        #expect(probe.status == 0 && probe.output.contains("PodName: extra"), "\(probe.output)")
        let status = try Self.cli(["lab", "status", "--name", lab])
        #expect(status.output.contains("cni lab-extra/eth0, serving :80/tcp :53/udp"), "\(status.output)")
        // A second add of the same pod is refused; a spec pod's name too.
        #expect(try Self.cli(["lab", "pod", "add", "worker2", "extra", "--name", lab]).status != 0)
        #expect(try Self.cli(["lab", "pod", "add", "worker2", "net", "--name", lab]).status != 0)
        let del = try Self.cli(["lab", "pod", "del", "worker2", "extra", "--name", lab])
        #expect(del.status == 0, "\(del.output)")
        #expect(!NetworkNamespace.list().contains { $0.hasSuffix("-p-extra") })
        let node = try NetlinkSocket(namespace: .named("nnl-\(lab)-n-worker2"))
        #expect(try !node.routes(RouteFilter()).contains { $0.destination.description == "\(ip)/32" })
        #expect(try Self.cli(["lab", "down", "--name", lab]).status == 0)
        #expect(Self.traces(of: lab) == [])
    }

    @Test func downCleansUpAfterACrashedUp() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.nodenetd.path), "build nodenetd first")
        let lab = Self.labName("cr")
        defer { Lab.down(name: lab) }
        let process = Process()
        process.executableURL = Self.nodenetd
        process.arguments = ["lab", "up", "--name", lab]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Kill it once it has built part of the lab.
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, NetworkNamespace.list().filter({ $0.hasPrefix("nnl-\(lab)-") }).count < 4 {
            usleep(1000)
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(!Self.traces(of: lab).isEmpty, "the crash left a half-built lab")
        let report = Lab.down(name: lab)
        #expect(report.namespaces > 0)
        #expect(Self.traces(of: lab) == [])
        #expect(Lab.down(name: lab).nothingToDo)
    }

    @Test func twoLabsSideBySide() throws {
        let a = Self.labName("a")
        let b = Self.labName("b")
        defer {
            Lab.down(name: a)
            Lab.down(name: b)
        }
        try Lab(cluster: .seed(name: a)).up()
        try Lab(cluster: .seed(name: b)).up()
        for lab in [a, b] {
            let c = LabCluster.seed(name: lab)
            let server = try PodServer(
                name: "cilium-with-replacement-w1", ip: IPAddress("10.0.1.15"),
                namespace: .named(c.namespace(ofPod: "cilium-with-replacement-w1")))
            server.start()
            defer { server.stop() }
            let r = try LabProbe.httpGet(from: .named(c.namespace(ofPod: "net")), to: IPAddress("10.0.1.15"))
            #expect(r.body == "PodName: cilium-with-replacement-w1 | PodIP: eth0 10.0.1.15/32\n")
            #expect(r.local.hasPrefix("10.0.2.32:"))
        }
        Lab.down(name: a)
        #expect(Self.traces(of: a) == [])
        #expect(!Self.traces(of: b).isEmpty, "taking one lab down leaves the other")
    }

    @Test func customClusterOfFourNodesHasFullPodToPodConnectivity() throws {
        let lab = Self.labName("q")
        defer { Lab.down(name: lab) }
        let file = """
            { "name": "\(lab)", "fabric": { "cidr": "172.30.0.0/16", "external": "172.30.0.1" },
              "nodes": [
                { "name": "n1", "address": "172.30.0.11", "podCIDR": "10.1.1.0/24", "pods": [ { "name": "a1", "ip": "10.1.1.10" }, { "name": "a2", "ip": "10.1.1.11" } ] },
                { "name": "n2", "address": "172.30.0.12", "podCIDR": "10.1.2.0/24", "pods": [ { "name": "b1", "ip": "10.1.2.10" }, { "name": "b2", "ip": "10.1.2.11" } ] },
                { "name": "n3", "address": "172.30.0.13", "podCIDR": "10.1.3.0/24", "pods": [ { "name": "c1", "ip": "10.1.3.10" }, { "name": "c2", "ip": "10.1.3.11" } ] },
                { "name": "n4", "address": "172.30.0.14", "podCIDR": "10.1.4.0/24", "pods": [ { "name": "d1", "ip": "10.1.4.10" }, { "name": "d2", "ip": "10.1.4.11" } ] }
              ] }
            """
        let cluster = try LabCluster.load(Data(file.utf8))
        try Lab(cluster: cluster).up()
        let pods = cluster.nodes.flatMap(\.pods)
        let servers = try pods.map {
            try PodServer(name: $0.name, ip: $0.ip, namespace: .named(cluster.namespace(ofPod: $0.name)))
        }
        servers.forEach { $0.start() }
        defer { servers.forEach { $0.stop() } }
        var failures: [String] = []
        for from in pods {
            for to in pods where to.name != from.name {
                do {
                    let r = try LabProbe.httpGet(
                        from: .named(cluster.namespace(ofPod: from.name)), to: to.ip, timeout: 2)
                    if r.body != "PodName: \(to.name) | PodIP: eth0 \(to.ip)/32\n" || !r.local.hasPrefix("\(from.ip):")
                    {
                        failures.append("\(from.name)->\(to.name): \(r.body)")
                    }
                } catch {
                    failures.append("\(from.name)->\(to.name): \(error)")
                }
            }
        }
        #expect(failures == [], "all 56 pod pairs")
        // UDP too, across nodes.
        #expect(
            try LabProbe.udpEcho(
                from: .named(cluster.namespace(ofPod: "a1")), to: IPAddress("10.1.4.11"), payload: "hello")
                == "PodName: d2 | hello")
    }

    @Test func namesThatCouldEscapeAreRefused() {
        for name in ["..", "../..", "a-b", "", "a/b", "UPPER", "thirteenchars"] {
            #expect(!LabCluster.isValidName(name), "\(name)")
            #expect(Lab.down(name: name).nothingToDo, "down with \(name) touches nothing")
        }
        #expect(LabCluster.isValidName("seed") && LabCluster.isValidName("demo2"))
    }

    @Test func badClusterFilesAreRejectedWithPaths() {
        let error = #expect(throws: SpecError.self) {
            try LabCluster.load(
                Data(
                    #"{ "name": "Bad_Name", "nodes": [ { "name": "n1", "address": "10.9.0.1", "podCIDR": "10.1.1.0/24", "pods": [ { "name": "a", "ip": "x" } ] } ] }"#
                        .utf8))
        }
        #expect(
            error?.problems.map(\.description) == [
                "nodes[0].pods[0].ip: \"x\" is not an IPv4 address",
                "name: \"Bad_Name\" must be 1-12 characters of a-z and 0-9",
                "nodes[0].address: 10.9.0.1 is outside the fabric 172.18.0.0/16",
            ])
    }
}

extension LabIntegrationTests {
    /// The seed's packet paths on the lab, in both datapath modes: cross-node pod traffic
    /// (ping and TCP) works; in BPF mode neither node's IP stack forwards it, in kernel mode
    /// both do; BPF programs are visible to bpftool.
    @Test(arguments: [DatapathMode.bpf, .kernel])
    func crossNodeTrafficInBothModes(_ mode: DatapathMode) throws {
        let lab = Self.labName(mode == .bpf ? "xb" : "xk")
        defer { Lab.down(name: lab) }
        var cluster = LabCluster.seed(name: lab)
        cluster.datapathMode = mode
        try Lab(cluster: cluster).up()
        let server = try PodServer(
            name: "cilium-with-replacement-w1", ip: IPAddress("10.0.1.15"),
            namespace: .named(cluster.namespace(ofPod: "cilium-with-replacement-w1")))
        server.start()
        defer { server.stop() }
        let nodes = ["worker2", "worker"].map { NamespaceReference.named(cluster.namespace(ofNode: $0)) }
        let before = try nodes.map { try LabProbe.forwardedDatagrams(in: $0) }
        let taps = try nodes.map { try FrameTap(device: "cilium_host", in: $0) }
        func ping() throws -> (status: Int32, output: String) {
            try runTool([
                "ip", "netns", "exec", cluster.namespace(ofPod: "net"), "ping", "-c", "3", "-i", "0.2", "-W", "2", "-w",
                "10", "10.0.1.15",
            ])
        }
        // In BPF mode with the programs' run-time statistics on: the benchmarks' program costs.
        var costs: [String: BPFProgramStats] = [:]
        var pinged: (status: Int32, output: String) = (0, "")
        var programs: [LabPrograms.Program] = []
        if mode == .bpf {
            programs = try LabPrograms.attached(
                bpffsDirectories: ["worker2", "worker"].map { cluster.bpffsDirectory(ofNode: $0) },
                namespaces: ["worker2", "worker"].map { cluster.namespace(ofNode: $0) })
            costs = try LabPrograms.costs(of: programs) { pinged = try ping() }
        } else {
            pinged = try ping()
        }
        #expect(pinged.output.contains("3 received") && pinged.output.contains("ttl=62"), "\(pinged.output)")
        if mode == .bpf {
            // Each program once (a node's pods share its from-container program), and the
            // echo and its reply through both nodes' from-container and from-netdev.
            #expect(Set(programs.map(\.kind)).isSuperset(of: ["from-container", "from-netdev"]))
            #expect(programs.filter { $0.kind == "from-container" }.count == 2, "\(programs.map(\.kind))")
            for kind in ["from-container", "from-netdev"] {
                #expect(costs[kind].map { $0.runCount >= 6 && $0.runTimeNanoseconds > 0 } == true, "\(kind): \(costs)")
            }
        }
        let http = try LabProbe.httpGet(from: .named(cluster.namespace(ofPod: "net")), to: IPAddress("10.0.1.15"))
        #expect(
            http.body == "PodName: cilium-with-replacement-w1 | PodIP: eth0 10.0.1.15/32\n"
                && http.local.hasPrefix("10.0.2.32:"))
        let after = try nodes.map { try LabProbe.forwardedDatagrams(in: $0) }
        if mode == .bpf {
            #expect(after == before, "neither node's IP stack forwarded pod traffic")
            let progs = try runTool(["bpftool", "prog", "show"])
            #expect(
                progs.output.contains("nodenet_from_co") && progs.output.contains("nodenet_from_ne"),
                "bpftool shows the programs by name")
        } else {
            #expect(zip(after, before).allSatisfy { $0 > $1 }, "kernel mode forwards in both nodes' IP stacks")
        }
        #expect(taps.map { $0.ipv4Frames() } == [0, 0], "cilium_host carried no pod traffic on either node")
    }
}
