import BPF
import CNodeNetBPF

/// Semantic checks on a structurally valid spec. Every problem is reported, with its path.
struct SpecValidator {
    let spec: NodeSpec
    let podPaths: [String]
    let nodePaths: [String]
    let servicePaths: [String]
    /// Whether a pod's network namespace exists (reading the filesystem, changing nothing).
    let namespaceExists: (String) -> Bool
    private(set) var problems: [SpecProblem] = []

    init(
        spec: NodeSpec, podPaths: [String], nodePaths: [String], servicePaths: [String],
        namespaceExists: @escaping (String) -> Bool
    ) {
        self.spec = spec
        self.podPaths = podPaths
        self.nodePaths = nodePaths
        self.servicePaths = servicePaths
        self.namespaceExists = namespaceExists
    }

    mutating func problem(_ path: String, _ message: String) { problems.append(SpecProblem(path, message)) }

    mutating func validate() -> [SpecProblem] {
        checkNode()
        checkPods()
        checkRemoteNodes()
        checkServices()
        return problems
    }

    /// Only the services' rules (cluster services, checked before they are written to etcd).
    mutating func validateServices() -> [SpecProblem] {
        checkServices()
        return problems
    }

    private func isNetworkOrBroadcast(_ ip: IPAddress, in cidr: IPPrefix) -> Bool {
        guard cidr.length < 31, let v = ip.ipv4Value, let base = cidr.network.address.ipv4Value else { return false }
        let broadcast = base | (UInt32.max >> UInt32(cidr.length))
        return v == base || v == broadcast
    }

    private mutating func checkNode() {
        let node = spec.node
        if !node.podCIDR.contains(node.routerIP) {
            problem("node.routerIP", "\(node.routerIP) is outside podCIDR \(node.podCIDR)")
        } else if isNetworkOrBroadcast(node.routerIP, in: node.podCIDR) {
            problem("node.routerIP", "\(node.routerIP) is the network or broadcast address of \(node.podCIDR)")
        }
        if node.podCIDR.contains(node.address) {
            problem("node.address", "\(node.address) is inside this node's podCIDR \(node.podCIDR)")
        }
        if node.podCIDR.length > 30 {
            problem("node.podCIDR", "\(node.podCIDR) is too small for a router IP and pods (use /30 or larger)")
        }
    }

    private mutating func checkPods() {
        let node = spec.node
        var byID: [String: String] = [:]
        var byIP: [IPAddress: String] = [:]
        var byNetns: [String: String] = [:]
        var byDevice: [String: PodSpec] = [:]
        for (pod, path) in zip(spec.pods, podPaths) {
            if let first = byID[pod.id] {
                problem("\(path).name", "\(pod.id) is already used by \(first)")
            } else {
                byID[pod.id] = path
            }
            // Device names are a 48-bit hash of namespace/name: two pods must never share one (a
            // chosen name would take over another pod's device, route and endpoint entry).
            let device = NodeNetNames.endpointDevice(for: pod)
            if let other = byDevice[device], other.id != pod.id {
                problem(
                    "\(path).name",
                    "\(pod.id) and \(other.id) would share the endpoint device \(device); rename one of them")
            } else {
                byDevice[device] = pod
            }
            if !node.podCIDR.contains(pod.ip) {
                problem("\(path).ip", "\(pod.ip) is outside podCIDR \(node.podCIDR)")
            } else if isNetworkOrBroadcast(pod.ip, in: node.podCIDR) {
                problem("\(path).ip", "\(pod.ip) is the network or broadcast address of \(node.podCIDR)")
            } else if pod.ip == node.routerIP {
                problem("\(path).ip", "\(pod.ip) is the router IP (node.routerIP)")
            }
            if let first = byIP[pod.ip] {
                problem(
                    "\(path).ip",
                    "\(pod.ip) is already used by \(first) (\(spec.pods[podPaths.firstIndex(of: first)!].id))")
            } else {
                byIP[pod.ip] = path
            }
            if let first = byNetns[pod.netns] {
                problem("\(path).netns", "\(pod.netns) is already the network namespace of \(first)")
            } else {
                byNetns[pod.netns] = path
                let file = pod.netnsReference.path ?? ""
                if !namespaceExists(file) {
                    problem(
                        "\(path).netns",
                        "network namespace \(pod.netns) \(NodeSpec.namespaceProblem(file) ?? "does not exist (\(file))")"
                    )
                }
            }
        }
    }

