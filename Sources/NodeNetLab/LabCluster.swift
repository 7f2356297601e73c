import BPF
import Foundation
import NodeNet

/// A lab cluster: a fabric standing for the docker network, nodes with their pods, an
/// external host, and services. `LabCluster.seed` is the seed walkthrough's kind cluster.
public struct LabCluster: Sendable, Equatable {
    public struct Node: Sendable, Equatable {
        public var name: String
        public var address: IPAddress
        public var podCIDR: IPPrefix
        public var routerIP: IPAddress?
        public var pods: [Pod]

        public init(name: String, address: IPAddress, podCIDR: IPPrefix, routerIP: IPAddress? = nil, pods: [Pod] = []) {
            self.name = name
            self.address = address
            self.podCIDR = podCIDR
            self.routerIP = routerIP
            self.pods = pods
        }
    }

    public struct Pod: Sendable, Equatable {
        public var name: String
        public var ip: IPAddress

        public init(name: String, ip: IPAddress) {
            self.name = name
            self.ip = ip
        }
    }

    /// Lab name: 1-12 lowercase letters and digits (no '-': lab "a" must never match lab
    /// "a-b"'s namespaces, and the name becomes part of paths that `down` removes).
    public var name: String
    public var fabricCIDR: IPPrefix
    /// The external host's address on the fabric (the docker network's gateway in kind).
    public var externalAddress: IPAddress
    public var nativeRoutingCIDR: IPPrefix
    public var nodes: [Node]
    public var services: [ServiceSpec]
    /// The nodes' datapath (`bpf` unless the cluster file says otherwise).
    public var datapathMode: DatapathMode = .bpf
    /// Socket-level load balancing on each node's lab cgroup (else per-packet translation).
    public var socketLB = true
    /// How the nodes' packet path chooses backends (`loadBalancer`, as in the node spec).
    public var loadBalancer = LoadBalancerSettings()
    /// BIG TCP for IPv4 on the nodes' devices (`ipv4BigTCP`, as in the node spec).
    public var ipv4BigTCP: BigTCPMode = .auto
    /// Where the nodes learn of each other and of the services.
    public var controlPlane: ControlPlane = .spec

    public enum ControlPlane: String, Sendable, Equatable, CaseIterable {
        /// Every node's spec lists the other nodes and the services (applied once by `lab up`).
        case spec
        /// A 3-member etcd on the fabric; every node runs `nodenetd run` in cluster mode and
        /// its spec holds only itself and its pods.
        case etcd
    }

    /// The seed's cluster: control-plane, worker, worker2 with the DaemonSet's server pods,
    /// the client pod `net`, and the NodePort service `default/serversvc`.
    public static func seed(name: String = "seed") -> LabCluster {
        LabCluster(
            name: name, fabricCIDR: IPPrefix("172.18.0.0/16"), externalAddress: IPAddress("172.18.0.1"),
            nativeRoutingCIDR: IPPrefix("10.0.0.0/8"),
            nodes: [
                Node(
                    name: "control-plane", address: IPAddress("172.18.0.4"), podCIDR: IPPrefix("10.0.0.0/24"),
                    routerIP: nil,
                    pods: [Pod(name: "cilium-with-replacement-cp", ip: IPAddress("10.0.0.142"))]),
                Node(
                    name: "worker", address: IPAddress("172.18.0.3"), podCIDR: IPPrefix("10.0.1.0/24"),
                    routerIP: IPAddress("10.0.1.152"),
                    pods: [Pod(name: "cilium-with-replacement-w1", ip: IPAddress("10.0.1.15"))]),
                Node(
                    name: "worker2", address: IPAddress("172.18.0.2"), podCIDR: IPPrefix("10.0.2.0/24"),
                    routerIP: IPAddress("10.0.2.184"),
                    pods: [
                        Pod(name: "cilium-with-replacement-w2", ip: IPAddress("10.0.2.204")),
                        Pod(name: "net", ip: IPAddress("10.0.2.32")),
                    ]),
            ],
            services: [
                ServiceSpec(
                    name: "default/serversvc", type: .nodePort, clusterIP: IPAddress("10.96.18.68"),
                    ports: [ServicePort(name: "cni", protocol: .tcp, port: 80, targetPort: 80, nodePort: 32000)],
                    backends: [
                        ServiceBackend(ip: IPAddress("10.0.1.15")), ServiceBackend(ip: IPAddress("10.0.2.204")),
                        ServiceBackend(ip: IPAddress("10.0.0.142")),
                    ])
            ])
    }

