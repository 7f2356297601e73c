import BPF
import CNodeNetBPF
import Foundation
import TestSupport
import Testing

@testable import NodeNet
@testable import NodeNetLab

/// The Maglev table's properties, computed: balance, independence of the spec's order and of
/// the node's backend ids, and how little a backend change moves. No root needed.
struct MaglevTableTests {
    static func backends(_ n: Int, firstID: UInt32 = 1) -> [(address: BackendAddress, id: UInt32)] {
        (0..<n).map { i in
            (
                BackendAddress(address: IPAddress("10.0.\(i / 4).\(10 + i % 4)")!, port: 8080, protocol: .tcp),
                firstID + UInt32(i)
            )
        }
    }

    /// Entry i's backend address (the same on every node, whatever its ids).
    static func addresses(_ table: MaglevTable, _ backends: [(address: BackendAddress, id: UInt32)]) -> [BackendAddress]
    {
        let byID = Dictionary(uniqueKeysWithValues: backends.map { ($0.id, $0.address) })
        return table.entries.map { byID[$0]! }
    }

    @Test func everyBackendGetsItsShareWithinOneEntry() {
        for n in [1, 3, 10, 100] {
            let table = MaglevTable(size: 16381, backends: Self.backends(n))
            let counts = Dictionary(grouping: table.entries, by: { $0 }).mapValues(\.count)
            #expect(counts.count == n)
            #expect(counts.values.max()! - counts.values.min()! <= 1, "n=\(n): \(counts.values.sorted())")
        }
    }

    @Test func theSameOnEveryNodeWhateverTheOrderAndIDs() {
        let here = Self.backends(10)
        // Another node lists them in another order and numbers them otherwise.
        let there = Self.backends(10, firstID: 500).reversed().map { $0 }
        let a = MaglevTable(size: 4093, backends: here)
        let b = MaglevTable(size: 4093, backends: there)
        #expect(Self.addresses(a, here) == Self.addresses(b, there))
        #expect(a.index != b.index, "the index names the ids: a node with other ids rewrites its table")
        #expect(MaglevTable(size: 4093, backends: here.shuffled()).entries == a.entries)
    }

    /// Removing one of 10 backends: the entries of the 9 others that change (Maglev's paper:
    /// a few percent; random choice would move 9 in 10).
    @Test func removingOneOfTenMovesFewOtherEntries() {
        let all = Self.backends(10)
        let before = Self.addresses(MaglevTable(size: 16381, backends: all), all)
        for removed in [0, 4, 9] {
            var left = all
            left.remove(at: removed)
            let after = Self.addresses(MaglevTable(size: 16381, backends: left), left)
            let others = (0..<before.count).filter { before[$0] != all[removed].address }
            let moved = others.filter { before[$0] != after[$0] }.count
            #expect(Double(moved) / Double(others.count) <= 0.15, "removed \(removed): \(moved) of \(others.count)")
            #expect(!after.contains(all[removed].address))
        }
    }

    @Test func chunksCoverTheTableInOrder() {
        let table = MaglevTable(size: 2039, backends: Self.backends(3))
        #expect(table.index.chunks == 2)
        var read: [UInt32] = []
        for c in 0..<table.index.chunks {
            var chunk = table.chunk(c)
            withUnsafeBytes(of: &chunk.backend_ids) { read += Array($0.bindMemory(to: UInt32.self)) }
        }
        #expect(Array(read.prefix(2039)) == table.entries)
    }

    @Test func theSpecWritesAndReadsTheAlgorithm() throws {
        var spec = NodeSpec(
            node: LocalNode(
                name: "n1", device: "eth0", address: IPAddress("192.0.2.1"), podCIDR: IPPrefix("10.0.1.0/24")))
        spec.loadBalancer = LoadBalancerSettings(algorithm: .maglev, maglevTableSize: 4093)
        let read = try NodeSpec.load(spec.jsonData())
        #expect(read.loadBalancer == spec.loadBalancer)
    }
}