    private mutating func checkRemoteNodes() {
        let node = spec.node
        var byName: [String: String] = [node.name: "node.name"]
        var byAddress: [IPAddress: String] = [node.address: "node.address"]
        // Indexed: a cluster's thousand nodes are checked in O(n log n).
        var cidrs = PrefixIndex()
        var cidrPaths = ["node.podCIDR"]
        cidrs.insert(node.podCIDR)
        for (remote, path) in zip(spec.nodes, nodePaths) {
            if let first = byName[remote.name] {
                problem("\(path).name", "\(remote.name) is already used by \(first)")
            } else {
                byName[remote.name] = path
            }
            if let first = byAddress[remote.address] {
                problem("\(path).address", "\(remote.address) is already used by \(first)")
            } else {
                byAddress[remote.address] = path
            }
            if let clash = cidrs.firstOverlap(remote.podCIDR) {
                problem("\(path).podCIDR", "\(remote.podCIDR) overlaps \(cidrPaths[clash]) \(cidrs.prefixes[clash])")
            }
            cidrs.insert(remote.podCIDR)
            cidrPaths.append("\(path).podCIDR")
        }
        // Every pod has an entry in the endpoints map (BPF datapath); no node runs more.
        if spec.pods.count > Int(NODENET_ENDPOINTS_MAX) {
            problem("pods", "\(spec.pods.count) pods; a node holds at most \(NODENET_ENDPOINTS_MAX)")
        }
        // The BPF datapath keeps every node's address (this one's too) in one map.
        if spec.datapath.mode == .bpf, spec.nodes.count + 1 > Int(NODENET_NODES_MAX) {
            problem(
                "nodes",
                "\(spec.nodes.count) other nodes; the datapath's map of node addresses holds \(NODENET_NODES_MAX - 1) and this node's"
            )
        }
        // Node addresses must not fall inside any pod CIDR.
        for (address, path) in [(node.address, "node.address")]
            + zip(spec.nodes.map(\.address), nodePaths.map { "\($0).address" })
        {
            for i in cidrs.containing(address) where i > 0 {
                problem(path, "\(address) is inside \(cidrPaths[i]) \(cidrs.prefixes[i])")
            }
        }
    }

    private mutating func checkServices() {
        var claims = ServiceClaims(spec)
        for (service, path) in zip(spec.services, servicePaths) {
            checkNameAndAddresses(service, path, &claims)
            checkPorts(service, path, &claims)
            checkHealthCheckNodePort(service, path, &claims)
            checkBackends(service, path)
        }
        checkServiceLimits()
    }

    /// A service's name, cluster IP, external and load-balancer IPs: each once in the spec, none
    /// in a pod CIDR, external and load-balancer IPs none of a node's addresses either; the
    /// fields its type allows.
    private mutating func checkNameAndAddresses(_ service: ServiceSpec, _ path: String, _ claims: inout ServiceClaims) {
        if let first = claims.names[service.name] {
            problem("\(path).name", "\(service.name) is already used by \(first)")
        } else {
            claims.names[service.name] = path
        }
        if let first = claims.addresses[service.clusterIP] {
            problem("\(path).clusterIP", "\(service.clusterIP) is already used by \(first)")
        } else {
            claims.addresses[service.clusterIP] = path
        }
        if let cidr = claims.podCIDRs.first(where: { $0.contains(service.clusterIP) }) {
            problem("\(path).clusterIP", "\(service.clusterIP) is inside pod CIDR \(cidr)")
        }
        if service.externalTrafficPolicy == .local, !service.type.hasNodePorts, service.externalIPs.isEmpty {
            problem(
                "\(path).externalTrafficPolicy",
                "Local applies to NodePort and LoadBalancer services and externalIPs")
        }
        if !service.loadBalancerIPs.isEmpty, service.type != .loadBalancer {
            problem("\(path).loadBalancerIPs", "only LoadBalancer services have loadBalancerIPs")
        }
        if !service.loadBalancerSourceRanges.isEmpty, service.type != .loadBalancer {
            problem(
                "\(path).loadBalancerSourceRanges", "only LoadBalancer services have loadBalancerSourceRanges")
        }
        for (key, addresses) in [
            ("externalIPs", service.externalIPs), ("loadBalancerIPs", service.loadBalancerIPs),
        ] {
            for (j, address) in addresses.enumerated() {
                if let cidr = claims.podCIDRs.first(where: { $0.contains(address) }) {
                    problem("\(path).\(key)[\(j)]", "\(address) is inside pod CIDR \(cidr)")
                } else if claims.nodeAddresses.contains(address) {
                    problem("\(path).\(key)[\(j)]", "\(address) is a node's address (use a NodePort)")
                } else if let first = claims.addresses[address] {
                    problem("\(path).\(key)[\(j)]", "\(address) is already used by \(first)")
                } else {
                    claims.addresses[address] = "\(path).\(key)[\(j)]"
                }
            }
        }
    }

