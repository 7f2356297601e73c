import BPF
import Etcd
import Foundation
import Logging
import TestSupport
import Testing

@testable import NodeNet
@testable import NodeNetAgent

/// Cluster mode against a real etcd (one or three members on unix sockets in a temp directory)
/// and a real agent on a test node: registration, the CIDR claim, join/leave with and without
/// the grace, restart with a node deleted meanwhile, etcd down and back, member loss, a
/// compacted watch. Other nodes are simulated by their keys (written as their agents would).
@Suite(
    .serialized,
    .enabled(
        if: Privileges.runsNamespaceTests && (EtcdServer.isInstalled || Privileges.required),
        Comment(rawValue: Privileges.canManageNamespaces ? EtcdServer.skipReason : Privileges.skipReason)))
struct ClusterIntegrationTests {
    static func settings(_ etcd: EtcdServer, ttl: Int = 3, grace: Int = 3) -> ClusterSettings {
        ClusterSettings(endpoints: etcd.clientURLs, prefix: "/nodenet/test", leaseTTL: ttl, nodeDeleteGrace: grace)
    }

    static let keys = ClusterKeys(prefix: "/nodenet/test")

    static func client(_ etcd: EtcdServer) throws -> EtcdGatewayClient {
        try EtcdGatewayClient(endpoints: etcd.clientURLs.map { try EtcdEndpoint($0) })
    }

    /// Writes a node's registration as its agent would (under `lease` when given).
    @discardableResult
    static func register(
        _ client: any EtcdClient, _ name: String, _ address: String, _ cidr: String, ttl: Int? = 60
    ) async throws -> EtcdLease? {
        var lease: EtcdLease?
        if let ttl { lease = try await client.grantLease(ttl: ttl) }
        let record = ClusterNodeRecord(
            name: name, address: IPAddress(address)!, podCIDR: IPPrefix(cidr)!, bootID: "test", version: "test")
        try await client.put(keys.node(name), value: record.encoded(), lease: lease?.id)
        return lease
    }

    /// The node's direct routes (nodenet's protocol, through eth0): destination → gateway.
    static func directRoutes(_ t: TestNode) throws -> [String: String] {
        let routes = try NetlinkSocket(namespace: t.namespace).routes(RouteFilter(protocol: NodeNetNames.routeProtocol))
        var out: [String: String] = [:]
        for route in routes where route.gateway != nil && route.destination.length == 24 {
            out["\(route.destination)"] = route.gateway.map { "\($0)" }
        }
        return out
    }

    /// An agent in cluster mode on `t` until `body` ends.
    static func withClusterAgent<T>(
        _ t: TestNode, _ cluster: ClusterSettings, client: EtcdClientFactory? = nil, logLevel: Logger.Level = .info,
        configure: (inout NodeSpec) -> Void = { _ in },
        _ body: (NodeAgent, AgentIntegrationTests.LogLines) async throws -> T
    ) async throws -> T {
        var spec = t.spec(remote: [])
        spec.cluster = cluster
        configure(&spec)
        let options: (inout NodeAgent.Options) -> Void = {
            $0.etcdClient = client
            $0.specCheckInterval = .seconds(1)
        }
        return try await AgentIntegrationTests.withAgent(on: t, spec: spec, logLevel: logLevel, options: options) {
            agent, _, lines in
            try await body(agent, lines)
        }
    }

    /// A fresh etcd (`members`), a client of it and a test node with `pods` pods, for `body`;
    /// all of them gone afterwards, also when it throws.
    static func withEtcdNode(
        members: Int = 1, pods: Int, _ body: (EtcdServer, EtcdGatewayClient, TestNode) async throws -> Void
    ) async throws {
        let etcd = try EtcdServer(members: members)
        defer { etcd.stop() }
        let client = try Self.client(etcd)
        do {
            try await TestNode.with(pods: pods) { t in try await body(etcd, client, t) }
        } catch {
            await client.shutdown()
            throw error
        }
        await client.shutdown()
    }

    static func healthz(_ agent: NodeAgent) -> (Int, String) {
        let (status, _, body) = agent.httpResponse(path: "/healthz")
        return (status, body)
    }

