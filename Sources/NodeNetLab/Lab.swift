import Foundation

#if canImport(Glibc)
    import Glibc
    import BPF
    import NodeNet
#endif

/// A kind-like cluster on one machine: a bridge in its own namespace as the fabric, one
/// namespace per node (eth0 on the fabric), one per pod, an external host, and each node
/// configured by the normal apply. Nothing is created outside the lab's own namespaces,
/// cgroups, bpffs and run directories.
public struct Lab: Sendable {
    public let cluster: LabCluster

    public init(cluster: LabCluster) { self.cluster = cluster }

    /// Whether any namespace of a lab called `name` exists.
    public static func exists(_ name: String) -> Bool {
        LabCluster.isValidName(name) && NetworkNamespace.list().contains { $0.hasPrefix("nnl-\(name)-") }
    }

    /// Names of labs that have namespaces on this machine.
    public static func running() -> [String] {
        let names = NetworkNamespace.list().filter { $0.hasPrefix("nnl-") && $0.hasSuffix("-fabric") }
        return names.map { String($0.dropFirst(4).dropLast(7)) }.sorted()
    }

    /// Builds the topology and applies every node's spec. Returns the apply reports by node.
    /// On failure, what was created stays for `down` to remove (the caller decides).
    @discardableResult
    public func up(cancelled: () -> Bool = { false }) throws -> [String: ApplyReport] {
        func checkCancelled() throws { if cancelled() { throw CancellationError() } }
        let problems = cluster.problems()
        guard problems.isEmpty else { throw SpecError(problems) }
        guard !Lab.exists(cluster.name) else {
            throw NodeNetError.conflict(
                "lab \(cluster.name) is already up (run `nodenetd lab down --name \(cluster.name)` first)")
        }
        try Paths.createDirectory(cluster.runDirectory, what: "lab run directory")
        try cluster.jsonData().write(to: URL(fileURLWithPath: "\(cluster.runDirectory)/cluster.json"))
        try NetworkNamespace.create(cluster.fabricNamespace)
        let fabric = try NetlinkSocket(namespace: .named(cluster.fabricNamespace))
        try fabric.setLink(named: "lo", LinkChange(up: true))
        try fabric.add(LinkConfiguration(name: "br0", kind: .bridge, up: true))

        try NetworkNamespace.create(cluster.externalNamespace)
        _ = try attach(cluster.externalNamespace, port: "vext", address: cluster.externalAddress)
        if cluster.controlPlane == .etcd {
            // The etcd members: a host each on the fabric (the caller starts etcd in them).
            for (i, address) in cluster.etcdMembers.enumerated() {
                try NetworkNamespace.create(cluster.etcdNamespace(i))
                _ = try attach(cluster.etcdNamespace(i), port: "ve\(i)", address: address)
                try Paths.createPrivateDirectory(cluster.etcdDirectory(i), what: "etcd member directory")
            }
            if let cgroup = cluster.etcdCgroup { try CgroupV2.create(cgroup) }
        }
        for (i, node) in cluster.nodes.enumerated() {
            try checkCancelled()
            try build(node, port: "vn\(i)")
        }
        var reports: [String: ApplyReport] = [:]
        for node in cluster.nodes {
            try checkCancelled()
            reports[node.name] = try apply(node.name)
        }
        return reports
    }

    /// Adds `node` to this running lab: its namespaces on the fabric, its spec applied (in
    /// etcd mode the caller starts its agent, which makes it known to the others). Returns the
    /// lab's cluster with the node.
    public func join(_ node: LabCluster.Node) throws -> LabCluster {
        var grown = cluster
        grown.nodes.append(node)
        let problems = grown.problems()
        guard problems.isEmpty else { throw SpecError(problems) }
        try Lab(cluster: grown).build(node, port: "vn\(grown.nodes.count - 1)")
        try Lab(cluster: grown).apply(node.name)
        try grown.jsonData().write(to: URL(fileURLWithPath: "\(grown.runDirectory)/cluster.json"))
        return grown
    }

    /// A host on the fabric: `eth0` in `namespace`, its peer `port` on the bridge.
    private func attach(_ namespace: String, port: String, address: IPAddress) throws -> NetlinkSocket {
        let fabric = try NetlinkSocket(namespace: .named(cluster.fabricNamespace))
        let bridge = try fabric.link(named: "br0")!.index
        try fabric.add(
            LinkConfiguration(
                name: port, kind: .veth(peer: VethPeer(name: "eth0", namespace: .named(namespace))), mtu: 1500,
                masterIndex: bridge))
        try fabric.setLink(named: port, LinkChange(up: true))
        let s = try NetlinkSocket(namespace: .named(namespace))
        try s.setLink(named: "lo", LinkChange(up: true))
        try s.setLink(named: "eth0", LinkChange(up: true))
        try s.add(
            InterfaceAddress(
                interfaceIndex: try s.link(named: "eth0")!.index,
                prefix: IPPrefix(address, length: Int(cluster.fabricCIDR.length))!))
        return s
    }

    /// A node's namespace on the fabric, its pods' namespaces, state, bpffs and cgroup directories.
    private func build(_ node: LabCluster.Node, port: String) throws {
        let ns = cluster.namespace(ofNode: node.name)
        try NetworkNamespace.create(ns)
        let s = try attach(ns, port: port, address: node.address)
        // The fabric's gateway, as the docker network gives kind nodes.
        try s.add(
            Route(
                destination: "0.0.0.0/0", gateway: cluster.externalAddress,
                interfaceIndex: try s.link(named: "eth0")!.index))
        for pod in node.pods {
            let podNS = cluster.namespace(ofPod: pod.name)
            try NetworkNamespace.create(podNS)
            try NetlinkSocket(namespace: .named(podNS)).setLink(named: "lo", LinkChange(up: true))
        }
        try Paths.createDirectory(cluster.stateDirectory(ofNode: node.name), what: "state directory")
        try BPFFS.prepare(cluster.bpffsDirectory(ofNode: node.name))
        if let cgroup = cluster.cgroupPath(ofNode: node.name) { try CgroupV2.create(cgroup) }
    }