    /// A service's ports, each once, and its node ports: as its type wants them, in the NodePort
    /// range, each once on the node.
    private mutating func checkPorts(_ service: ServiceSpec, _ path: String, _ claims: inout ServiceClaims) {
        var frontends: [Int: Int] = [:]
        for (j, port) in service.ports.enumerated() {
            var pp: String { "\(path).ports[\(j)]" }  // only built for a problem
            let key = port.port << 8 | Int(port.protocol.ipProtocol)
            if let first = frontends[key] {
                problem(
                    "\(pp).port",
                    "\(port.port)/\(port.protocol.rawValue) is already used by \(path).ports[\(first)]")
            } else {
                frontends[key] = j
            }
            switch (service.type.hasNodePorts, port.nodePort) {
            case (false, .some):
                problem("\(pp).nodePort", "only NodePort and LoadBalancer services have node ports")
            case (true, .none):
                problem("\(pp).nodePort", "is required for a \(service.type.rawValue) service")
            case (true, .some(let nodePort)):
                if !spec.nodePortRange.contains(nodePort) {
                    problem(
                        "\(pp).nodePort",
                        "\(nodePort) is outside the NodePort range \(spec.nodePortRange.lowerBound)-\(spec.nodePortRange.upperBound)"
                    )
                }
                let npKey = nodePort << 8 | Int(port.protocol.ipProtocol)
                if let first = claims.nodePorts[npKey] {
                    problem("\(pp).nodePort", "\(nodePort)/\(port.protocol.rawValue) is already used by \(first)")
                } else {
                    claims.nodePorts[npKey] = pp
                }
            case (false, .none):
                break
            }
        }
    }

    /// A LoadBalancer's health check node port (externalTrafficPolicy Local only): in the range,
    /// not another's node port.
    private mutating func checkHealthCheckNodePort(
        _ service: ServiceSpec, _ path: String, _ claims: inout ServiceClaims
    ) {
        guard let port = service.healthCheckNodePort else { return }
        let hp = "\(path).healthCheckNodePort"
        if service.type != .loadBalancer || service.externalTrafficPolicy != .local {
            problem(hp, "only LoadBalancer services with externalTrafficPolicy Local have one")
        } else if !spec.nodePortRange.contains(port) {
            problem(
                hp,
                "\(port) is outside the NodePort range \(spec.nodePortRange.lowerBound)-\(spec.nodePortRange.upperBound)"
            )
        } else if let first = claims.nodePorts[port << 8 | 6] {
            problem(hp, "\(port)/TCP is already used by \(first)")
        } else {
            claims.nodePorts[port << 8 | 6] = hp
        }
    }

    /// A service's backends, each address and port once.
    private mutating func checkBackends(_ service: ServiceSpec, _ path: String) {
        var backends: [BackendKey: Int] = [:]
        for (j, backend) in service.backends.enumerated() {
            let key = BackendKey(ip: backend.ip, port: backend.port)
            if let first = backends[key] {
                problem("\(path).backends[\(j)].ip", "\(backend.ip) is already backends[\(first)]")
            } else {
                backends[key] = j
            }
        }
    }

