import Foundation
import Testing

@testable import NodeNet

/// Cluster mode without etcd or root: the spec's cluster section, the key layout, records
/// from a hostile store, the view's grace, and the merged spec.
struct ClusterTests {
    let keys = ClusterKeys(prefix: "/nodenet/v1")

    func node(_ name: String, _ address: String, _ cidr: String) -> [UInt8] {
        ClusterNodeRecord(name: name, address: IPAddress(address)!, podCIDR: IPPrefix(cidr)!, bootID: "b", version: "v")
            .encoded()
    }

    func localSpec(cluster: ClusterSettings? = ClusterSettings(endpoints: ["http://127.0.0.1:2379"])) -> NodeSpec {
        NodeSpec(
            node: LocalNode(
                name: "worker2", device: "eth0", address: IPAddress("172.18.0.2"), podCIDR: IPPrefix("10.0.2.0/24")),
            nativeRoutingCIDR: IPPrefix("10.0.0.0/8"), cluster: cluster)
    }

    func view(_ kvs: [(String, [UInt8])], grace: Duration = .seconds(30)) -> ClusterView {
        var view = ClusterView(keys: keys, grace: grace)
        view.replace(with: kvs.map { ($0.0, $0.1) }, revision: 7, now: .now, initial: true)
        return view
    }