    /// Applies a node's spec (with the pods `lab pod add` gave it through its agent).
    @discardableResult
    private func apply(_ name: String) throws -> ApplyReport {
        let spec = try cluster.spec(forNode: name)!.withEndpoints()
        let report = try NodeController(spec: spec, namespace: .named(cluster.namespace(ofNode: name))).apply()
        guard report.verified else {
            throw NodeNetError.state(
                "node \(name) did not verify:\n" + report.mismatches.map { "  \($0)" }.joined(separator: "\n"))
        }
        return report
    }

    /// What `down` removed.
    public struct DownReport: Sendable, Codable, Equatable {
        public var processes: Int
        public var namespaces: Int
        public var directories: Int
        public var nothingToDo: Bool { processes == 0 && namespaces == 0 && directories == 0 }
    }

    /// Removes everything a lab called `name` created, found by name (so a lab whose `up`
    /// crashed halfway is cleaned up too): processes in its cgroups, namespaces, cgroups,
    /// bpffs and run directories. Safe to run twice.
    /// A name that is not a valid lab name removes nothing (it could otherwise point the
    /// cleanup outside the lab's directories).
    @discardableResult
    public static func down(name: String) -> DownReport {
        var report = DownReport(processes: 0, namespaces: 0, directories: 0)
        guard LabCluster.isValidName(name) else { return report }
        let cgroupRoot = CgroupV2.root.map { "\($0)/nodenet-lab/\(name)" }
        if let cgroupRoot {
            let groups = (try? FileManager.default.contentsOfDirectory(atPath: cgroupRoot)) ?? []
            var pids = groups.flatMap { CgroupV2.processes(in: "\(cgroupRoot)/\($0)") }
            for pid in pids { kill(pid, SIGTERM) }
            report.processes = pids.count
            // Bounded wait (2 s), then SIGKILL whatever is left.
            for _ in 0..<40 where !pids.isEmpty {
                usleep(50_000)
                pids = groups.flatMap { CgroupV2.processes(in: "\(cgroupRoot)/\($0)") }
            }
            for pid in pids { kill(pid, SIGKILL) }
            for _ in 0..<40 where !groups.flatMap({ CgroupV2.processes(in: "\(cgroupRoot)/\($0)") }).isEmpty {
                usleep(50_000)
            }
        }
        for ns in NetworkNamespace.list() where ns.hasPrefix("nnl-\(name)-") {
            if (try? NetworkNamespace.delete(ns)) != nil { report.namespaces += 1 }
        }
        if let cgroupRoot, FileManager.default.fileExists(atPath: cgroupRoot) {
            CgroupV2.remove(cgroupRoot)
            rmdir(cgroupRoot.components(separatedBy: "/").dropLast().joined(separator: "/"))
            report.directories += 1
        }
        for dir in ["\(BPFFS.root)/nodenet-lab/\(name)", "/run/nodenet/lab/\(name)"]
        where FileManager.default.fileExists(atPath: dir) {
            try? FileManager.default.removeItem(atPath: dir)
            report.directories += 1
        }
        rmdir("\(BPFFS.root)/nodenet-lab")
        rmdir("/run/nodenet/lab")
        return report
    }

    /// The cluster of a lab that is up (from its run directory).
    public static func load(name: String) throws -> LabCluster {
        guard LabCluster.isValidName(name) else {
            throw NodeNetError.missing("\"\(name)\" is not a lab name (1-12 characters of a-z and 0-9)")
        }
        let path = "/run/nodenet/lab/\(name)/cluster.json"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw NodeNetError.missing("lab \(name) is not up (no \(path))")
        }
        return try LabCluster.load(data)
    }
}

extension LabCluster {
    /// The cluster in its file format (what `load` reads).
    public func jsonData() throws -> Data {
        var spec = NodeSpec(
            node: LocalNode(name: "x", device: "x", address: externalAddress, podCIDR: IPPrefix("0.0.0.0/30")),
            services: self.services)
        spec.loadBalancer = loadBalancer
        let written = try JSONSerialization.jsonObject(with: spec.jsonData()) as? [String: Any]
        let object: [String: Any] = [
            "name": name, "fabric": ["cidr": fabricCIDR.description, "external": externalAddress.description],
            "nativeRoutingCIDR": nativeRoutingCIDR.description,
            "nodes": nodes.map { n -> [String: Any] in
                var o: [String: Any] = [
                    "name": n.name, "address": n.address.description, "podCIDR": n.podCIDR.description,
                    "pods": n.pods.map { ["name": $0.name, "ip": $0.ip.description] },
                ]
                if let r = n.routerIP { o["routerIP"] = r.description }
                return o
            },
            "services": written?["services"] ?? [], "loadBalancer": written?["loadBalancer"] ?? [:],
            "socketLB": socketLB, "datapathMode": datapathMode.rawValue, "controlPlane": controlPlane.rawValue,
            "ipv4BigTCP": ipv4BigTCP.rawValue,
        ]
        return try JSONSerialization.data(
            withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
    }
}
