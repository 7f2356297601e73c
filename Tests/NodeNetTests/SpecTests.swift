import Foundation
import Testing

@testable import NodeNet

/// Spec decoding and validation: every problem, with its JSON path and exact message.
@Suite struct SpecTests {
    /// Which BIG TCP size nodenet's devices get, row by row: by mode, whether the kernel reports
    /// IFLA_GSO_IPV4_MAX_SIZE (6.3+), the native device's own size and its tso_max_size.
    @Test func bigTCPFollowsTheKernelAndTheNativeDevice() throws {
        func native(gso: UInt32?, tso: UInt32?) -> Link {
            var link = Link(index: 2, name: "eth0", kind: "veth", flags: [.up])
            (link.gsoIPv4MaxSize, link.groIPv4MaxSize, link.tsoMaxSize) = (gso, gso, tso)
            return link
        }
        let capable = native(gso: 65_536, tso: 524_280)
        let carrying = native(gso: 196_608, tso: 524_280)
        let small = native(gso: 65_536, tso: 65_536)
        let old = native(gso: nil, tso: nil)
        #expect(try BigTCPMode.auto.segmentSize(nativeDevice: carrying) == 196_608)
        #expect(try BigTCPMode.auto.segmentSize(nativeDevice: capable) == 65_536, "the uplink still at 64 KiB")
        #expect(try BigTCPMode.auto.segmentSize(nativeDevice: small) == 65_536)
        #expect(try BigTCPMode.auto.segmentSize(nativeDevice: old) == nil)
        #expect(try BigTCPMode.off.segmentSize(nativeDevice: capable) == 65_536)
        #expect(try BigTCPMode.off.segmentSize(nativeDevice: old) == nil)
        #expect(try BigTCPMode.on.segmentSize(nativeDevice: carrying) == 196_608)
        let notCarried = #expect(throws: NodeNetError.self) { try BigTCPMode.on.segmentSize(nativeDevice: capable) }
        #expect("\(notCarried!)".contains("eth0 has gso_ipv4_max_size 65536"), "\(notCarried!)")
        #expect(throws: NodeNetError.self) { try BigTCPMode.on.segmentSize(nativeDevice: small) }
        let noKernel = #expect(throws: NodeNetError.self) { try BigTCPMode.on.segmentSize(nativeDevice: old) }
        #expect("\(noKernel!)".contains("kernel 6.3 or later"), "\(noKernel!)")
    }

    /// Which attach modes a spec gets on which kernel, row by row (tcx came in 6.6): `auto` is
    /// tcx on the native device and clsact on pods' devices where tcx exists.
    @Test func autoPicksTcxForTheNativeDeviceFromKernel6Point6() {
        let split = AttachModes(nativeDevice: .tcx, endpoints: .clsact)
        let rows: [(AttachMode, (major: Int, minor: Int)?, AttachModes)] = [
            (.auto, (5, 10), .clsact), (.auto, (6, 5), .clsact), (.auto, (6, 6), split), (.auto, (6, 18), split),
            (.auto, (7, 0), split), (.auto, nil, .clsact), (.tcx, (5, 10), .tcx), (.clsact, (6, 18), .clsact),
        ]
        for (mode, kernel, wanted) in rows {
            #expect(mode.effective(onKernel: kernel) == wanted, "\(mode) on \(String(describing: kernel))")
        }
    }

    /// The seed's worker2, with pod namespaces that "exist" (the check is injected).
    static let worker2 = """
        {
          "apiVersion": "nodenet/v1",
          "node": { "name": "worker2", "device": "eth0", "address": "172.18.0.2", "podCIDR": "10.0.2.0/24", "routerIP": "10.0.2.184" },
          "nativeRoutingCIDR": "10.0.0.0/8",
          "autoDirectNodeRoutes": true,
          "kubeProxyReplacement": true,
          "pods": [
            { "name": "net", "namespace": "default", "netns": "pod-net", "ip": "10.0.2.32" },
            { "name": "server", "netns": "pod-server", "ip": "10.0.2.204" }
          ],
          "nodes": [
            { "name": "control-plane", "address": "172.18.0.4", "podCIDR": "10.0.0.0/24" },
            { "name": "worker", "address": "172.18.0.3", "podCIDR": "10.0.1.0/24" }
          ],
          "services": [ { "name": "default/serversvc", "type": "NodePort", "clusterIP": "10.96.18.68",
                          "ports": [ { "name": "cni", "protocol": "TCP", "port": 80, "targetPort": 80, "nodePort": 32000 } ],
                          "backends": [ { "ip": "10.0.1.15" }, { "ip": "10.0.2.204" }, { "ip": "10.0.0.142" } ] } ]
        }
        """

