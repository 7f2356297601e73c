import Foundation
import Netlink
import NodeNet

/// The lab's side of CNI pods: the node's agent, the plugin run as a runtime runs it, servers.
public enum LabPods {
    /// Lab `name`, checked to have `node` and to have room for a CNI pod called `pod`.
    public static func cluster(named name: String, node: String, pod: String) throws -> LabCluster {
        let c = try Lab.load(name: name)
        guard c.nodes.contains(where: { $0.name == node }) else {
            throw LabError.invalid("no node \(node) in lab \(c.name)")
        }
        guard (1...40).contains(pod.count), pod.first != "-",
            pod.allSatisfy({ ($0.isLowercase && $0.isASCII) || ($0.isNumber && $0.isASCII) || $0 == "-" })
        else { throw LabError.invalid("pod name \"\(pod)\": 1-40 characters of a-z, 0-9 and '-'") }
        guard c.node(ofPod: pod) == nil else {
            throw LabError.invalid("pod \(pod) is one of the lab's spec pods")
        }
        return c
    }

    /// Adds `pod` to `node` as a runtime does: the node's agent (started if nobody answers),
    /// the pod's namespace, nodenet-cni ADD, the pod's servers. Returns the CNI result and the
    /// pod's address; on failure the namespace is removed again.
    public static func add(_ c: LabCluster, node: String, pod: String) throws -> (result: String, ip: String) {
        let namespace = c.namespace(ofPod: pod)
        guard !NetworkNamespace.list().contains(namespace) else {
            throw LabError.invalid("pod \(pod) exists in lab \(c.name)")
        }
        let socket = try ensureAgent(c, node: node)
        try NetworkNamespace.create(namespace)
        do {
            // The runtime's loopback plugin brings lo up; here the lab does.
            try NetlinkSocket(namespace: .named(namespace)).setLink(named: "lo", LinkChange(up: true))
            let result = try cni("ADD", c, node: node, pod: pod, socket: socket)
            guard let ip = address(in: result) else {
                throw NodeNetError.state("nodenet-cni ADD gave no address: \(result)")
            }
            try startServer(c, node: node, pod: pod, ip: ip)
            return (result, ip)
        } catch {
            try? NetworkNamespace.delete(namespace)
            throw error
        }
    }

    /// nodenet-cni DEL for `pod`, its servers stopped, its namespace removed.
    public static func delete(_ c: LabCluster, node: String, pod: String) throws {
        _ = try cni("DEL", c, node: node, pod: pod, socket: socket(c, node: node))
        stopServer(c, node: node, pod: pod)
        try? NetworkNamespace.delete(c.namespace(ofPod: pod))
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
    static func cni(
        _ command: String, _ c: LabCluster, node: String, pod: String, socket: String
    ) throws -> String {
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
