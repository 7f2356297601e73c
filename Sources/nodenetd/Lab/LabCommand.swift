import ArgumentParser
import Foundation
import NodeNet
import NodeNetLab

struct LabCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lab",
        abstract: "A kind-like cluster in network namespaces: the seed walkthrough on one machine.",
        discussion: """
            `lab up` builds a fabric (a bridge in its own namespace standing for the docker network 172.18.0.0/16),
            one namespace per node with eth0 on the fabric, one per pod, and an external host (172.18.0.1); each
            node is configured with the normal apply. Every pod serves HTTP on port 80 (`PodName: <name> | PodIP:
            eth0 <ip>/32`) and a UDP echo on port 53, from a process in its node's cgroup. Without a cluster file
            the seed's cluster is built. Several labs with different names can run at once. Nothing is created in
            the root namespace or the root cgroup.
            """,
        subcommands: [
            LabUp.self, LabDown.self, LabStatus.self, LabExec.self, LabProbeCommand.self, LabSpec.self, LabDemo.self,
            LabPodCommand.self, LabServe.self,
        ])
}

/// `--name`, shared by the lab commands.
struct LabName: ParsableArguments {
    @Option(name: .customLong("name"), help: "The lab's name (default: the only running lab, else 'seed').")
    var value: String?

    func resolve() throws -> String {
        if let value {
            guard LabCluster.isValidName(value) else {
                throw InvalidInput(message: "--name \"\(value)\": a lab name is 1-12 characters of a-z and 0-9")
            }
            return value
        }
        let running = Lab.running()
        return running.count == 1 ? running[0] : "seed"
    }
}

struct LabUp: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up", abstract: "Build the lab (the seed's cluster without a file) and apply every node.")

    @Argument(help: "A cluster file (JSON; see docs/lab.md).") var cluster: String?
    @Option(help: "The lab's name (overrides the file's; default 'seed' for the seed cluster).") var name: String?
    @Option(
        help: ArgumentHelp(
            "spec: every node's spec lists the others and the services; etcd: a 3-member etcd on the fabric and `nodenetd run` in cluster mode on every node.",
            valueName: "spec|etcd"))
    var controlPlane: LabCluster.ControlPlane?

    func run() throws {
        var c: LabCluster
        if let cluster {
            guard let data = FileManager.default.contents(atPath: cluster) else {
                throw InvalidInput(message: "cannot read \(cluster)")
            }
            c = try LabCluster.load(data)
        } else {
            c = LabCluster.seed()
        }
        if let name { c.name = name }
        if let controlPlane { c.controlPlane = controlPlane }
        let interrupt = LabInterrupt()
        try LabRuntime.up(c, interrupt: interrupt)
        print(
            "lab \(c.name) is up: \(c.nodes.count) nodes, \(c.nodes.map(\.pods.count).reduce(0, +)) pods, external host \(c.externalAddress)"
        )
        print("try: nodenetd lab status --name \(c.name); nodenetd lab exec net --name \(c.name) -- ping -c1 10.0.1.15")
        if c.controlPlane == .etcd {
            print(
                "etcd: nodenetd cluster nodes --etcd \((0..<3).map { "unix://\(c.etcdSocket($0))" }.joined(separator: ",")) --prefix \(c.clusterSettings.prefix)"
            )
        }
    }
}

struct LabDown: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "down", abstract: "Remove everything the lab created; safe to run twice, and after a crashed up.")
    @OptionGroup var lab: LabName
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let name = try lab.resolve()
        let report = Lab.down(name: name)
        if json { return try printJSON(report) }
        print(
            report.nothingToDo
                ? "lab \(name): nothing to remove"
                : "lab \(name) removed: \(report.processes) processes, \(report.namespaces) namespaces, \(report.directories) directories"
        )
    }
}