    static func load(
        _ text: String, existing: Set<String> = ["/var/run/netns/pod-net", "/var/run/netns/pod-server"]
    ) throws -> NodeSpec {
        try NodeSpec.load(Data(text.utf8), namespaceExists: { existing.contains($0) })
    }

    /// Applies `edit` to the worker2 document (as a JSON object) and returns the problems.
    static func problems(_ edit: (inout [String: Any]) -> Void) -> [String] {
        var object = try! JSONSerialization.jsonObject(with: Data(worker2.utf8)) as! [String: Any]
        edit(&object)
        let data = try! JSONSerialization.data(withJSONObject: object)
        do {
            _ = try NodeSpec.load(
                data,
                namespaceExists: {
                    ["/var/run/netns/pod-net", "/var/run/netns/pod-server", "/var/run/netns/pod-x"].contains($0)
                })
            return []
        } catch let e as SpecError {
            return e.problems.map(\.description)
        } catch {
            return ["unexpected \(error)"]
        }
    }

    @Test func seedWorker2IsValidWithDefaults() throws {
        let spec = try Self.load(Self.worker2)
        #expect(spec.node.routerIP == IPAddress("10.0.2.184"))
        #expect(spec.pods.map(\.id) == ["default/net", "default/server"])
        #expect(spec.nodes.count == 2 && spec.services.count == 1)
        #expect(spec.services[0].ports[0].nodePort == 32000)
        #expect(spec.stateDirectory == "/var/lib/nodenet/worker2")
        #expect(spec.nodePortRange == 30000...32767)
        #expect(spec.datapath.mode == .kernel)
    }