    /// Reads a cluster file (strictly, every problem reported with its path).
    public static func load(_ data: Data) throws -> LabCluster {
        let root: JSONValue
        do { root = try JSONValue.parse(data) } catch {
            throw SpecError([SpecProblem("", JSONValue.describe(error, in: data))])
        }
        var r = SpecReader()
        guard
            let top = r.object(
                root, "",
                allowed: [
                    "name", "fabric", "nativeRoutingCIDR", "nodes", "services", "socketLB", "datapathMode",
                    "controlPlane", "loadBalancer", "ipv4BigTCP",
                ])
        else {
            throw SpecError(r.problems)
        }
        let name = r.string(top, "name", "", required: false) ?? "lab"
        var fabricCIDR = IPPrefix("172.18.0.0/16")
        var external = IPAddress("172.18.0.1")
        if let fabric = r.object(top["fabric"], "fabric", allowed: ["cidr", "external"]) {
            fabricCIDR = r.cidr(fabric, "cidr", "fabric", required: false) ?? fabricCIDR
            external = r.address(fabric, "external", "fabric", required: false) ?? external
        }
        let native = r.cidr(top, "nativeRoutingCIDR", "", required: false) ?? IPPrefix("10.0.0.0/8")
        var nodes: [Node] = []
        for (i, item) in r.array(top, "nodes", "").enumerated() {
            let path = "nodes[\(i)]"
            guard let f = r.object(item, path, allowed: ["name", "address", "podCIDR", "routerIP", "pods"]) else {
                continue
            }
            var pods: [Pod] = []
            for (j, p) in r.array(f, "pods", path).enumerated() {
                let pp = "\(path).pods[\(j)]"
                guard let pf = r.object(p, pp, allowed: ["name", "ip"]) else { continue }
                if let n = r.string(pf, "name", pp, required: true), let ip = r.address(pf, "ip", pp, required: true) {
                    pods.append(Pod(name: n, ip: ip))
                }
            }
            if let n = r.string(f, "name", path, required: true), let a = r.address(f, "address", path, required: true),
                let c = r.cidr(f, "podCIDR", path, required: true)
            {
                nodes.append(
                    Node(
                        name: n, address: a, podCIDR: c, routerIP: r.address(f, "routerIP", path, required: false),
                        pods: pods))
            }
        }
        if nodes.isEmpty { r.problem("nodes", "needs at least one node") }
        let services = r.readServices(top, "")
        var cluster = LabCluster(
            name: name, fabricCIDR: fabricCIDR, externalAddress: external, nativeRoutingCIDR: native, nodes: nodes,
            services: services)
        cluster.socketLB = r.bool(top, "socketLB", "") ?? true
        cluster.loadBalancer = r.readLoadBalancer(top["loadBalancer"])
        cluster.ipv4BigTCP = r.choice(top, "ipv4BigTCP", "", default: BigTCPMode.auto)
        if let plane = r.string(top, "controlPlane", "", required: false) {
            if let p = ControlPlane(rawValue: plane) {
                cluster.controlPlane = p
            } else {
                r.problem("controlPlane", "\"\(plane)\" is not spec or etcd")
            }
        }
        if let mode = r.string(top, "datapathMode", "", required: false) {
            if let m = DatapathMode(rawValue: mode) {
                cluster.datapathMode = m
            } else {
                r.problem("datapathMode", "\"\(mode)\" is not bpf or kernel")
            }
        }
        let problems = r.problems + cluster.problems()
        if !problems.isEmpty { throw SpecError(problems) }
        return cluster
    }

    /// Lab-level checks; each node's spec is validated again by apply.
    func problems() -> [SpecProblem] {
        var p: [SpecProblem] = []
        if !LabCluster.isValidName(name) {
            p.append(SpecProblem("name", "\"\(name)\" must be 1-12 characters of a-z and 0-9"))
        }
        if !fabricCIDR.contains(externalAddress) {
            p.append(SpecProblem("fabric.external", "\(externalAddress) is outside \(fabricCIDR)"))
        }
        var seen: [String: String] = [:]
        var addresses: Set<IPAddress> = [externalAddress]
        if controlPlane == .etcd {
            for member in etcdMembers { addresses.insert(member) }
        }
        for (i, node) in nodes.enumerated() {
            if !LabCluster.isValidObjectName(node.name) {
                p.append(
                    SpecProblem(
                        "nodes[\(i)].name",
                        "\"\(node.name)\" must be 1-40 characters of a-z, 0-9 and '-', starting with a letter or digit")
                )
            }
            if !fabricCIDR.contains(node.address) {
                p.append(SpecProblem("nodes[\(i)].address", "\(node.address) is outside the fabric \(fabricCIDR)"))
            }
            if !addresses.insert(node.address).inserted {
                p.append(SpecProblem("nodes[\(i)].address", "\(node.address) is already used"))
            }
            for (j, pod) in node.pods.enumerated() {
                if let first = seen[pod.name] {
                    p.append(SpecProblem("nodes[\(i)].pods[\(j)].name", "\(pod.name) is already used by \(first)"))
                }
                seen[pod.name] = "nodes[\(i)].pods[\(j)]"
                if !LabCluster.isValidObjectName(pod.name) {
                    p.append(
                        SpecProblem(
                            "nodes[\(i)].pods[\(j)].name",
                            "\"\(pod.name)\" must be 1-40 characters of a-z, 0-9 and '-', starting with a letter or digit"
                        ))
                }
            }
        }
        return p
    }