struct LabStatus: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Nodes, pods and the external host, with namespaces and addresses.")
    @OptionGroup var lab: LabName
    @Flag(help: "Print JSON.") var json = false

    struct Row: Encodable {
        let kind: String, name: String, node: String?, namespace: String, address: String, detail: String
    }

    func run() throws {
        let c = try Lab.load(name: try lab.resolve())
        var rows = [
            Row(
                kind: "external", name: "external", node: nil, namespace: c.externalNamespace,
                address: c.externalAddress.description, detail: "fabric \(c.fabricCIDR)")
        ]
        for n in c.nodes {
            let spec = c.spec(forNode: n.name)!
            rows.append(
                Row(
                    kind: "node", name: n.name, node: nil, namespace: c.namespace(ofNode: n.name),
                    address: n.address.description,
                    detail: "podCIDR \(n.podCIDR), router \(spec.node.routerIP)"))
            for p in n.pods {
                let serving =
                    (try? LabProbe.httpGet(from: .named(c.namespace(ofPod: p.name)), to: p.ip, timeout: 1)) != nil
                rows.append(
                    Row(
                        kind: "pod", name: p.name, node: n.name, namespace: c.namespace(ofPod: p.name),
                        address: p.ip.description,
                        detail: serving ? "serving :80/tcp :53/udp" : "not serving"))
            }
            // Pods `lab pod add` made through nodenet-cni: the node agent's endpoints.
            let store = try? EndpointStore.load(
                stateDirectory: c.stateDirectory(ofNode: n.name), node: n.name, podCIDR: n.podCIDR)
            for endpoint in store?.endpoints ?? [] {
                let namespace = (endpoint.netns as NSString).lastPathComponent
                let serving =
                    (try? LabProbe.httpGet(from: .named(namespace), to: endpoint.ip, timeout: 1)) != nil
                rows.append(
                    Row(
                        kind: "pod", name: endpoint.podName, node: n.name, namespace: namespace,
                        address: endpoint.ip.description,
                        detail: "cni \(endpoint.attachment), " + (serving ? "serving :80/tcp :53/udp" : "not serving")))
            }
        }
        if json { return try printJSON(rows) }
        print("lab \(c.name)")
        printTable(
            ["KIND", "NAME", "NODE", "ADDRESS", "NAMESPACE", ""],
            rows.map { [$0.kind, $0.name, $0.node ?? "-", $0.address, $0.namespace, $0.detail] })
    }
}

struct LabSpec: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spec", abstract: "Print the node spec the lab applied to NODE.")
    @Argument(help: "A node of the lab.") var node: String
    @OptionGroup var lab: LabName

    func run() throws {
        let c = try Lab.load(name: try lab.resolve())
        guard let spec = c.spec(forNode: node) else {
            throw InvalidInput(
                message: "no node \(node) in lab \(c.name) (nodes: \(c.nodes.map(\.name).joined(separator: ", ")))")
        }
        print(String(decoding: try spec.jsonData(), as: UTF8.self))
    }
}

struct LabExec: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec", abstract: "Run a command in the namespace (and cgroup) of a node, a pod or 'external'.",
        discussion:
            "Like `kubectl exec` / `docker exec`: the command's exit status is returned. Example: nodenetd lab exec net -- ping -c1 10.0.1.15"
    )
    @OptionGroup var lab: LabName
    @Option(help: "Run the command in this directory.") var workdir: String?
    @Argument(help: "A node, a pod, 'external', or an etcd member (etcd0-etcd2, with --control-plane etcd).")
    var target: String
    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.") var command: [String] = []

    func validate() throws {
        if command.isEmpty { throw ValidationError("give a command after --, e.g. nodenetd lab exec net -- ip route") }
    }

    func run() throws {
        let c = try Lab.load(name: try lab.resolve())
        guard let (namespace, cgroup) = LabRuntime.place(of: target, in: c) else {
            let names = ["external"] + c.nodes.map(\.name) + c.nodes.flatMap { $0.pods.map(\.name) }
            throw InvalidInput(message: "no \(target) in lab \(c.name) (known: \(names.joined(separator: ", ")))")
        }
        if let workdir, chdir(workdir) != 0 {
            throw InvalidInput(message: "--workdir \(workdir): \(String(cString: strerror(errno)))")
        }
        try LabRuntime.exec(command, namespace: namespace, cgroup: cgroup)
    }
}

/// Hidden: serves the pods of one node (started by `lab up`, one process per node).
struct LabServe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Serve a node's pods (started by lab up).", shouldDisplay: false)
    @OptionGroup var lab: LabName
    @Option(help: "The node whose pods to serve.") var node: String
    @Option(help: "Serve only this pod (one `lab pod add` made), at --ip.") var pod: String?
    @Option(help: "The address of --pod.") var ip: String?

    func run() throws {
        let c = try Lab.load(name: try lab.resolve())
        if let pod {
            guard let ip = ip.flatMap(IPAddress.init) else { throw InvalidInput(message: "--pod needs --ip ADDRESS") }
            return try LabRuntime.serve(c, node: node, only: LabCluster.Pod(name: pod, ip: ip))
        }
        try LabRuntime.serve(c, node: node)
    }
}

extension LabCluster.ControlPlane: ExpressibleByArgument {}
