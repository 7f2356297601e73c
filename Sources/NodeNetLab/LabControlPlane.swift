import BPF
import Etcd
import Foundation
import Netlink
import NodeNet
import NodeNetAgent

/// `lab up --control-plane etcd`: a 3-member etcd (Debian's etcd-server, each member in its
/// own namespace on the fabric, its data in the lab's run directory) and `nodenetd run` in
/// cluster mode on every node, inside the node's namespace (so it reaches etcd over the
/// fabric). The lab's own commands reach etcd through each member's unix socket in the run
/// directory.
public enum LabControlPlane {
    static let etcdBinary = "/usr/bin/etcd"

    /// The cluster settings of the lab's own commands (the members' unix sockets).
    public static func adminSettings(_ c: LabCluster) -> ClusterSettings {
        var settings = c.clusterSettings
        settings.endpoints = (0..<3).map { "unix://\(c.etcdSocket($0))" }
        return settings
    }

    /// Runs `body` with a client of the lab's etcd, this thread waiting.
    public static func withEtcdClient<T: Sendable>(
        _ settings: ClusterSettings, timeout: Int = 5, _ body: @escaping @Sendable (any EtcdClient) async throws -> T
    ) throws -> T {
        try NodeAgent.blocking(try NodeAgent.makeGatewayClient(settings, requestTimeout: .seconds(timeout)), body)
    }

    public static func start(_ c: LabCluster, interrupt: LabInterrupt) throws {
        guard FileManager.default.isExecutableFile(atPath: etcdBinary) else {
            throw NodeNetError.missing("\(etcdBinary) is missing: install etcd-server (scripts/install-deps.sh does)")
        }
        for i in 0..<3 { try startMember(c, i) }
        try wait("etcd to answer", seconds: 30, interrupt: interrupt) {
            (try? withEtcdClient(adminSettings(c), timeout: 2) { try await $0.range(prefix: "/nodenet") }) != nil
        }
        try writeServices(c, c.services)
        for node in c.nodes { try startAgent(c, node: node.name) }
        try wait("every node's routes to every other", seconds: 30, interrupt: interrupt) {
            c.nodes.allSatisfy { node in
                let routes = directRoutes(c, node: node.name)
                return c.nodes.allSatisfy { $0.name == node.name || routes[$0.podCIDR] == $0.address }
            }
        }
    }

    /// Member `i`: listens on its fabric address and on a unix socket in its directory.
    public static func startMember(_ c: LabCluster, _ i: Int) throws {
        let address = c.etcdMembers[i]
        let cluster = c.etcdMembers.enumerated().map { "m\($0.offset)=http://\($0.element):2380" }
            .joined(separator: ",")
        let directory = c.etcdDirectory(i)
        try LabRuntime.spawn(
            [
                LabRuntime.executable, "lab", "exec", "--name", c.name, "--workdir", directory, "etcd\(i)", "--",
                etcdBinary, "--name", "m\(i)", "--data-dir", "\(directory)/data",
                "--listen-client-urls", "http://\(address):2379,unix://client:2379",
                "--advertise-client-urls", "http://\(address):2379",
                "--listen-peer-urls", "http://\(address):2380", "--initial-advertise-peer-urls",
                "http://\(address):2380",
                "--initial-cluster", cluster, "--initial-cluster-token", "nodenet-lab-\(c.name)",
                "--heartbeat-interval", "50", "--election-timeout", "500",
            ], log: "\(directory)/etcd.log", cgroup: nil)
    }

    /// Kills member `i` (SIGKILL); `startMember` brings it back with its data.
    public static func killMember(_ c: LabCluster, _ i: Int) {
        guard let cgroup = c.etcdCgroup else { return }
        for pid in CgroupV2.processes(in: cgroup) {
            let cmdline = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
            if cmdline.contains("\0--name\0m\(i)\0") { kill(pid, SIGKILL) }
        }
        unlink(c.etcdSocket(i))
    }

    static func writeServices(_ c: LabCluster, _ services: [ServiceSpec]) throws {
        guard !services.isEmpty else { return }
        let keys = ClusterKeys(prefix: c.clusterSettings.prefix)
        _ = try withEtcdClient(adminSettings(c)) { client in
            for service in services {
                try await client.put(
                    keys.service(service.name), value: ClusterServiceRecord.encoded(service), lease: nil)
            }
        }
    }

    static func agentPIDFile(_ c: LabCluster, node: String) -> String { "\(c.runDirectory)/\(node)/agent.pid" }

    /// `nodenetd run` for `node`, inside its namespace and cgroup, with its endpoint API.
    public static func startAgent(_ c: LabCluster, node: String) throws {
        let spec = "\(c.runDirectory)/\(node)/spec.json"
        try c.spec(forNode: node)!.jsonData().write(to: URL(fileURLWithPath: spec))
        let pid = try LabRuntime.spawn(
            [
                LabRuntime.executable, "lab", "exec", "--name", c.name, node, "--", LabRuntime.executable, "run",
                "--spec", spec, "--api-socket", LabPods.socket(c, node: node),
            ], log: "\(c.runDirectory)/\(node)/agent.log", cgroup: c.cgroupPath(ofNode: node))
        try "\(pid)\n".write(toFile: agentPIDFile(c, node: node), atomically: true, encoding: .utf8)
    }

    /// Kills `node`'s agent (SIGKILL: no goodbye, its lease runs out); the datapath stays.
    public static func killAgent(_ c: LabCluster, node: String) {
        guard let text = try? String(contentsOfFile: agentPIDFile(c, node: node), encoding: .utf8),
            let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
        else { return }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        for _ in 0..<100 where kill(pid, 0) == 0 {
            if waitpid(pid, &status, WNOHANG) == pid { break }
            usleep(20_000)
        }
        unlink(agentPIDFile(c, node: node))
    }

    /// `node`'s direct routes (nodenet's): pod CIDR → next hop.
    public static func directRoutes(_ c: LabCluster, node: String) -> [IPPrefix: IPAddress] {
        guard let s = try? NetlinkSocket(namespace: .named(c.namespace(ofNode: node))),
            let routes = try? s.routes(RouteFilter(protocol: NodeNetNames.routeProtocol))
        else { return [:] }
        var out: [IPPrefix: IPAddress] = [:]
        for route in routes { if let gateway = route.gateway { out[route.destination] = gateway } }
        return out
    }

    /// Polls `condition` every 20 ms for at most `seconds`; returns how long it took.
    @discardableResult
    public static func wait(
        _ what: String, seconds: Double, interrupt: LabInterrupt? = nil, _ condition: () -> Bool
    ) throws
        -> Double
    {
        let start = Date()
        while !condition() {
            if interrupt?.fired == true { throw CancellationError() }
            guard Date().timeIntervalSince(start) < seconds else {
                throw NodeNetError.state("timed out after \(Int(seconds)) s waiting for \(what)")
            }
            usleep(20_000)
        }
        return Date().timeIntervalSince(start)
    }
}