    @Test func joinLeaveAndTheGrace() async throws {
        try await Self.withEtcdNode(pods: 2) { etcd, client, t in
            try await Self.register(client, "worker", "172.18.0.3", "10.0.1.0/24")
            try await Self.withClusterAgent(t, Self.settings(etcd)) { agent, lines in
                // Registered under a lease, CIDR claimed, both pods published.
                let me = try #require(try await client.get(Self.keys.node("worker2")))
                #expect(me.lease != nil)
                let record = try ClusterNodeRecord.decode(me.value).get()
                #expect(record.podCIDR == IPPrefix("10.0.2.0/24") && record.address == IPAddress("172.18.0.2"))
                #expect(try await client.get(Self.keys.cidr(IPPrefix("10.0.2.0/24")))?.text == "worker2")
                var published: [ClusterEndpointRecord] = []
                for _ in 0..<600 where published.count < 2 {
                    published = try await client.range(prefix: Self.keys.endpoints(of: "worker2")).keyValues
                        .compactMap { try? ClusterEndpointRecord.decode($0.value).get() }
                    try await Task.sleep(for: .milliseconds(50))
                }
                #expect(Set(published.map(\.ip)) == [IPAddress("10.0.2.32"), IPAddress("10.0.2.204")])
                #expect(Set(published.map(\.pod)) == ["default/net", "default/server"])
                // The node that was there at start: its route came with the first reconcile.
                #expect(try Self.directRoutes(t)["10.0.1.0/24"] == "172.18.0.3")
                #expect(Self.healthz(agent).1.contains("cluster: connected"))

                // A node joins: its route follows.
                let joined = try #require(
                    try await Self.register(client, "control-plane", "172.18.0.4", "10.0.0.0/24", ttl: 60))
                let joinTime = try await AgentIntegrationTests.waitFor("the new node's route") {
                    try Self.directRoutes(t)["10.0.0.0/24"] == "172.18.0.4"
                }
                print(String(format: "join to route: %.1f ms", joinTime * 1000))

                // Its lease ends (revoked: what expiry does at once): the route stays for the
                // grace, then goes.
                try await client.revokeLease(joined.id)
                try await Task.sleep(for: .milliseconds(500))
                #expect(
                    try Self.directRoutes(t)["10.0.0.0/24"] == "172.18.0.4", "removed before the 3 s grace ended")
                try await AgentIntegrationTests.waitFor("the departed node's route to go") {
                    try Self.directRoutes(t)["10.0.0.0/24"] == nil
                }
                #expect(try Self.directRoutes(t)["10.0.1.0/24"] == "172.18.0.3")

                // A node back within the grace keeps its route untouched.
                let worker = try #require(try await client.get(Self.keys.node("worker")))
                try await client.delete(Self.keys.node("worker"))
                try await Task.sleep(for: .milliseconds(300))
                try await client.put(Self.keys.node("worker"), value: worker.value, lease: nil)
                let mark = lines.all.count
                try await Task.sleep(for: .seconds(4))
                #expect(try Self.directRoutes(t)["10.0.1.0/24"] == "172.18.0.3")
                #expect(
                    !lines.all.dropFirst(mark).contains { $0.contains("route 10.0.1.0/24") },
                    "the returning node's route was touched")
            }
        }
    }

    /// With a grace of 0 a node whose lease ended is gone with the change that says so.
    @Test func withoutAGraceANodeGoesWithItsLease() async throws {
        try await Self.withEtcdNode(pods: 1) { etcd, client, t in
            let lease = try #require(try await Self.register(client, "worker", "172.18.0.3", "10.0.1.0/24"))
            try await Self.withClusterAgent(t, Self.settings(etcd, grace: 0)) { agent, lines in
                #expect(try Self.directRoutes(t)["10.0.1.0/24"] == "172.18.0.3")
                try await client.revokeLease(lease.id)
                try await AgentIntegrationTests.waitFor("the route to go") {
                    try Self.directRoutes(t)["10.0.1.0/24"] == nil
                }
                // Removed with the change that said so, not by the grace timer.
                #expect(!lines.all.contains { $0.contains("grace ended") }, "\(lines.all)")
                #expect(agent.health == .healthy)
            }
        }
    }

    @Test func aClaimedPodCIDRIsRefused() async throws {
        let etcd = try EtcdServer()
        defer { etcd.stop() }
        let client = try Self.client(etcd)
        try await client.put(Self.keys.cidr(IPPrefix("10.0.2.0/24")), value: Array("intruder".utf8), lease: nil)
        try await TestNode.with(pods: 1) { t in
            try await Self.withClusterAgent(t, Self.settings(etcd)) { agent, _ async throws in
                try await AgentIntegrationTests.waitFor("the refusal") { Self.healthz(agent).0 == 503 }
                let (_, body) = Self.healthz(agent)
                #expect(body.contains("pod CIDR 10.0.2.0/24 is claimed by node intruder"), "\(body)")
                #expect(try await client.get(Self.keys.node("worker2")) == nil, "registered despite the clash")
                #expect(try await client.get(Self.keys.cidr(IPPrefix("10.0.2.0/24")))?.text == "intruder")
            }
        }
        await client.shutdown()
    }

    @Test func aNodeDeletedWhileTheAgentWasDownIsGoneAfterItsRestart() async throws {
        try await Self.withEtcdNode(pods: 1) { etcd, client, t in
            try await Self.register(client, "worker", "172.18.0.3", "10.0.1.0/24", ttl: nil)
            try await Self.withClusterAgent(t, Self.settings(etcd)) { _, _ async throws in
                #expect(try Self.directRoutes(t)["10.0.1.0/24"] == "172.18.0.3")
                try await AgentIntegrationTests.waitFor("the cluster cache") {
                    FileManager.default.fileExists(atPath: ClusterCache.path(stateDirectory: t.stateDirectory))
                }
            }
            // By hand, with the agent stopped: plan knows the cluster the agent last saw (the
            // route is wanted, not stale), so an apply would not flush it.
            var fileSpec = t.spec(remote: [])
            fileSpec.cluster = Self.settings(etcd)
            #expect(try t.controller(fileSpec.withCachedCluster()).plan().isEmpty)
            #expect(try !t.controller(fileSpec).plan().isEmpty, "without the cache the route would be stale")
            _ = try await client.delete(Self.keys.node("worker"))
            // Stopped, the datapath stays as it was.
            #expect(try Self.directRoutes(t)["10.0.1.0/24"] == "172.18.0.3")
            try await Self.withClusterAgent(t, Self.settings(etcd)) { _, _ async throws in
                #expect(try Self.directRoutes(t)["10.0.1.0/24"] == nil, "a deleted node's route survived a restart")
            }
        }
    }

    @Test func etcdDownKeepsTheLastStateAndTheAgentComesBack() async throws {
        try await Self.withEtcdNode(pods: 1) { etcd, client, t in
            try await Self.register(client, "worker", "172.18.0.3", "10.0.1.0/24", ttl: nil)
            try await Self.withClusterAgent(t, Self.settings(etcd, ttl: 3)) { agent, lines in
                #expect(try Self.directRoutes(t)["10.0.1.0/24"] == "172.18.0.3")
                etcd.kill(0)
                try await AgentIntegrationTests.waitFor("degraded") {
                    Self.healthz(agent).1.hasPrefix("degraded: cluster: etcd unreachable")
                }
                #expect(Self.healthz(agent).0 == 200)
                // Longer than the lease: nothing is flushed.
                try await Task.sleep(for: .seconds(4))
                #expect(try Self.directRoutes(t)["10.0.1.0/24"] == "172.18.0.3")
                try etcd.start(0)
                try etcd.waitReady()
                try await AgentIntegrationTests.waitFor("reconnected") {
                    Self.healthz(agent).1.contains("cluster: connected")
                }
                #expect(try await client.get(Self.keys.node("worker2"))?.lease != nil)
                // Watching again: a change after the outage is followed.
                try await Self.register(client, "control-plane", "172.18.0.4", "10.0.0.0/24", ttl: nil)
                try await AgentIntegrationTests.waitFor("the route of a node added after the outage") {
                    try Self.directRoutes(t)["10.0.0.0/24"] == "172.18.0.4"
                }
                #expect(lines.all.contains { $0.contains("etcd trouble; keeping the last known cluster state") })
                // Reconnected with backoff, not in a busy loop.
                let registrations = lines.all.filter { $0.contains("msg=registered") }.count
                #expect(registrations <= 3, "\(registrations) registrations")
            }
        }
    }

    @Test func anAgentStartingWithoutEtcdKeepsTheCachedCluster() async throws {
        try await Self.withEtcdNode(pods: 1) { etcd, client, t in
            try await Self.register(client, "worker", "172.18.0.3", "10.0.1.0/24", ttl: nil)
            try await Self.withClusterAgent(t, Self.settings(etcd)) { _, _ async throws in
                #expect(try Self.directRoutes(t)["10.0.1.0/24"] == "172.18.0.3")
            }
            etcd.kill(0)
            var settings = Self.settings(etcd)
            settings.leaseTTL = 3
            try await Self.withClusterAgent(t, settings) { agent, _ async throws in
                #expect(Self.healthz(agent).1.hasPrefix("degraded"))
                #expect(try Self.directRoutes(t)["10.0.1.0/24"] == "172.18.0.3", "the cluster was flushed")
            }
        }
    }

    /// A node joining is one reconcile: the route the agent adds for it comes back as a netlink
    /// event naming the agent's own socket, which its monitor leaves out (the reconcile's
    /// verification saw the route), instead of starting a second reconcile that finds nothing to
    /// do (every join cost two before).
    @Test func aNodeJoiningIsOneReconcile() async throws {
        try await Self.withEtcdNode(pods: 1) { etcd, client, t in
            try await Self.withClusterAgent(t, Self.settings(etcd), logLevel: .debug) { agent, lines in
                for i in 21...25 {
                    try await Self.register(client, "n\(i)", "172.18.0.\(i)", "10.0.\(i).0/24", ttl: nil)
                    try await AgentIntegrationTests.waitFor("the route of node n\(i)") {
                        try Self.directRoutes(t)["10.0.\(i).0/24"] == "172.18.0.\(i)"
                    }
                }
                // (Events are read on their own thread: a reconcile they started would be logged
                // by the time the next join's route is in.)
                try await Self.register(client, "n26", "172.18.0.26", "10.0.26.0/24", ttl: nil)
                try await AgentIntegrationTests.waitFor("the route of node n26") {
                    try Self.directRoutes(t)["10.0.26.0/24"] == "172.18.0.26"
                }
                let reconciles = lines.all.filter { $0.contains("msg=reconciled") }
                let joins = reconciles.filter { $0.contains("trigger=cluster") }
                let echoes = reconciles.filter { $0.contains("trigger=event") && $0.contains("route 10.0.2") }
                #expect(joins.count >= 5, "\(joins)")
                #expect(echoes.isEmpty, "reconciles started by the agent's own routes: \(echoes)")
            }
        }
    }

    @Test func losingOneOfThreeMembersChangesNothing() async throws {
        try await Self.withEtcdNode(members: 3, pods: 1) { etcd, client, t in
            try await Self.register(client, "worker", "172.18.0.3", "10.0.1.0/24", ttl: nil)
            try await Self.withClusterAgent(t, Self.settings(etcd)) { agent, lines in
                let before = try Self.directRoutes(t)
                #expect(before["10.0.1.0/24"] == "172.18.0.3")
                let reconciles = agent.reconcileCount
                etcd.kill(0)
                // The agent's client moves on to another member; a change is still followed.
                try await Self.register(client, "control-plane", "172.18.0.4", "10.0.0.0/24", ttl: nil)
                try await AgentIntegrationTests.waitFor("the route of a node added with one member down") {
                    try Self.directRoutes(t)["10.0.0.0/24"] == "172.18.0.4"
                }
                #expect(try Self.directRoutes(t)["10.0.1.0/24"] == "172.18.0.3")
                #expect(Self.healthz(agent).1.contains("cluster: connected"))
                #expect(try await client.get(Self.keys.node("worker2"))?.lease != nil)
                #expect(agent.reconcileCount > reconciles)
                #expect(!lines.all.contains { $0.contains("delete route") })
            }
        }
    }

    /// `nodenetd cluster …` through the binary: exit 2 and nothing written for an invalid file
    /// or a clash with the cluster's services, 1 when etcd does not answer or a service to delete
    /// is missing, 0 otherwise; JSON listings.
    @Test func theClusterCommandsExitCodes() async throws {
        let etcd = try EtcdServer()
        defer { etcd.stop() }
        let client = try Self.client(etcd)
        let nodenetd = LabIntegrationTests.nodenetd.path
        let directory = etcd.directory
        let etcdFlags = ["--etcd", etcd.clientURL(0), "--prefix", Self.keys.prefix]
        func cli(_ args: [String]) throws -> (status: Int32, output: String) { try runTool([nodenetd] + args) }
        let good = directory + "/web.json"
        try
            #"{"name":"default/web","type":"NodePort","clusterIP":"10.96.0.10","ports":[{"port":80,"nodePort":30080}],"backends":[{"pod":"default/web-1"}]}"#
            .write(toFile: good, atomically: true, encoding: .utf8)
        var result = try cli(["cluster", "service", "apply"] + etcdFlags + [good])
        #expect(result.status == 0 && result.output.contains("service/default/web created"), "\(result.output)")
        result = try cli(["cluster", "service", "apply"] + etcdFlags + [good])
        #expect(result.status == 0 && result.output.contains("unchanged"), "\(result.output)")
        // Another service on the same clusterIP and node port: refused, nothing written.
        let clash = directory + "/clash.json"
        try #"{"name":"other","type":"NodePort","clusterIP":"10.96.0.10","ports":[{"port":80,"nodePort":30080}]}"#
            .write(toFile: clash, atomically: true, encoding: .utf8)
        result = try cli(["cluster", "service", "apply"] + etcdFlags + [clash])
        #expect(result.status == 2 && result.output.contains("10.96.0.10 is already used"), "\(result.output)")
        #expect(try await client.get(Self.keys.service("other")) == nil)
        let bad = directory + "/bad.json"
        try #"{"name":"x","clusterIP":"10.96.0.11","ports":[{"port":70000}],"backends":[{"pod":"nope"}]}"#
            .write(toFile: bad, atomically: true, encoding: .utf8)
        result = try cli(["cluster", "service", "apply"] + etcdFlags + [bad])
        #expect(result.status == 2 && result.output.contains("70000 is out of range"), "\(result.output)")
        #expect(result.output.contains("\"nope\" is not namespace/name"), "\(result.output)")
        #expect(try cli(["cluster", "service", "apply"] + etcdFlags + [directory]).status == 2)
        result = try cli(["cluster", "services", "--json"] + etcdFlags)
        #expect(result.status == 0 && result.output.contains("\"pod default/web-1\""), "\(result.output)")
        result = try cli(["cluster", "service", "delete"] + etcdFlags + ["default/web"])
        #expect(result.status == 0, "\(result.output)")
        result = try cli(["cluster", "service", "delete"] + etcdFlags + ["default/web"])
        #expect(result.status == 1 && result.output.contains("no service default/web"), "\(result.output)")
        result = try cli(["cluster", "nodes", "--etcd", "unix://\(directory)/nothing-here"])
        #expect(result.status == 1 && result.output.contains("no etcd endpoint answered"), "\(result.output)")
        #expect(try cli(["cluster", "nodes", "--etcd", "ftp://x"]).status == 2)
        #expect(try cli(["cluster", "nodes"]).status == 2)
        await client.shutdown()
    }

    /// A service applied to the cluster whose backend names a pod on another node: every
    /// node's service map follows the pod's published address, also when the pod is made
    /// again with a new one.
    @Test(.enabled(if: Privileges.runsBPFTests)) func podBackendsFollowThePublishedPod() async throws {
        let etcd = try EtcdServer()
        defer { etcd.stop() }
        let client = try Self.client(etcd)
        let directory = "/sys/fs/bpf/\(TestNames.unique("cluster"))"
        defer { BPFFS.remove(directory) }
        try await TestNode.with(pods: 1) { t in
            let lease = try await Self.register(client, "worker", "172.18.0.3", "10.0.1.0/24")
            let web = Array(
                #"{"name":"web","clusterIP":"10.96.0.10","ports":[{"port":80,"targetPort":8080}],"backends":[{"pod":"default/web-1"},{"ip":"10.0.2.32"}]}"#
                    .utf8)
            try await client.put(Self.keys.service("web"), value: web, lease: nil)
            func publish(_ ip: String) async throws {
                let endpoint = ClusterEndpointRecord(pod: "default/web-1", ip: IPAddress(ip)!, node: "worker")
                try await client.put(
                    Self.keys.endpoint(node: "worker", pod: "default/web-1"), value: endpoint.encoded(),
                    lease: lease?.id)
            }
            try await publish("10.0.1.20")
            let configure: (inout NodeSpec) -> Void = {
                $0.datapath = DatapathSettings(mode: .bpf)
                $0.bpffsDirectory = directory
            }
            try await Self.withClusterAgent(t, Self.settings(etcd), configure: configure) { agent, _ in
                var spec = t.spec(remote: [])
                configure(&spec)
                func backends() throws -> Set<String> {
                    let rows = try t.controller(spec).services().filter { $0.frontend == "10.96.0.10:80" }
                    return Set(rows.flatMap(\.backends).map { "\($0.address):\($0.port)" })
                }
                #expect(try backends() == ["10.0.1.20:8080", "10.0.2.32:8080"])
                // The pod is made again elsewhere on its node, with a new address.
                try await publish("10.0.1.77")
                try await AgentIntegrationTests.waitFor("the service map to follow the pod") {
                    try backends() == ["10.0.1.77:8080", "10.0.2.32:8080"]
                }
                // And it goes: only the other backend stays.
                _ = try await client.delete(Self.keys.endpoint(node: "worker", pod: "default/web-1"))
                try await AgentIntegrationTests.waitFor("the pod's backend to go") {
                    try backends() == ["10.0.2.32:8080"]
                }
                #expect(agent.health == .healthy)
            }
        }
        await client.shutdown()
    }

    /// etcd with mutual TLS (its own CA, a client certificate required): the agent joins with
    /// the spec's TLS files; a client without a certificate, or trusting another CA, is refused
    /// with a sentence that says so.
    @Test func mutualTLS() async throws {
        let etcd = try EtcdServer(tls: true)
        defer { etcd.stop() }
        let endpoints = try etcd.clientURLs.map { try EtcdEndpoint($0) }
        let client = try EtcdGatewayClient(
            endpoints: endpoints, tls: EtcdTLS(caFile: etcd.caFile, certFile: etcd.certFile, keyFile: etcd.keyFile))
        try await Self.register(client, "worker", "172.18.0.3", "10.0.1.0/24", ttl: nil)
        // No client certificate: etcd ends the handshake.
        let anonymous = try EtcdGatewayClient(endpoints: endpoints, tls: EtcdTLS(caFile: etcd.caFile))
        await #expect(throws: EtcdError.self) { try await anonymous.get(Self.keys.node("worker")) }
        await anonymous.shutdown()
        // Another CA: etcd's certificate is not trusted.
        let other = try EtcdGatewayClient(
            endpoints: endpoints, tls: EtcdTLS(caFile: etcd.certFile, certFile: etcd.certFile, keyFile: etcd.keyFile))
        do {
            _ = try await other.get(Self.keys.node("worker"))
            Issue.record("a server certificate from an untrusted CA was accepted")
        } catch let error as EtcdError {
            #expect("\(error)".contains("no etcd endpoint answered"), "\(error)")
        }
        await other.shutdown()
        try await TestNode.with(pods: 1) { t in
            var settings = Self.settings(etcd)
            settings.caFile = etcd.caFile
            settings.certFile = etcd.certFile
            settings.keyFile = etcd.keyFile
            try await Self.withClusterAgent(t, settings) { agent, _ async throws in
                #expect(try Self.directRoutes(t)["10.0.1.0/24"] == "172.18.0.3")
                #expect(try await client.get(Self.keys.node("worker2"))?.lease != nil)
                #expect(Self.healthz(agent).1.contains("cluster: connected"))
            }
        }
        await client.shutdown()
    }

    @Test func aCompactedWatchListsAgain() async throws {
        let etcd = try EtcdServer()
        defer { etcd.stop() }
        let client = try Self.client(etcd)
        let faults = FaultyEtcdClient(try Self.client(etcd))
        try await TestNode.with(pods: 1) { t in
            try await Self.withClusterAgent(t, Self.settings(etcd), client: { _ in faults }) { agent, lines in
                faults.compactNextWatchEvent()
                try await Self.register(client, "worker", "172.18.0.3", "10.0.1.0/24", ttl: nil)
                try await AgentIntegrationTests.waitFor("the route, found by listing again") {
                    try Self.directRoutes(t)["10.0.1.0/24"] == "172.18.0.3"
                }
                #expect(lines.all.contains { $0.contains("watch history compacted; listing again") })
                #expect(faults.watchesStarted >= 2)
                // One round per compaction, not a busy loop.
                let registrations = lines.all.filter { $0.contains("msg=registered") }.count
                #expect(registrations <= 3, "\(registrations) registrations")

                // etcd's own compaction: history compacted up to now, and the next watch asks for
                // revision 1 (what a long-disconnected agent would).
                let now = try await client.range(prefix: "/").revision
                let compacted = unixHTTP(
                    etcd.clientURL(0).replacingOccurrences(of: "unix://", with: ""), "POST", "/v3/kv/compaction",
                    body: #"{"revision":"\#(now)","physical":true}"#)
                #expect(compacted.body.contains("header"), "\(compacted)")
                faults.watchNextFromTheStart()
                let started = faults.watchesStarted
                let listed = lines.all.filter { $0.contains("watch history compacted") }.count
                // Break the current watch: the member watches again (from the start), etcd says
                // compacted, the member lists again and follows a node added meanwhile.
                faults.compactNextWatchEvent()
                try await Self.register(client, "control-plane", "172.18.0.4", "10.0.0.0/24", ttl: nil)
                try await AgentIntegrationTests.waitFor("the route after etcd's compaction") {
                    try Self.directRoutes(t)["10.0.0.0/24"] == "172.18.0.4" && faults.watchesStarted >= started + 2
                }
                try await AgentIntegrationTests.waitFor("etcd's compaction answer to be handled") {
                    lines.all.contains {
                        $0.contains("watch history compacted") && $0.contains("past revision 0 (now from")
                    }
                        && lines.all.filter { $0.contains("watch history compacted") }.count >= listed + 2
                }
            }
        }
        await client.shutdown()
    }
}