    public static func isValidName(_ name: String) -> Bool {
        (1...12).contains(name.count)
            && name.allSatisfy { ($0.isLowercase && $0.isASCII) || ($0.isNumber && $0.isASCII) }
    }

    static func isValidObjectName(_ name: String) -> Bool {
        (1...40).contains(name.count) && name.first != "-"
            && name.allSatisfy { ($0.isLowercase && $0.isASCII) || ($0.isNumber && $0.isASCII) || $0 == "-" }
    }

    // MARK: Names of what the lab creates

    var prefix: String { "nnl-\(name)-" }
    public var fabricNamespace: String { prefix + "fabric" }
    public var externalNamespace: String { prefix + "external" }
    public func namespace(ofNode node: String) -> String { prefix + "n-" + node }
    public func namespace(ofPod pod: String) -> String { prefix + "p-" + pod }
    public var runDirectory: String { "/run/nodenet/lab/\(name)" }
    public func stateDirectory(ofNode node: String) -> String { "\(runDirectory)/\(node)/state" }
    public func bpffsDirectory(ofNode node: String) -> String { "\(BPFFS.root)/nodenet-lab/\(name)/\(node)" }
    public func cgroupPath(ofNode node: String) -> String? { CgroupV2.root.map { "\($0)/nodenet-lab/\(name)/\(node)" } }

    // MARK: The etcd control plane

    /// The etcd members' addresses on the fabric: the last three below its broadcast address.
    public var etcdMembers: [IPAddress] {
        let base = fabricCIDR.network.address.ipv4Value ?? 0
        let broadcast = base | (UInt32.max >> UInt32(fabricCIDR.length))
        return (0..<3).map { IPAddress(ipv4: broadcast - 4 + UInt32($0)) }
    }
    public func etcdNamespace(_ member: Int) -> String { prefix + "etcd\(member)" }
    public func etcdDirectory(_ member: Int) -> String { "\(runDirectory)/etcd\(member)" }
    /// The members' client URLs on the fabric (what the nodes' agents use).
    public var etcdEndpoints: [String] { etcdMembers.map { "http://\($0):2379" } }
    /// Member `i`'s unix socket in the lab's run directory (what the lab's own commands use
    /// from the root namespace).
    public func etcdSocket(_ member: Int) -> String { "\(etcdDirectory(member))/client:2379" }
    public var etcdCgroup: String? { CgroupV2.root.map { "\($0)/nodenet-lab/\(name)/etcd" } }
    /// The cluster settings of the nodes' specs: a short lease and grace, so the demo sees a
    /// node leave within seconds.
    public var clusterSettings: ClusterSettings {
        ClusterSettings(endpoints: etcdEndpoints, prefix: "/nodenet/lab-\(name)", leaseTTL: 3, nodeDeleteGrace: 3)
    }

    /// The node spec the lab applies to `node`: its pods, every other node, all services.
    public func spec(forNode nodeName: String) -> NodeSpec? {
        guard let node = nodes.first(where: { $0.name == nodeName }) else { return nil }
        let etcd = controlPlane == .etcd
        var spec = NodeSpec(
            node: LocalNode(
                name: node.name, device: "eth0", address: node.address, podCIDR: node.podCIDR, routerIP: node.routerIP),
            nativeRoutingCIDR: nativeRoutingCIDR, datapath: DatapathSettings(mode: datapathMode),
            pods: node.pods.map { PodSpec(name: $0.name, netns: namespace(ofPod: $0.name), ip: $0.ip) },
            nodes: etcd
                ? []
                : nodes.filter { $0.name != nodeName }.map {
                    RemoteNode(name: $0.name, address: $0.address, podCIDR: $0.podCIDR)
                },
            services: etcd ? [] : services, stateDirectory: stateDirectory(ofNode: node.name),
            bpffsDirectory: bpffsDirectory(ofNode: node.name),
            socketLB: SocketLBSettings(cgroup: socketLB ? cgroupPath(ofNode: node.name) : nil),
            cluster: etcd ? clusterSettings : nil)
        spec.loadBalancer = loadBalancer
        spec.ipv4BigTCP = ipv4BigTCP
        return spec
    }

    /// Which node a pod runs on.
    public func node(ofPod pod: String) -> Node? { nodes.first { $0.pods.contains { $0.name == pod } } }
}
