import ArgumentParser
import Foundation
import NodeNet
import NodeNetLab

/// `lab pod add|del`: pods made the way a container runtime makes them, through `nodenet-cni`
/// and the node's agent (started for the node on first use, as a lab process).
struct LabPodCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pod", abstract: "Add or delete a pod through nodenet-cni, as a container runtime does.",
        discussion: """
            `add` starts the node's agent (`nodenetd run` with its endpoint API under the lab's run directory) when it is
            not running yet, creates the pod's network namespace, runs nodenet-cni ADD in the node's namespace with the
            CNI environment a runtime sets (container id lab-NAME, K8S_POD_NAMESPACE=default, K8S_POD_NAME=NAME) and
            starts the pod's HTTP and UDP servers. `del` runs DEL, stops the servers and removes the namespace.
            `lab down` removes all of it.
            """,
        subcommands: [Add.self, Del.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add", abstract: "Add a pod to a node.")
        @OptionGroup var lab: LabName
        @Argument(help: "The node.") var node: String
        @Argument(help: "The pod's name (1-40 of a-z, 0-9 and '-').") var pod: String
        @Flag(help: "Print the CNI result as JSON.") var json = false

        func run() throws {
            let c = try LabPods.cluster(lab, node: node, pod: pod)
            let namespace = c.namespace(ofPod: pod)
            guard !NetworkNamespace.list().contains(namespace) else {
                throw InvalidInput(message: "pod \(pod) exists in lab \(c.name)")
            }
            let socket = try LabPods.ensureAgent(c, node: node)
            try NetworkNamespace.create(namespace)
            do {
                // The runtime's loopback plugin brings lo up; here the lab does.
                try NetlinkSocket(namespace: .named(namespace)).setLink(named: "lo", LinkChange(up: true))
                let result = try LabPods.cni("ADD", c, node: node, pod: pod, socket: socket)
                guard let ip = LabPods.address(in: result) else {
                    throw NodeNetError.state("nodenet-cni ADD gave no address: \(result)")
                }
                try LabPods.startServer(c, node: node, pod: pod, ip: ip)
                if json { return print(result) }
                print("pod \(pod) on \(node): \(ip) (nodenet-cni, container lab-\(pod))")
            } catch {
                try? NetworkNamespace.delete(namespace)
                throw error
            }
        }
    }

    struct Del: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "del", abstract: "Delete a pod added with add.")
        @OptionGroup var lab: LabName
        @Argument(help: "The node.") var node: String
        @Argument(help: "The pod's name.") var pod: String

        func run() throws {
            let c = try LabPods.cluster(lab, node: node, pod: pod)
            _ = try LabPods.cni("DEL", c, node: node, pod: pod, socket: LabPods.socket(c, node: node))
            LabPods.stopServer(c, node: node, pod: pod)
            try? NetworkNamespace.delete(c.namespace(ofPod: pod))
            print("pod \(pod) deleted from \(node)")
        }
    }
}

/// The lab's side of CNI pods: the node's agent, the plugin run as a runtime runs it, servers.
enum LabPods {
    static func cluster(_ lab: LabName, node: String, pod: String) throws -> LabCluster {
        let c = try Lab.load(name: try lab.resolve())
        guard c.nodes.contains(where: { $0.name == node }) else {
            throw InvalidInput(message: "no node \(node) in lab \(c.name)")
        }
        guard (1...40).contains(pod.count), pod.first != "-",
            pod.allSatisfy({ ($0.isLowercase && $0.isASCII) || ($0.isNumber && $0.isASCII) || $0 == "-" })
        else { throw InvalidInput(message: "pod name \"\(pod)\": 1-40 characters of a-z, 0-9 and '-'") }
        guard c.node(ofPod: pod) == nil else {
            throw InvalidInput(message: "pod \(pod) is one of the lab's spec pods")
        }
        return c
    }

    static func socket(_ c: LabCluster, node: String) -> String { "\(c.runDirectory)/\(node)/api/nodenet.sock" }

