import Etcd
import Foundation
import Netlink
import NodeNet

/// The checks of `lab demo --control-plane etcd` beyond the seed's: the cluster lives in etcd.
extension LabWalkthrough {
    /// Every node's nodenet routes to the others' pod CIDRs (pod CIDR → next hop).
    func meshProblems(
        _ c: LabCluster, expect present: [LabCluster.Node], absent: [LabCluster.Node] = []
    )
        -> [String]
    {
        var problems: [String] = []
        for node in c.nodes {
            let routes = LabControlPlane.directRoutes(c, node: node.name)
            for other in present where other.name != node.name && routes[other.podCIDR] != other.address {
                problems.append("\(node.name) has no route to \(other.podCIDR) via \(other.address)")
            }
            for other in absent where other.name != node.name && routes[other.podCIDR] != nil {
                problems.append("\(node.name) still routes \(other.podCIDR)")
            }
        }
        return problems
    }

    /// Waits (30 s at most) until every node of `c` routes to every other, then pings `address`
    /// from the pod net: whether it answered, and the evidence (`took` says how long the wait was).
    func meshThenPing(
        _ c: LabCluster, _ what: String, _ address: String, took: (Double) -> String
    ) throws -> (Bool, [String]) {
        let seconds = try LabControlPlane.wait(what, seconds: 30) { meshProblems(c, expect: c.nodes).isEmpty }
        let (replies, _, _) = try ping(from: "net", address)
        return (replies > 0, [took(seconds), "ping net -> \(address): \(replies) replies"])
    }

    public func runClusterChecks() {
        var c = cluster
        let keys = ClusterKeys(prefix: c.clusterSettings.prefix)
        let settings = LabControlPlane.adminSettings(c)
        check("every node registered in etcd under a lease, with its pod CIDR claimed") {
            let (nodes, claims) = try LabControlPlane.withEtcdClient(settings) { client in
                (
                    try await client.range(prefix: keys.nodes).keyValues,
                    try await client.range(prefix: keys.cidrs).keyValues
                )
            }
            let leased = nodes.filter { $0.lease != nil }.map { String($0.key.dropFirst(keys.nodes.count)) }
            return (
                Set(leased) == Set(c.nodes.map(\.name)) && claims.count == c.nodes.count,
                ["nodes with a lease: \(leased.sorted().joined(separator: ", "))", "CIDR claims: \(claims.count)"]
            )
        }

        // A node joins the running lab: its agent registers it, every node routes to it.
        let joining = LabCluster.Node(
            name: "worker3", address: IPAddress("172.18.0.5"), podCIDR: IPPrefix("10.0.3.0/24"), routerIP: nil,
            pods: [LabCluster.Pod(name: "joiner", ip: IPAddress("10.0.3.20"))])
        check("a node added to the running lab (worker3) gets routes everywhere, and to everywhere") {
            c = try Lab(cluster: c).join(joining)
            try LabRuntime.startServer(c, node: joining.name)
            try LabControlPlane.startAgent(c, node: joining.name)
            return try meshThenPing(c, "routes to and from worker3", "10.0.3.20") {
                String(format: "mesh complete %.0f ms after its agent started (join to route)", $0 * 1000)
            }
        }

        // An agent dies: its lease runs out, and after the grace its routes go everywhere.
        let worker = c.nodes.first { $0.name == "worker" }!
        check("worker's agent killed: its routes stay for the grace, then go from every node (lease 3 s + grace 3 s)") {
            LabControlPlane.killAgent(c, node: "worker")
            usleep(1_500_000)
            let stillThere = meshProblems(c, expect: c.nodes).isEmpty
            let took = try LabControlPlane.wait("worker's routes to go", seconds: 30) {
                meshProblems(c, expect: [], absent: [worker]).isEmpty
            }
            let elapsed = took + 1.5
            return (
                stillThere && elapsed >= 3,
                [
                    "1.5 s after the kill every route is still there: \(stillThere)",
                    String(format: "worker's routes gone from every other node %.1f s after the kill", elapsed),
                ]
            )
        }
        check("worker's agent restarted: its routes are back everywhere") {
            try LabControlPlane.startAgent(c, node: "worker")
            return try meshThenPing(c, "worker's routes to come back", "10.0.1.15") {
                String(format: "back %.0f ms after the restart", $0 * 1000)
            }
        }

        check("one etcd member killed: nothing changes, the cluster still takes writes") {
            let before = c.nodes.map { LabControlPlane.directRoutes(c, node: $0.name) }
            LabControlPlane.killMember(c, 0)
            usleep(3_000_000)
            let after = c.nodes.map { LabControlPlane.directRoutes(c, node: $0.name) }
            let wrote = try LabControlPlane.withEtcdClient(settings) { client in
                try await client.put(keys.all + "probe", value: Array("ok".utf8), lease: nil) > 0
            }
            _ = try LabControlPlane.withEtcdClient(settings) { try await $0.delete(keys.all + "probe") }
            try LabControlPlane.startMember(c, 0)
            return (
                before == after && wrote,
                [
                    "routes on every node unchanged over 3 s: \(before == after)",
                    "a write with 2 of 3 members: \(wrote)",
                ]
            )
        }

        check("a service applied with `cluster service apply` (backends named by pod) answers from every node") {
            let file = "\(c.runDirectory)/web.json"
            try Data(
                #"{"name":"default/web","clusterIP":"10.96.50.50","ports":[{"port":80}],"backends":[{"pod":"default/cilium-with-replacement-w1"},{"pod":"default/joiner"}]}"#
                    .utf8
            ).write(to: URL(fileURLWithPath: file))
            let etcd = (0..<3).map { "unix://\(c.etcdSocket($0))" }.joined(separator: ",")
            let (status, output) = try LabRuntime.capture(
                lab: c.name, "external",
                [LabRuntime.executable, "cluster", "service", "apply", "--etcd", etcd, "--prefix", keys.prefix, file])
            var evidence = [
                "cluster service apply: exit \(status): \(output.trimmingCharacters(in: .whitespacesAndNewlines))"
            ]
            var ok = status == 0
            for node in c.nodes {
                var answered: Set<String> = []
                _ = try? LabControlPlane.wait("\(node.name) to answer", seconds: 20) {
                    let report = try? LabRuntime.probe(lab: c.name, from: node.name, to: "10.96.50.50:80", count: 10)
                    answered = Set(
                        (report?.answers.keys ?? [:].keys).map { $0.replacingOccurrences(of: "PodName: ", with: "") })
                    return answered == ["cilium-with-replacement-w1", "joiner"]
                }
                ok = ok && answered == ["cilium-with-replacement-w1", "joiner"]
                evidence.append("from \(node.name): \(answered.sorted().joined(separator: ", "))")
            }
            return (ok, evidence)
        }
    }
}
