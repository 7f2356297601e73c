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
        let prefixLength = Int(cluster.fabricCIDR.length)

        try NetworkNamespace.create(cluster.fabricNamespace)
        let fabric = try NetlinkSocket(namespace: .named(cluster.fabricNamespace))
        try fabric.setLink(named: "lo", LinkChange(up: true))
        try fabric.add(LinkConfiguration(name: "br0", kind: .bridge, up: true))
        let bridge = try fabric.link(named: "br0")!.index

        /// A host on the fabric: `eth0` in `namespace`, its peer `port` on the bridge.
        func attach(_ namespace: String, port: String, address: IPAddress) throws -> NetlinkSocket {
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
                    interfaceIndex: try s.link(named: "eth0")!.index, prefix: IPPrefix(address, length: prefixLength)!))
            return s
        }

        try NetworkNamespace.create(cluster.externalNamespace)
        _ = try attach(cluster.externalNamespace, port: "vext", address: cluster.externalAddress)

        for (i, node) in cluster.nodes.enumerated() {
            try checkCancelled()
            let ns = cluster.namespace(ofNode: node.name)
            try NetworkNamespace.create(ns)
            let s = try attach(ns, port: "vn\(i)", address: node.address)
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

        var reports: [String: ApplyReport] = [:]
        for node in cluster.nodes {
            try checkCancelled()
            // With the pods `lab pod add` gave the node through its agent.
            let spec = try cluster.spec(forNode: node.name)!.withEndpoints()
            let report = try NodeController(spec: spec, namespace: .named(cluster.namespace(ofNode: node.name))).apply()
            guard report.verified else {
                throw NodeNetError.state(
                    "node \(node.name) did not verify:\n" + report.mismatches.map { "  \($0)" }.joined(separator: "\n"))
            }
            reports[node.name] = report
        }
        return reports
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
        let services = try JSONSerialization.jsonObject(
            with: NodeSpec(
                node: LocalNode(name: "x", device: "x", address: externalAddress, podCIDR: IPPrefix("0.0.0.0/30")),
                services: self.services
            ).jsonData())
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
            "services": (services as? [String: Any])?["services"] ?? [],
            "socketLB": socketLB, "datapathMode": datapathMode.rawValue,
        ]
        return try JSONSerialization.data(
            withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
    }
}