/// A real etcd client with faults on command.
final class FaultyEtcdClient: EtcdClient, @unchecked Sendable {
    let real: any EtcdClient
    private let lock = NSLock()
    private var compactNext = false
    private(set) var watchesStarted = 0

    init(_ real: any EtcdClient) { self.real = real }

    /// The next watch response with events is replaced by a compaction error.
    func compactNextWatchEvent() { lock.withLock { compactNext = true } }

    /// The next watch starts from revision 1 (as an agent that was away long would): etcd's
    /// own answer when that history was compacted.
    func watchNextFromTheStart() { lock.withLock { fromStart = true } }
    private var fromStart = false

    func range(prefix: String) async throws -> EtcdSnapshot { try await real.range(prefix: prefix) }
    func get(_ key: String) async throws -> EtcdKeyValue? { try await real.get(key) }
    func put(_ key: String, value: [UInt8], lease: EtcdLease.ID?) async throws -> Int64 {
        try await real.put(key, value: value, lease: lease)
    }
    func delete(_ key: String) async throws -> Int { try await real.delete(key) }
    func put(_ key: String, value: [UInt8], ifModRevision modRevision: Int64) async throws -> Bool {
        try await real.put(key, value: value, ifModRevision: modRevision)
    }
    func claim(_ key: String, value: [UInt8], lease: EtcdLease.ID?) async throws -> EtcdKeyValue? {
        try await real.claim(key, value: value, lease: lease)
    }
    func grantLease(ttl: Int) async throws -> EtcdLease { try await real.grantLease(ttl: ttl) }
    func keepAlive(_ lease: EtcdLease.ID) async throws -> Int { try await real.keepAlive(lease) }
    func revokeLease(_ lease: EtcdLease.ID) async throws { try await real.revokeLease(lease) }
    func shutdown() async { await real.shutdown() }

    func watch(prefix: String, after revision: Int64) -> AsyncThrowingStream<EtcdWatchResponse, any Error> {
        let revision = lock.withLock {
            watchesStarted += 1
            defer { fromStart = false }
            return fromStart ? 0 : revision
        }
        let upstream = real.watch(prefix: prefix, after: revision)
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    for try await response in upstream {
                        if case .events = response,
                            lock.withLock({
                                defer { compactNext = false }
                                return compactNext
                            })
                        {
                            throw EtcdError.compacted(requested: revision, compactRevision: revision + 1)
                        }
                        continuation.yield(response)
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