    @Test func theClusterSectionIsReadAndChecked() throws {
        let good = """
            {"apiVersion": "nodenet/v1",
             "node": {"name": "w", "device": "eth0", "address": "172.18.0.2", "podCIDR": "10.0.2.0/24"},
             "cluster": {"etcd": {"endpoints": ["https://10.1.0.1:2379", "unix:///run/etcd.sock"],
                                  "caFile": "/etc/nodenet/ca.pem", "certFile": "/etc/nodenet/c.pem", "keyFile": "/etc/nodenet/k.pem"},
                         "leaseTTL": 9, "nodeDeleteGrace": 12}}
            """
        let spec = try NodeSpec.load(Data(good.utf8), namespaceExists: { _ in true })
        let cluster = try #require(spec.cluster)
        #expect(cluster.endpoints == ["https://10.1.0.1:2379", "unix:///run/etcd.sock"])
        #expect(cluster.prefix == "/nodenet/v1" && cluster.leaseTTL == 9 && cluster.nodeDeleteGrace == 12)
        #expect(cluster.caFile == "/etc/nodenet/ca.pem" && cluster.keyFile == "/etc/nodenet/k.pem")
        // Written and read back.
        #expect(try NodeSpec.load(spec.jsonData(), namespaceExists: { _ in true }).cluster == cluster)

        let bad = """
            {"apiVersion": "nodenet/v1",
             "node": {"name": "w", "device": "eth0", "address": "172.18.0.2", "podCIDR": "10.0.2.0/24"},
             "nodes": [{"name": "x", "address": "172.18.0.3", "podCIDR": "10.0.1.0/24"}],
             "cluster": {"etcd": {"endpoints": ["ftp://x", "http://a:99999", "unix://relative"], "certFile": "c.pem"},
                         "prefix": "nodenet/", "leaseTTL": 1}}
            """
        let error = try #require(throws: SpecError.self) {
            try NodeSpec.load(Data(bad.utf8), namespaceExists: { _ in true })
        }
        let paths = error.problems.map(\.path)
        #expect(paths.contains("nodes"), "\(error)")
        #expect(paths.contains("cluster.etcd.endpoints[0]") && paths.contains("cluster.etcd.endpoints[1]"))
        #expect(paths.contains("cluster.etcd.endpoints[2]") && paths.contains("cluster.etcd.certFile"))
        #expect(
            paths.contains("cluster.etcd") && paths.contains("cluster.prefix") && paths.contains("cluster.leaseTTL"))
    }

    @Test func keysHaveOneLayout() {
        #expect(keys.node("w1") == "/nodenet/v1/nodes/w1")
        #expect(keys.cidr(IPPrefix("10.0.2.0/24")) == "/nodenet/v1/cidrs/10.0.2.0-24")
        #expect(keys.endpoint(node: "w1", pod: "default/web") == "/nodenet/v1/endpoints/w1/default/web")
        #expect(keys.entry("/nodenet/v1/nodes/w1") == .node("w1"))
        #expect(keys.entry("/nodenet/v1/endpoints/w1/default/web") == .endpoint(node: "w1", pod: "default/web"))
        #expect(keys.entry("/nodenet/v1/services/web") == .service("web"))
        #expect(keys.entry("/nodenet/v1/nodes/w1/extra") == nil)
        #expect(keys.entry("/nodenet/v1/nodes/") == nil)
        #expect(keys.entry("/other/nodes/w1") == nil)
    }

    @Test func hostileRecordsAreLeftOutWithTheirReason() {
        let v = view([
            (keys.node("good"), node("good", "172.18.0.3", "10.0.1.0/24")),
            (keys.node("liar"), node("someone-else", "172.18.0.4", "10.0.3.0/24")),
            (keys.node("garbage"), Array("{not json".utf8)),
            (keys.node("extra"), Array(#"{"name":"extra","address":"1.2.3.4","podCIDR":"10.9.0.0/24","x":1}"#.utf8)),
            (keys.node("../evil"), node("../evil", "172.18.0.9", "10.0.9.0/24")),
            (keys.node("huge"), [UInt8](repeating: 32, count: 100_000)),
            (
                keys.endpoint(node: "good", pod: "default/a"),
                Array(#"{"pod":"default/b","ip":"10.0.1.5","node":"good"}"#.utf8)
            ),
            ("/nodenet/v1/unknown/thing", [1, 2, 3]),
        ])
        #expect(Set(v.nodes.keys) == ["good"])
        #expect(v.rejected[keys.node("liar")]?.contains("names node someone-else") == true)
        #expect(v.rejected[keys.node("garbage")] != nil)
        #expect(v.rejected[keys.node("extra")]?.contains("unknown field") == true)
        #expect(v.rejected[keys.node("huge")]?.contains("at most") == true)
        #expect(v.rejected[keys.endpoint(node: "good", pod: "default/a")] != nil)
        #expect(v.rejected["/nodenet/v1/unknown/thing"] == "not a key nodenet writes")
        // "../evil" is not a key of the layout at all (a name with '/').
        #expect(v.rejected[keys.node("../evil")] == "not a key nodenet writes")
        let merged = localSpec().merging(v)
        #expect(merged.spec.nodes.map(\.name) == ["good"])
        #expect(merged.skipped.count == v.rejected.count)
    }

    @Test func departedNodesStayForTheirGraceThenGo() {
        var v = view([
            (keys.node("a"), node("a", "172.18.0.3", "10.0.1.0/24")),
            (
                keys.endpoint(node: "a", pod: "default/web"),
                ClusterEndpointRecord(pod: "default/web", ip: IPAddress("10.0.1.7"), node: "a").encoded()
            ),
        ])
        let start = ContinuousClock.now
        // A lease expiry: the node and its pods go in one revision (pods listed first).
        v.apply(
            [.delete(key: keys.endpoint(node: "a", pod: "default/web")), .delete(key: keys.node("a"))], revision: 8,
            now: start)
        #expect(v.nodes["a"] == nil && v.departed["a"] != nil)
        #expect(v.pods(of: "a")["default/web"]?.ip == IPAddress("10.0.1.7"), "the pod left before its node's grace")
        #expect(localSpec().merging(v).spec.nodes.map(\.name) == ["a"])
        let early = v.expire(now: start + .seconds(29))
        #expect(!early)
        #expect(v.nextExpiry == start + .seconds(30))
        // Back within the grace: registered again, nothing departed.
        var back = v
        back.apply([.put(key: keys.node("a"), value: node("a", "172.18.0.3", "10.0.1.0/24"))], revision: 9, now: start)
        #expect(back.departed.isEmpty && back.nodes["a"] != nil)
        // Not back: gone with its pods after the grace.
        let expired = v.expire(now: start + .seconds(30))
        #expect(expired)
        #expect(v.departed.isEmpty && v.pods(of: "a").isEmpty)
        #expect(localSpec().merging(v).spec.nodes.isEmpty)
    }

    /// Review findings: a record rewritten into one that fails the checks is not kept at its old
    /// value (a listing would not see it either); a node back within its grace publishes its
    /// pods anew (the ones it had are not kept); pods resolve only through nodes that were taken,
    /// inside their pod CIDR; a pod CIDR outside nativeRoutingCIDR is left out.
    @Test func watchAndListingAgreeAndPodsResolveOnlyThroughTakenNodes() {
        var v = view([
            (keys.node("a"), node("a", "172.18.0.3", "10.0.1.0/24")),
            (
                keys.endpoint(node: "a", pod: "default/old"),
                ClusterEndpointRecord(pod: "default/old", ip: IPAddress("10.0.1.7"), node: "a").encoded()
            ),
            (
                keys.service("web"),
                ClusterServiceRecord.encoded(
                    ServiceSpec(
                        name: "web", type: .clusterIP, clusterIP: IPAddress("10.96.0.1"),
                        ports: [ServicePort(port: 80)], backends: []))
            ),
        ])
        v.apply([.put(key: keys.service("web"), value: Array("{broken".utf8))], revision: 8, now: .now)
        #expect(v.services["web"] == nil && v.rejected[keys.service("web")] != nil)
        // a leaves (lease expiry: node and pods in one revision) and comes back within its grace.
        v.apply(
            [.delete(key: keys.endpoint(node: "a", pod: "default/old")), .delete(key: keys.node("a"))], revision: 9,
            now: .now)
        #expect(v.pods(of: "a")["default/old"] != nil)
        v.apply([.put(key: keys.node("a"), value: node("a", "172.18.0.3", "10.0.1.0/24"))], revision: 10, now: .now)
        #expect(v.pods(of: "a").isEmpty, "the pods a had before it left")
        // Pods published by a node that was left out, or outside their node's CIDR: not backends.
        let service = ServiceSpec(
            name: "api", type: .clusterIP, clusterIP: IPAddress("10.96.0.2"), ports: [ServicePort(port: 80)],
            backends: [],
            podBackends: [PodBackend(pod: "default/x"), PodBackend(pod: "default/y"), PodBackend(pod: "default/z")])
        var w = view([
            (keys.node("a"), node("a", "172.18.0.3", "10.0.1.0/24")),
            (keys.node("b"), node("b", "172.18.0.4", "10.0.1.0/23")),  // overlaps a: left out
            (keys.node("far"), node("far", "172.18.0.5", "192.168.7.0/24")),  // outside nativeRoutingCIDR
            (
                keys.endpoint(node: "a", pod: "default/x"),
                ClusterEndpointRecord(pod: "default/x", ip: IPAddress("10.0.1.9"), node: "a").encoded()
            ),
            (
                keys.endpoint(node: "a", pod: "default/y"),
                ClusterEndpointRecord(pod: "default/y", ip: IPAddress("10.0.9.9"), node: "a").encoded()
            ),
            (
                keys.endpoint(node: "b", pod: "default/z"),
                ClusterEndpointRecord(pod: "default/z", ip: IPAddress("10.0.0.9"), node: "b").encoded()
            ),
            (keys.service("api"), ClusterServiceRecord.encoded(service)),
        ])
        w.apply([], revision: 8, now: .now)
        let merged = localSpec().merging(w)
        #expect(merged.spec.nodes.map(\.name) == ["a"])
        #expect(
            merged.skipped.contains { $0.hasPrefix("node far: podCIDR 192.168.7.0/24 is outside nativeRoutingCIDR") })
        #expect(merged.spec.services.first?.backends.map(\.ip) == [IPAddress("10.0.1.9")])
    }

    @Test func aListingAfterAnOutageKeepsTheGraceButTheFirstDoesNot() {
        var v = view([(keys.node("a"), node("a", "172.18.0.3", "10.0.1.0/24"))])
        v.replace(with: [], revision: 9, now: .now, initial: false)
        #expect(v.departed["a"] != nil)
        var fresh = view([(keys.node("a"), node("a", "172.18.0.3", "10.0.1.0/24"))])
        fresh.replace(with: [], revision: 9, now: .now, initial: true)
        #expect(fresh.departed.isEmpty && fresh.nodes.isEmpty)
    }

    @Test func clashingNodesAndServicesAreLeftOutTheSameWayOnEveryNode() throws {
        let service = ServiceSpec(
            name: "web", type: .nodePort, clusterIP: IPAddress("10.96.0.10"),
            ports: [ServicePort(port: 80, targetPort: 8080, nodePort: 30080)],
            backends: [ServiceBackend(ip: IPAddress("10.0.1.9")), ServiceBackend(ip: IPAddress("10.0.77.1"))],
            podBackends: [PodBackend(pod: "default/web-1"), PodBackend(pod: "default/gone")])
        var clash = service
        clash.name = "web2"
        clash.podBackends = []
        let v = view([
            (keys.node("a"), node("a", "172.18.0.3", "10.0.1.0/24")),
            (keys.node("b"), node("b", "172.18.0.4", "10.0.1.128/25")),  // overlaps a
            (keys.node("c"), node("c", "172.18.0.2", "10.0.5.0/24")),  // this node's address
            (keys.node("worker2"), node("worker2", "172.18.0.2", "10.0.2.0/24")),  // itself
            (
                keys.endpoint(node: "a", pod: "default/web-1"),
                ClusterEndpointRecord(pod: "default/web-1", ip: IPAddress("10.0.1.20"), node: "a").encoded()
            ),
            (keys.service("web"), ClusterServiceRecord.encoded(service)),
            (keys.service("web2"), ClusterServiceRecord.encoded(clash)),  // same clusterIP and nodePort
        ])
        let merged = localSpec().merging(v)
        #expect(merged.spec.nodes.map(\.name) == ["a"])
        #expect(merged.skipped.contains { $0.hasPrefix("node b: podCIDR 10.0.1.128/25 overlaps a's") })
        #expect(merged.skipped.contains { $0.hasPrefix("node c: address 172.18.0.2") })
        #expect(merged.spec.services.map(\.name) == ["web"], "\(merged.skipped)")
        #expect(merged.skipped.contains { $0.hasPrefix("service web2:") })
        // The pod backend resolved; the unknown pod and the address on no node left out.
        #expect(merged.spec.services[0].backends.map(\.ip) == [IPAddress("10.0.1.9"), IPAddress("10.0.1.20")])
        #expect(merged.spec.services[0].podBackends.isEmpty)
        // Validated as a whole (the controller does not check it again).
        #expect(merged.spec.isValidated)
        try merged.spec.validate(namespaceExists: { _ in true })
    }

    @Test func clusterServiceFilesUseTheSpecsRules() {
        let file = Array(
            #"{"name":"web","clusterIP":"10.96.0.10","ports":[{"port":80}],"backends":[{"pod":"default/web-1","port":8080},{"ip":"10.0.1.2"}]}"#
                .utf8)
        let service = try? ClusterServiceRecord.decode(file).get()
        #expect(service?.podBackends == [PodBackend(pod: "default/web-1", port: 8080)])
        #expect(service?.backends == [ServiceBackend(ip: IPAddress("10.0.1.2"))])
        // Round trip through etcd's bytes.
        #expect(service.flatMap { try? ClusterServiceRecord.decode(ClusterServiceRecord.encoded($0)).get() } == service)
        let both = Array(
            #"{"name":"w","clusterIP":"10.96.0.1","ports":[{"port":80}],"backends":[{"pod":"a/b","ip":"10.0.0.1"}]}"#
                .utf8)
        #expect(throws: ClusterRecordError.self) { try ClusterServiceRecord.decode(both).get() }
        let badPod = Array(
            #"{"name":"w","clusterIP":"10.96.0.1","ports":[{"port":80}],"backends":[{"pod":"../x"}]}"#.utf8)
        #expect(throws: ClusterRecordError.self) { try ClusterServiceRecord.decode(badPod).get() }
        // A node spec's own services may not name pods.
        let spec = #"""
            {"apiVersion":"nodenet/v1","node":{"name":"w","device":"eth0","address":"172.18.0.2","podCIDR":"10.0.2.0/24"},
             "services":[{"name":"w","clusterIP":"10.96.0.1","ports":[{"port":80}],"backends":[{"pod":"a/b"}]}]}
            """#
        #expect(throws: SpecError.self) { try NodeSpec.load(Data(spec.utf8), namespaceExists: { _ in true }) }
        // Checked together: one clusterIP and one node port each.
        let a = ServiceSpec(
            name: "a", type: .nodePort, clusterIP: IPAddress("10.96.0.1"),
            ports: [ServicePort(port: 80, nodePort: 30001)], backends: [])
        var b = a
        b.name = "b"
        let problems = ClusterServiceRecord.problems([a, b], paths: ["services[0]", "cluster service b"], nodes: [])
        #expect(problems.map(\.path).contains("cluster service b.clusterIP"))
    }

    /// More cluster services than a node's service maps hold: the last ones by name are left out
    /// at once, in one skipped line that says the size holding them all (before, one service a
    /// validation of the whole spec: hours at tens of thousands). Cluster records themselves are
    /// checked against the largest size: each node says what it takes.
    @Test func clusterServicesBeyondANodesMapsAreCutOnce() throws {
        let services = (0..<1100).map { i in
            ServiceSpec(
                name: String(format: "svc%04d", i), type: .clusterIP,
                clusterIP: IPAddress(ipv4: 0x0A60_0000 + UInt32(i) + 1),
                ports: [ServicePort(port: 80)], backends: [ServiceBackend(ip: IPAddress("10.0.1.9"))])
        }
        let v = view(services.map { (keys.service($0.name), ClusterServiceRecord.encoded($0)) })
        var small = localSpec()
        small.loadBalancer.mapCapacity = ServiceMapCapacity(entries: 4096)  // 1 023 frontends
        let merged = small.merging(v)
        #expect(merged.spec.services.count == 1023 && merged.spec.services.last?.name == "svc1022")
        #expect(
            merged.skipped == [
                "services: 77 of 1100 (svc1023 and after, by name) do not fit this node's service maps (loadBalancer.mapEntries 4096: 1023 frontends, 4096 entries and backends); loadBalancer.mapEntries: 8192 holds them all"
            ], "\(merged.skipped)")
        #expect(merged.spec.isValidated)
        #expect(localSpec().merging(v).spec.services.count == 1100, "the default size holds them")
        #expect(ClusterServiceRecord.problems(services, paths: services.map(\.name), nodes: []).isEmpty)
    }

    @Test func theCacheRoundTripsAndADamagedOneIsSetAside() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nnt-cache-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let v = view([
            (keys.node("a"), node("a", "172.18.0.3", "10.0.1.0/24")),
            (
                keys.endpoint(node: "a", pod: "default/web"),
                ClusterEndpointRecord(pod: "default/web", ip: IPAddress("10.0.1.7"), node: "a").encoded()
            ),
        ])
        try ClusterCache.save(v, stateDirectory: directory)
        let loaded = ClusterCache.load(keys: keys, grace: .seconds(30), stateDirectory: directory)
        #expect(loaded.warning == nil)
        #expect(loaded.view?.nodes == v.nodes && loaded.view?.revision == 7)
        #expect(loaded.view?.pods(of: "a") == v.pods(of: "a") && !v.pods(of: "a").isEmpty)
        try Data("[1,2".utf8).write(to: URL(fileURLWithPath: ClusterCache.path(stateDirectory: directory)))
        let damaged = ClusterCache.load(keys: keys, grace: .seconds(30), stateDirectory: directory)
        #expect(damaged.view == nil && damaged.warning?.contains("moved aside") == true)
        #expect(!FileManager.default.fileExists(atPath: ClusterCache.path(stateDirectory: directory)))
        #expect(ClusterCache.load(keys: keys, grace: .seconds(30), stateDirectory: directory).warning == nil)
    }
}