    /// The node's agent, started when nobody answers on its socket; returns the socket.
    static func ensureAgent(_ c: LabCluster, node: String) throws -> String {
        let socket = socket(c, node: node)
        let config = try self.config(socket: socket)
        if (try? plugin("STATUS", config: config, environment: [:], in: c, node: node))?.status == 0 { return socket }
        let spec = "\(c.runDirectory)/\(node)/spec.json"
        try c.spec(forNode: node)!.jsonData().write(to: URL(fileURLWithPath: spec))
        try LabRuntime.spawn(
            [
                LabRuntime.executable, "run", "--spec", spec, "--netns", c.namespace(ofNode: node), "--api-socket",
                socket,
            ], log: "\(c.runDirectory)/\(node)/agent.log", cgroup: c.cgroupPath(ofNode: node))
        let deadline = Date().addingTimeInterval(20)
        while (try? plugin("STATUS", config: config, environment: [:], in: c, node: node))?.status != 0 {
            guard Date() < deadline else {
                throw NodeNetError.state(
                    "the agent of \(node) does not answer (see \(c.runDirectory)/\(node)/agent.log)")
            }
            usleep(50_000)
        }
        return socket
    }

    static func config(socket: String) throws -> Data {
        try JSONSerialization.data(withJSONObject: [
            "cniVersion": "1.0.0", "name": "nodenet", "type": "nodenet-cni", "socket": socket,
        ])
    }

    /// Runs `nodenet-cni` with `command` as a runtime on the node does; the CNI result (ADD).
    static func cni(_ command: String, _ c: LabCluster, node: String, pod: String, socket: String) throws -> String {
        let environment = [
            "CNI_CONTAINERID": "lab-\(pod)", "CNI_NETNS": "/var/run/netns/\(c.namespace(ofPod: pod))",
            "CNI_IFNAME": "eth0", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=\(pod)",
        ]
        let (status, output) = try plugin(
            command, config: try config(socket: socket), environment: environment, in: c, node: node)
        guard status == 0 else { throw NodeNetError.state("nodenet-cni \(command) failed: \(output)") }
        return output
    }

    /// The plugin beside this executable, run in the node's namespace and cgroup (`lab exec`)
    /// with the configuration on standard input.
    static func plugin(
        _ command: String, config: Data, environment: [String: String], in c: LabCluster, node: String
    ) throws -> (status: Int32, output: String) {
        let plugin = URL(fileURLWithPath: LabRuntime.executable).deletingLastPathComponent()
            .appendingPathComponent("nodenet-cni").path
        guard FileManager.default.isExecutableFile(atPath: plugin) else {
            throw NodeNetError.missing("nodenet-cni is not beside nodenetd (\(plugin)): swift build builds both")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: LabRuntime.executable)
        p.arguments = ["lab", "exec", "--name", c.name, node, "--", plugin]
        p.environment = ProcessInfo.processInfo.environment.merging(
            environment.merging(["CNI_COMMAND": command, "CNI_PATH": (plugin as NSString).deletingLastPathComponent]) {
                $1
            }
        ) { $1 }
        let input = Pipe()
        let output = Pipe()
        p.standardInput = input
        p.standardOutput = output
        try p.run()
        input.fileHandleForWriting.write(config)
        try input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func address(in result: String) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(result.utf8)) as? [String: Any],
            let ips = object["ips"] as? [[String: Any]], let address = ips.first?["address"] as? String
        else { return nil }
        return address.split(separator: "/").first.map(String.init)
    }

    static func pidFile(_ c: LabCluster, node: String, pod: String) -> String {
        "\(c.runDirectory)/\(node)/pod-\(pod).pid"
    }

    static func startServer(_ c: LabCluster, node: String, pod: String, ip: String) throws {
        let pid = try LabRuntime.spawn(
            [LabRuntime.executable, "lab", "serve", "--name", c.name, "--node", node, "--pod", pod, "--ip", ip],
            log: "\(c.runDirectory)/\(node)/serve-\(pod).log", cgroup: c.cgroupPath(ofNode: node))
        try "\(pid)\n".write(toFile: pidFile(c, node: node, pod: pod), atomically: true, encoding: .utf8)
    }

    static func stopServer(_ c: LabCluster, node: String, pod: String) {
        let file = pidFile(c, node: node, pod: pod)
        if let text = try? String(contentsOfFile: file, encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1
        {
            kill(pid, SIGTERM)
        }
        unlink(file)
    }
}