/// Maglev on the lab: a LoadBalancer UDP service with 10 backends (ports of the four pods),
/// its address routed from the external host to one node after another. The same 5-tuples
/// (one source port each) reach the same backend through every node; after one backend is
/// removed, flows of the others stay where they were (seen through a node that has no state
/// for them). Skipped without root.
@Suite(.serialized, .enabled(if: Privileges.runsBPFTests, Comment(rawValue: Privileges.skipReason)))
struct MaglevLabTests {
    static let address = "172.18.202.10"
    static let backends: [(pod: String, ip: String, ports: [Int])] = [
        ("cilium-with-replacement-w1", "10.0.1.15", [7001, 7002, 7003]),
        ("cilium-with-replacement-w2", "10.0.2.204", [7001, 7002, 7003]),
        ("cilium-with-replacement-cp", "10.0.0.142", [7001, 7002]),
        ("net", "10.0.2.32", [7001, 7002]),
    ]

    /// Answers each datagram with `name:port`; gone after 120 s at the latest.
    static let server = """
        import select, socket, sys, time
        name = sys.argv[1]
        socks = {}
        for p in sys.argv[2].split(','):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(('0.0.0.0', int(p)))
            socks[s] = p
        print('ready', flush=True)
        end = time.time() + 120
        while time.time() < end:
            ready, _, _ = select.select(list(socks), [], [], 0.5)
            for s in ready:
                data, peer = s.recvfrom(2048)
                s.sendto(('%s:%s' % (name, socks[s])).encode(), peer)
        """

    /// One flow per source port (each asked up to 3 times): which backend answered, as JSON.
    static let client = """
        import json, socket, sys
        dst, port, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        out = {}
        for sport in range(first, first + n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(('0.0.0.0', sport))
            s.settimeout(0.5)
            answer = None
            for _ in range(3):
                s.sendto(b'q', (dst, port))
                try:
                    answer = s.recv(2048).decode()
                    break
                except socket.timeout:
                    pass
            s.close()
            out[str(sport)] = answer
        print(json.dumps(out))
        """

    static func service() -> ServiceSpec {
        var svc = ServiceSpec(
            name: "default/maglev", type: .loadBalancer, clusterIP: IPAddress("10.96.9.29"),
            ports: [ServicePort(name: "udp", protocol: .udp, port: 7000, targetPort: 7001, nodePort: 31400)],
            backends: backends.flatMap { b in b.ports.map { ServiceBackend(ip: IPAddress(b.ip)!, port: $0) } })
        svc.loadBalancerIPs = [IPAddress(address)!]
        return svc
    }