    /// Before: a BPF-mode spec with more other nodes than the map of node addresses holds was
    /// accepted, and its apply failed half-way with the kernel's E2BIG on the 16 384th address.
    @Test func moreNodesThanTheDatapathHoldsAreRefusedUpFront() {
        func nodes(_ count: Int) -> [[String: Any]] {
            (0..<count).map { i in
                [
                    "name": "n\(i)", "address": "172.20.\(i / 250).\(i % 250 + 1)",
                    "podCIDR": "11.\(i / 256).\(i % 256).0/24",
                ]
            }
        }
        let tooMany = Self.problems {
            $0["datapath"] = ["mode": "bpf"]
            $0["nodes"] = nodes(16_384)
        }
        #expect(
            tooMany == ["nodes: 16384 other nodes; the datapath's map of node addresses holds 16383 and this node's"])
        let enough = Self.problems {
            $0["datapath"] = ["mode": "bpf"]
            $0["nodes"] = nodes(16_383)
        }
        #expect(enough.isEmpty, "\(enough.prefix(3))")
        // The kernel datapath keeps no such map: routes only.
        #expect(Self.problems { $0["nodes"] = nodes(16_384) }.isEmpty)
    }

    /// 100 000 ClusterIP services of 3 backends each fit the datapath's maps (before: 16-bit
    /// frontend ids and 131 072 service slots refused them); more frontends than the
    /// reverse-NAT map holds are refused with the count.
    @Test func aHundredThousandServicesFitAndMoreFrontendsThanIDsAreRefused() {
        func services(_ count: Int, backends: Int) -> [[String: Any]] {
            (0..<count).map { i in
                [
                    "name": "s/s\(i)", "type": "ClusterIP",
                    "clusterIP": "10.\(96 + i / 62_500).\(i / 250 % 250).\(i % 250 + 1)",
                    "ports": [["port": 80]],
                    "backends": (0..<backends).map { k in
                        let j = backends * i + k
                        return ["ip": "10.\(j / 62_500 + 2).\(j / 250 % 250).\(j % 250 + 1)"]
                    },
                ]
            }
        }
        // At the default size (65 536 entries) 100 000 services are refused, with the size that
        // holds them; at that size they fit.
        let atDefault = Self.problems { $0["services"] = services(100_000, backends: 3) }
        let advice = "; loadBalancer.mapEntries: 524288 holds them"
        #expect(
            atDefault == [
                "services: 100000 frontends (each port's ClusterIP, node ports, external and load balancer addresses); at most 16383 fit (the reverse-NAT map: a quarter of loadBalancer.mapEntries, 65536)"
                    + advice,
                "services: 400000 service map entries (a frontend and each of its backends); the map holds loadBalancer.mapEntries, 65536"
                    + advice,
                "services: 300000 distinct backends; at most 65535 fit (the backends map: loadBalancer.mapEntries, 65536, by id from 1)"
                    + advice,
            ], "\(atDefault)")
        let fits = Self.problems {
            $0["services"] = services(100_000, backends: 3)
            $0["loadBalancer"] = ["mapEntries": 524_288]
        }
        #expect(fits.isEmpty, "\(fits.prefix(3))")
        // 1 024 services of 16 ports on a ClusterIP and 7 external addresses: 131 072 frontends.
        let tooMany = Self.problems {
            $0["loadBalancer"] = ["mapEntries": 524_288]
            $0["services"] = (0..<1024).map { i in
                [
                    "name": "s/s\(i)", "type": "ClusterIP", "clusterIP": "10.96.\(i / 250).\(i % 250 + 1)",
                    "ports": (1...16).map { ["port": $0] },
                    "externalIPs": (1...7).map { "192.0.\(i / 250 * 10 + $0).\(i % 250 + 1)" },
                ]
            }
        }
        #expect(
            tooMany == [
                "services: 131072 frontends (each port's ClusterIP, node ports, external and load balancer addresses); at most 131071 fit (the reverse-NAT map: a quarter of loadBalancer.mapEntries, 524288); loadBalancer.mapEntries: 1048576 holds them"
            ], "\(tooMany.prefix(3))")
    }

    @Test func theServiceMapSizeIsAPowerOfTwoInRange() {
        func problems(_ entries: Int) -> [String] { Self.problems { $0["loadBalancer"] = ["mapEntries": entries] } }
        #expect(problems(4096).isEmpty && problems(1_048_576).isEmpty)
        #expect(problems(100_000) == ["loadBalancer.mapEntries: 100000 is not a power of two from 4096 to 1048576"])
        #expect(problems(2048) == ["loadBalancer.mapEntries: 2048 is out of range 4096-1048576"])
        #expect(problems(2_097_152) == ["loadBalancer.mapEntries: 2097152 is out of range 4096-1048576"])
        // A spec built in Swift is held to the same.
        var spec = NodeSpec(node: LocalNode(name: "w2", device: "eth0", address: "172.18.0.2", podCIDR: "10.0.2.0/24"))
        spec.loadBalancer.mapCapacity = ServiceMapCapacity(entries: 3000)
        let error = #expect(throws: SpecError.self) { try spec.validate() }
        #expect(
            error?.problems.map(\.description)
                == ["loadBalancer.mapEntries: 3000 is not a power of two from 4096 to 1048576"])
        // What the maps are made with: services and backends that many, the maps by frontend id
        // a quarter (the ids are 1 ..< a quarter).
        let capacity = ServiceMapCapacity(entries: 8192)
        #expect(capacity.maxEntries == [.services: 8192, .backends: 16384, .revnat: 2048, .maglevIndex: 2048])
        #expect(capacity.frontendIDs == 1..<2048 && capacity.maxFrontends == 2047)
        #expect(ServiceMapCapacity.default.entries == 65536 && ServiceMapCapacity.default.isValid)
        // The smallest that holds a spec's services (none: the smallest allowed).
        #expect(ServiceMapCapacity.smallest(frontends: 0, entries: 0, backends: 0)?.entries == 4096)
        #expect(ServiceMapCapacity.smallest(frontends: 10_000, entries: 40_000, backends: 30_000)?.entries == 65536)
        #expect(ServiceMapCapacity.smallest(frontends: 16_383, entries: 1, backends: 1)?.entries == 65536)
        #expect(ServiceMapCapacity.smallest(frontends: 16_384, entries: 1, backends: 1)?.entries == 131_072)
        #expect(
            ServiceMapCapacity.smallest(frontends: 100_000, entries: 400_000, backends: 300_000)?.entries == 524_288)
        #expect(ServiceMapCapacity.smallest(frontends: 1, entries: 1_048_577, backends: 1) == nil)
    }

    /// Before: the pod list had no size cap (a spec of millions of pods was planned entry by
    /// entry); now a node holds at most what the endpoints map does.
    @Test func morePodsThanANodeHoldsAreRefused() {
        let problems = Self.problems {
            $0["pods"] = (0..<65_537).map { i in
                ["name": "p\(i)", "netns": "/proc/1/ns/net", "ip": "10.\(i / 62500).\(i / 250 % 250).\(i % 250 + 1)"]
            }
        }
        #expect(problems.contains("pods: 65537 pods; a node holds at most 65536"), "\(problems.prefix(3))")
    }

    @Test func loadBalancerSourceRangesAreCIDRsOfLoadBalancers() {
        func service(_ type: String, _ ranges: [Any]) -> [String: Any] {
            [
                "name": "default/lb", "type": type, "clusterIP": "10.96.9.9", "loadBalancerIPs": ["172.30.0.9"],
                "ports": [["port": 80, "nodePort": 31000]], "loadBalancerSourceRanges": ranges,
            ]
        }
        #expect(
            Self.problems { $0["services"] = [service("LoadBalancer", ["192.0.2.0/24", "198.51.100.7/32"])] } == [])
        #expect(
            Self.problems { $0["services"] = [service("LoadBalancer", ["192.0.2.1/24", "2001:db8::/32", 7])] } == [
                "services[0].loadBalancerSourceRanges[0]: 192.0.2.1/24 has host bits set (did you mean 192.0.2.0/24?)",
                "services[0].loadBalancerSourceRanges[1]: \"2001:db8::/32\" is not an IPv4 CIDR (like 203.0.113.0/24)",
                "services[0].loadBalancerSourceRanges[2]: 7 is not an IPv4 CIDR (like 203.0.113.0/24)",
            ])
        var nodePort = service("NodePort", ["192.0.2.0/24"])
        nodePort["loadBalancerIPs"] = nil
        #expect(
            Self.problems { $0["services"] = [nodePort] } == [
                "services[0].loadBalancerSourceRanges: only LoadBalancer services have loadBalancerSourceRanges"
            ])
    }

    @Test func healthCheckNodePortsBelongToLocalLoadBalancers() {
        func service(_ type: String, _ policy: String, _ port: Int) -> [String: Any] {
            [
                "name": "default/lb", "type": type, "clusterIP": "10.96.9.9", "externalTrafficPolicy": policy,
                "ports": [["port": 80, "nodePort": 31000]], "healthCheckNodePort": port,
            ]
        }
        #expect(Self.problems { $0["services"] = [service("LoadBalancer", "Local", 31001)] } == [])
        #expect(
            Self.problems { $0["services"] = [service("LoadBalancer", "Cluster", 31001)] } == [
                "services[0].healthCheckNodePort: only LoadBalancer services with externalTrafficPolicy Local have one"
            ])
        #expect(
            Self.problems { $0["services"] = [service("LoadBalancer", "Local", 31000)] } == [
                "services[0].healthCheckNodePort: 31000/TCP is already used by services[0].ports[0]"
            ])
        #expect(
            Self.problems { $0["services"] = [service("LoadBalancer", "Local", 8080)] } == [
                "services[0].healthCheckNodePort: 8080 is outside the NodePort range 30000-32767"
            ])
    }

    /// Device names are on running nodes: a change of the naming would orphan every endpoint at
    /// upgrade. Pinned by hand (FNV-1a 64 of `namespace/name`, first 12 hex digits), not recomputed.
    @Test func endpointDeviceNamesArePinned() {
        #expect(
            NodeNetNames.endpointDevice(for: PodSpec(name: "net", netns: "x", ip: "10.0.2.32")) == "lxc5fa86a0801be")
        #expect(
            NodeNetNames.endpointDevice(for: PodSpec(name: "web", namespace: "prod", netns: "x", ip: "10.0.2.5"))
                != "lxc5fa86a0801be")
    }

    /// Before: any existing path passed as a pod's namespace: a FIFO (which blocked the apply
    /// that opened it) or the namespace nodenet runs in (the pod's eth0 and default route would
    /// have gone into it).
    @Test func aPodsNamespaceMustBeAnotherNetworkNamespace() throws {
        let fifo = FileManager.default.temporaryDirectory.appendingPathComponent("fifo-\(getpid())-\(UUID())").path
        try #require(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        for (netns, words) in [
            (fifo, "is not a network namespace"), ("/proc/self/ns/net", "is the node's own network namespace"),
            ("/etc/hostname", "is not a network namespace"),
        ] {
            let spec = NodeSpec(
                node: LocalNode(name: "w2", device: "eth0", address: "172.18.0.2", podCIDR: "10.0.2.0/24"),
                pods: [PodSpec(name: "net", netns: netns, ip: "10.0.2.32")])
            let error = #expect(throws: SpecError.self) { try spec.validate() }
            let problems = error?.problems.map(\.description) ?? []
            #expect(
                problems.count == 1 && problems[0].hasPrefix("pods[0].netns: network namespace \(netns) \(words) ("),
                "\(problems)")
        }
    }

    @Test func routerIPDefaultsToTheFirstHost() throws {
        let spec = try Self.load(Self.worker2.replacingOccurrences(of: ", \"routerIP\": \"10.0.2.184\"", with: ""))
        #expect(spec.node.routerIP == IPAddress("10.0.2.1"))
    }

    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let edit: @Sendable (inout [String: Any]) -> Void
        let expected: [String]
        var testDescription: String { name }
    }

    static func pod(_ i: Int, _ key: String, _ value: any Sendable) -> @Sendable (inout [String: Any]) -> Void {
        { o in
            var pods = o["pods"] as! [[String: Any]]
            pods[i][key] = value
            o["pods"] = pods
        }
    }

    static func remote(_ i: Int, _ key: String, _ value: any Sendable) -> @Sendable (inout [String: Any]) -> Void {
        { o in
            var nodes = o["nodes"] as! [[String: Any]]
            nodes[i][key] = value
            o["nodes"] = nodes
        }
    }

    static func node(_ key: String, _ value: any Sendable) -> @Sendable (inout [String: Any]) -> Void {
        { o in
            var node = o["node"] as! [String: Any]
            node[key] = value
            o["node"] = node
        }
    }

    static func port(_ key: String, _ value: any Sendable) -> @Sendable (inout [String: Any]) -> Void {
        { o in
            var services = o["services"] as! [[String: Any]]
            var ports = services[0]["ports"] as! [[String: Any]]
            ports[0][key] = value
            services[0]["ports"] = ports
            o["services"] = services
        }
    }

    static let cases: [Case] = [
        Case(
            name: "unknown top-level field", edit: { $0["tunnel"] = "vxlan" },
            expected: [
                "tunnel: unknown field (known: apiVersion, node, nativeRoutingCIDR, autoDirectNodeRoutes, kubeProxyReplacement, datapath, pods, nodes, services, nodePortRange, stateDirectory, bpffsDirectory, socketLB, masquerade, cluster, loadBalancer, conntrack, ipv4BigTCP)"
            ]),
        Case(
            name: "Maglev table size not a prime",
            edit: { $0["loadBalancer"] = ["algorithm": "maglev", "maglevTableSize": 4095] },
            expected: ["loadBalancer.maglevTableSize: 4095 is not a prime (Maglev needs one, like 16381)"]),
        Case(
            name: "Maglev table size too large", edit: { $0["loadBalancer"] = ["maglevTableSize": 262139] },
            expected: ["loadBalancer.maglevTableSize: 262139 is out of range 251-131071"]),
        Case(
            name: "per-client conntrack entries beyond the outside's share",
            edit: { $0["conntrack"] = ["outsideClientEntries": 200_000] },
            expected: ["conntrack.outsideClientEntries: 200000 is out of range 0-131072"]),
        Case(
            name: "unknown BIG TCP mode", edit: { $0["ipv4BigTCP"] = "yes" },
            expected: ["ipv4BigTCP: \"yes\" is not auto, on or off"]),
        Case(
            name: "unknown conntrack field", edit: { $0["conntrack"] = ["perClient": 10] },
            expected: ["conntrack.perClient: unknown field (known: outsideClientEntries)"]),
        Case(
            name: "unknown load balancing algorithm", edit: { $0["loadBalancer"] = ["algorithm": "ring"] },
            expected: ["loadBalancer.algorithm: \"ring\" is not random or maglev"]),
        Case(
            name: "unknown pod field", edit: pod(0, "ipAddress", "10.0.2.9"),
            expected: ["pods[0].ipAddress: unknown field (known: name, namespace, netns, ip)"]),
        Case(
            name: "wrong apiVersion", edit: { $0["apiVersion"] = "cilium/v2" },
            expected: ["apiVersion: \"cilium/v2\" is not supported (use \"nodenet/v1\")"]),
        Case(name: "missing node", edit: { $0["node"] = nil }, expected: ["node: is required"]),
        Case(
            name: "missing required field", edit: node("device", NSNull()),
            expected: ["node.device: must be a string, found null"]),
        Case(
            name: "node name that could escape a path", edit: node("name", ".."),
            expected: [
                "node.name: \"..\" must be 1-63 characters of letters, digits, '-', '_' and '.', not starting with '.' or '-'"
            ]),
        Case(
            name: "bpffs directory outside bpffs", edit: { $0["bpffsDirectory"] = "/sys/fs/bpf/../../etc" },
            expected: ["bpffsDirectory: \"/sys/fs/bpf/../../etc\" must be a directory under /sys/fs/bpf/ (no '..')"]),
        Case(
            name: "malformed address", edit: node("address", "172.18.0"),
            expected: ["node.address: \"172.18.0\" is not an IPv4 address"]),
        Case(
            name: "malformed CIDR", edit: node("podCIDR", "10.0.2/24"),
            expected: ["node.podCIDR: \"10.0.2/24\" is not an IPv4 CIDR (like 10.0.2.0/24)"]),
        Case(
            name: "CIDR with host bits", edit: remote(1, "podCIDR", "10.0.1.7/24"),
            expected: ["nodes[1].podCIDR: 10.0.1.7/24 has host bits set (did you mean 10.0.1.0/24?)"]),
        Case(
            name: "wrong type", edit: { $0["autoDirectNodeRoutes"] = "yes" },
            expected: ["autoDirectNodeRoutes: must be true or false, found a string"]),
        Case(
            name: "pod IP outside the pod CIDR", edit: pod(1, "ip", "10.0.3.7"),
            expected: ["pods[1].ip: 10.0.3.7 is outside podCIDR 10.0.2.0/24"]),
        Case(
            name: "duplicate pod IP", edit: pod(1, "ip", "10.0.2.32"),
            expected: ["pods[1].ip: 10.0.2.32 is already used by pods[0] (default/net)"]),
        Case(
            name: "duplicate pod name", edit: pod(1, "name", "net"),
            expected: ["pods[1].name: default/net is already used by pods[0]"]),
        Case(
            name: "pod IP is the router IP", edit: pod(0, "ip", "10.0.2.184"),
            expected: ["pods[0].ip: 10.0.2.184 is the router IP (node.routerIP)"]),
        Case(
            name: "pod namespace missing", edit: pod(0, "netns", "pod-gone"),
            expected: ["pods[0].netns: network namespace pod-gone does not exist (/var/run/netns/pod-gone)"]),
        Case(
            name: "two pods in one namespace", edit: pod(1, "netns", "pod-net"),
            expected: ["pods[1].netns: pod-net is already the network namespace of pods[0]"]),
        Case(
            name: "router IP outside the pod CIDR", edit: node("routerIP", "10.0.5.1"),
            expected: ["node.routerIP: 10.0.5.1 is outside podCIDR 10.0.2.0/24"]),
        Case(
            name: "router IP equal to a pod IP", edit: node("routerIP", "10.0.2.204"),
            expected: ["pods[1].ip: 10.0.2.204 is the router IP (node.routerIP)"]),
        Case(
            name: "remote pod CIDRs overlap each other", edit: remote(1, "podCIDR", "10.0.0.0/23"),
            expected: ["nodes[1].podCIDR: 10.0.0.0/23 overlaps nodes[0].podCIDR 10.0.0.0/24"]),
        Case(
            name: "remote pod CIDR overlaps the local one", edit: remote(0, "podCIDR", "10.0.2.0/25"),
            expected: ["nodes[0].podCIDR: 10.0.2.0/25 overlaps node.podCIDR 10.0.2.0/24"]),
        Case(
            name: "node address inside the own pod CIDR", edit: node("address", "10.0.2.9"),
            expected: ["node.address: 10.0.2.9 is inside this node's podCIDR 10.0.2.0/24"]),
        Case(
            name: "remote node address inside a pod CIDR", edit: remote(0, "address", "10.0.1.9"),
            expected: ["nodes[0].address: 10.0.1.9 is inside nodes[1].podCIDR 10.0.1.0/24"]),
        Case(
            name: "duplicate remote node name", edit: remote(1, "name", "control-plane"),
            expected: ["nodes[1].name: control-plane is already used by nodes[0]"]),
        Case(
            name: "remote node named like this node", edit: remote(0, "name", "worker2"),
            expected: ["nodes[0].name: worker2 is already used by node.name"]),
        Case(
            name: "port out of range", edit: port("port", 70000),
            expected: ["services[0].ports[0].port: 70000 is out of range 1-65535"]),
        Case(
            name: "node port outside the NodePort range", edit: port("nodePort", 8080),
            expected: ["services[0].ports[0].nodePort: 8080 is outside the NodePort range 30000-32767"]),
        Case(
            name: "node port clash between services",
            edit: { o in
                var services = o["services"] as! [[String: Any]]
                var second = services[0]
                second["name"] = "default/other"
                second["clusterIP"] = "10.96.0.9"
                services.append(second)
                o["services"] = services
            }, expected: ["services[1].ports[0].nodePort: 32000/TCP is already used by services[0].ports[0]"]),
        Case(
            name: "node port on a ClusterIP service",
            edit: { o in
                var services = o["services"] as! [[String: Any]]
                services[0]["type"] = "ClusterIP"
                o["services"] = services
            }, expected: ["services[0].ports[0].nodePort: only NodePort and LoadBalancer services have node ports"]),
        Case(
            name: "not a number", edit: port("port", "80"),
            expected: ["services[0].ports[0].port: must be a whole number, found a string"]),
    ]

    @Test(arguments: cases) func badSpecIsRejectedWithItsPath(_ c: Case) {
        #expect(Self.problems(c.edit) == c.expected)
    }

    @Test func everyProblemIsReportedAtOnce() {
        let problems = Self.problems { o in
            Self.pod(0, "ip", "10.0.3.7")(&o)
            Self.remote(1, "podCIDR", "10.0.0.0/23")(&o)
            Self.port("nodePort", 8080)(&o)
            o["extra"] = 1
        }
        #expect(problems.count == 4)
        #expect(problems.contains("pods[0].ip: 10.0.3.7 is outside podCIDR 10.0.2.0/24"))
    }

    @Test func invalidJSONIsOneProblem() {
        #expect(throws: SpecError.self) { try Self.load("{ \"apiVersion\": ") }
    }

    @Test func endpointDeviceNamesAreStableAndShaped() {
        let pod = PodSpec(name: "net", netns: "pod-net", ip: IPAddress("10.0.2.32"))
        let name = NodeNetNames.endpointDevice(for: pod)
        #expect(
            name
                == NodeNetNames.endpointDevice(
                    for: PodSpec(name: "net", netns: "elsewhere", ip: IPAddress("10.0.2.33"))))
        #expect(name.count == 15 && NodeNetNames.isEndpointDevice(name))
        #expect(
            name
                != NodeNetNames.endpointDevice(
                    for: PodSpec(name: "net", namespace: "kube-system", netns: "x", ip: IPAddress("10.0.2.32"))))
        #expect(!NodeNetNames.isEndpointDevice("lxc_health") && !NodeNetNames.isEndpointDevice("eth0"))
    }
}

extension SpecTests {
    @Test func specRoundTripsThroughJSON() throws {
        var spec = try Self.load(Self.worker2)
        #expect(spec.conntrack.outsideClientEntries == 0, "off by default")
        let again = try NodeSpec.load(try spec.jsonData(), namespaceExists: { _ in true })
        #expect(again == spec)
        spec.conntrack.outsideClientEntries = 16_384
        let on = try NodeSpec.load(try spec.jsonData(), namespaceExists: { _ in true })
        #expect(
            on.conntrack.outsideClientEntries == 16_384 && NodeSettings(spec: on).mapValue.outside_client_max == 16_384)
        #expect(NodeSettings(spec: again).mapValue.outside_client_max == 0)
    }
}