    /// What the node's ports and BPF maps leave room for: node ports clear of source NAT's
    /// ports, the service tables, the Maglev tables and the source ranges.
    private mutating func checkServiceLimits() {
        // Node ports must not collide with the ports masquerading and NodePort SNAT allocate.
        let natPorts = Int(NODENET_NAT_PORT_MIN)...Int(NODENET_NAT_PORT_MIN + NODENET_NAT_PORT_COUNT - 1)
        if spec.nodePortRange.overlaps(natPorts) {
            problem(
                "nodePortRange",
                "\(spec.nodePortRange.lowerBound)-\(spec.nodePortRange.upperBound) overlaps \(natPorts.lowerBound)-\(natPorts.upperBound), the ports source NAT uses"
            )
        }
        // What the BPF maps can hold.
        var demand = ServiceMapDemand()
        var sourceRanges = 0
        var maglevTables = 0
        for service in spec.services {
            demand.add(service)
            for port in service.ports {
                let count = ServiceMapDemand.frontends(of: service, port)
                if !service.backends.isEmpty {
                    maglevTables += spec.socketLB.enabled ? count - 1 : count
                }
                sourceRanges += service.loadBalancerIPs.count * Set(service.loadBalancerSourceRanges).count
            }
        }
        checkCapacity(demand)
        let maglev = spec.loadBalancer
        if maglev.algorithm == .maglev && spec.servicesEnabled {
            let chunks = maglevTables * LoadBalancerSettings.maglevChunks(size: maglev.maglevTableSize)
            if chunks > Int(NODENET_MAGLEV_MAX) {
                problem(
                    "loadBalancer.maglevTableSize",
                    "\(maglevTables) frontends the packet path serves need Maglev tables of \(maglev.maglevTableSize) entries: \(chunks) map values of \(NODENET_MAGLEV_CHUNK); the map holds \(NODENET_MAGLEV_MAX) (choose a smaller table size)"
                )
            }
            for (service, path) in zip(spec.services, servicePaths)
            where service.backends.count > maglev.maglevTableSize {
                problem(
                    "\(path).backends",
                    "\(service.backends.count) backends do not fit a Maglev table of \(maglev.maglevTableSize) entries (loadBalancer.maglevTableSize)"
                )
            }
        }
        if sourceRanges > Int(NODENET_SOURCE_RANGES_MAX) {
            problem(
                "services",
                "\(sourceRanges) source ranges (each LoadBalancer frontend's); the map holds \(NODENET_SOURCE_RANGES_MAX)"
            )
        }
    }

    /// The service tables hold the spec's frontends, service entries and distinct backends
    /// (`loadBalancer.mapEntries`); a spec beyond them is refused with the size that holds it.
    private mutating func checkCapacity(_ demand: ServiceMapDemand) {
        let capacity = spec.loadBalancer.mapCapacity
        let (setting, allowed) = ("loadBalancer.mapEntries", ServiceMapCapacity.allowed)
        guard capacity.isValid else {
            problem(
                setting, "\(capacity.entries) is not a power of two from \(allowed.lowerBound) to \(allowed.upperBound)"
            )
            return
        }
        let advice =
            demand.smallest.map { "; \(setting): \($0.entries) holds them" }
            ?? "; the largest \(setting), \(allowed.upperBound), does not hold them"
        if demand.frontends > capacity.maxFrontends {
            problem(
                "services",
                "\(demand.frontends) frontends (each port's ClusterIP, node ports, external and load balancer addresses); at most \(capacity.maxFrontends) fit (the reverse-NAT map: a quarter of \(setting), \(capacity.entries))\(advice)"
            )
        }
        if demand.entries > Int(capacity.entries) {
            problem(
                "services",
                "\(demand.entries) service map entries (a frontend and each of its backends); the map holds \(setting), \(capacity.entries)\(advice)"
            )
        }
        if demand.backends.count > capacity.maxBackends {
            problem(
                "services",
                "\(demand.backends.count) distinct backends; at most \(capacity.maxBackends) fit (the backends map: \(setting), \(capacity.entries), by id from 1)\(advice)"
            )
        }
    }
}

/// A backend as the spec names it (port optional), for duplicate checks.
private struct BackendKey: Hashable {
    var ip: IPAddress
    var port: Int?
}

/// What the services checked so far took (by the path that took it) and what no service may
/// take: their names, their addresses (cluster, external and load-balancer IPs), the node's
/// node ports; the pod CIDRs and the nodes' addresses.
private struct ServiceClaims {
    var names: [String: String] = [:]
    /// Cluster, external and load-balancer IPs together (no address is two services').
    var addresses: [IPAddress: String] = [:]
    /// By port << 8 | IP protocol.
    var nodePorts: [Int: String] = [:]
    let podCIDRs: [IPPrefix]
    let nodeAddresses: Set<IPAddress>

    init(_ spec: NodeSpec) {
        podCIDRs = [spec.node.podCIDR] + spec.nodes.map(\.podCIDR)
        nodeAddresses = Set([spec.node.address] + spec.nodes.map(\.address))
    }
}