    /// The flows' answers (source port → `pod:port`) with the address routed through `node`.
    static func flows(_ cluster: LabCluster, through node: String, count: Int = 200) throws -> [String: String] {
        let external = try NetlinkSocket(namespace: .named(cluster.externalNamespace))
        let gateway = try #require(cluster.nodes.first { $0.name == node }).address
        try external.replace(
            Route(
                destination: IPPrefix("172.18.202.0/24"), gateway: gateway,
                interfaceIndex: try #require(try external.link(named: "eth0")).index))
        let r = try runTool([
            "ip", "netns", "exec", cluster.externalNamespace, "python3", "-c", client, address, "7000", "41000",
            "\(count)",
        ])
        try #require(r.status == 0, "\(r.output)")
        let answers = try #require(
            try JSONSerialization.jsonObject(with: Data(r.output.utf8)) as? [String: Any], "\(r.output)")
        return answers.compactMapValues { $0 as? String }
    }

    @Test func aFlowPicksTheSameBackendOnEveryNodeAndStaysWhenAnotherLeaves() throws {
        var cluster = try ServiceLabTests.upRouted(
            "mgl", with: Self.service(), routing: IPPrefix("172.18.202.0/24"),
            configure: {
                $0.loadBalancer = LoadBalancerSettings(algorithm: .maglev, maglevTableSize: 4093)
            })
        defer { Lab.down(name: cluster.name) }
        var servers: [Process] = []
        defer {
            for s in servers where s.isRunning { kill(s.processIdentifier, SIGKILL) }
            for s in servers { s.waitUntilExit() }
        }
        for b in Self.backends {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            p.arguments = [
                "netns", "exec", cluster.namespace(ofPod: b.pod), "python3", "-c", Self.server, b.pod,
                b.ports.map(String.init).joined(separator: ","),
            ]
            let out = Pipe()
            p.standardOutput = out
            try p.run()
            servers.append(p)
            let line = out.fileHandleForReading.availableData
            try #require(String(decoding: line, as: UTF8.self).hasPrefix("ready"), "server in \(b.pod)")
        }
        // The packet path uses the tables: every frontend of the service the packet path serves
        // has one, and the settings say Maglev.
        let layout = BPFFSLayout(directory: cluster.bpffsDirectory(ofNode: "worker2"))
        let observed = try ObservedServices.read(layout)
        #expect(observed.settings?.maglevSize == 4093)
        // This service's LoadBalancer address, node address and wildcard node port; the seed
        // service's two node ports (its ClusterIP is socket LB's).
        #expect(observed.maglev.values.map(\.backends).sorted() == [3, 3, 10, 10, 10], "\(observed.maglev)")
        #expect(observed.maglev.values.allSatisfy { $0.size == 4093 })

        let row = try ServiceLabTests.services(cluster, node: "worker2").first { $0.frontend == "\(Self.address):7000" }
        #expect(row?.flags == ["Maglev (4093 entries)"], "\(row?.flags ?? [])")
        let clusterIPRow = try ServiceLabTests.services(cluster, node: "worker2").first {
            $0.frontend == "10.96.9.29:7000"
        }
        #expect(clusterIPRow?.flags == [], "socket LB serves the ClusterIP: no table")

        let viaWorker2 = try Self.flows(cluster, through: "worker2")
        let viaWorker = try Self.flows(cluster, through: "worker")
        #expect(viaWorker2.count == 200 && viaWorker.count == 200, "every flow answered")
        #expect(Set(viaWorker2.values).count >= 8, "the flows spread: \(Set(viaWorker2.values).sorted())")
        let differ = viaWorker2.keys.filter { viaWorker2[$0] != viaWorker[$0] }
        #expect(differ.isEmpty, "\(differ.count) of 200 flows chose another backend through another node")

        // One backend leaves; through the control plane (no state for these flows there), the
        // others' flows stay.
        let removed = "cilium-with-replacement-w1:7002"
        let index = try #require(cluster.services.firstIndex { $0.name == "default/maglev" })
        cluster.services[index].backends.removeAll { $0.ip == IPAddress("10.0.1.15") && $0.port == 7002 }
        try ServiceLabTests.apply(cluster)
        #expect(try ObservedServices.read(layout).maglev.values.map(\.backends).sorted() == [3, 3, 9, 9, 9])
        let after = try Self.flows(cluster, through: "control-plane")
        #expect(after.count == 200 && !after.values.contains(removed))
        let others = viaWorker2.keys.filter { viaWorker2[$0] != removed }
        let moved = others.filter { after[$0] != viaWorker2[$0] }
        #expect(
            Double(moved.count) / Double(others.count) <= 0.15,
            "\(moved.count) of \(others.count) flows of the other backends moved")

        // Back to random: the tables go.
        cluster.loadBalancer = LoadBalancerSettings()
        try ServiceLabTests.apply(cluster)
        let random = try ObservedServices.read(layout)
        #expect(random.maglev.isEmpty && random.settings?.maglevSize == 0)
        let maglevMap = try #require(
            try BPFMap<nodenet_maglev_key, nodenet_maglev_chunk>.pinned(at: layout.path(.maglev)))
        #expect(try maglevMap.keys().isEmpty)
    }
}
