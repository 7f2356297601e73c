import BPF
import Foundation

/// Reads a JSON document into a `NodeSpec`, strictly: unknown fields, wrong types and
/// missing required fields are problems, all collected with their paths.
package struct SpecReader {
    package private(set) var problems: [SpecProblem] = []
    /// JSON paths of the pods, nodes and services that were read (problems in the others
    /// were already reported), so semantic checks name the right index.
    private(set) var podPaths: [String] = []
    private(set) var nodePaths: [String] = []
    private(set) var servicePaths: [String] = []

    package init() {}

    /// A JSON document, or the one problem that says where it stops being JSON.
    package static func document(_ data: Data) throws(SpecError) -> JSONValue {
        do {
            return try JSONValue.parse(data)
        } catch {
            throw SpecError([SpecProblem("", JSONValue.describe(error, in: data))])
        }
    }

    package mutating func problem(_ path: String, _ message: String) { problems.append(SpecProblem(path, message)) }

    /// The object at `path`, after checking that only `allowed` keys are present.
    package mutating func object(_ value: JSONValue?, _ path: String, allowed: [String]) -> [String: JSONValue]? {
        guard let value else { return nil }
        guard case .object(let fields) = value else {
            problem(path, "must be an object, found \(value.kindName)")
            return nil
        }
        for key in fields.keys.sorted() where !allowed.contains(key) {
            problem(join(path, key), "unknown field (known: \(allowed.joined(separator: ", ")))")
        }
        return fields
    }

    package mutating func array(_ fields: [String: JSONValue], _ key: String, _ path: String) -> [JSONValue] {
        guard let value = fields[key] else { return [] }
        guard case .array(let items) = value else {
            problem(join(path, key), "must be an array, found \(value.kindName)")
            return []
        }
        return items
    }

    package mutating func string(
        _ fields: [String: JSONValue], _ key: String, _ path: String, required: Bool
    ) -> String? {
        guard let value = fields[key] else {
            if required { problem(join(path, key), "is required") }
            return nil
        }
        guard case .string(let s) = value else {
            problem(join(path, key), "must be a string, found \(value.kindName)")
            return nil
        }
        if s.isEmpty {
            problem(join(path, key), "must not be empty")
            return nil
        }
        return s
    }

    package mutating func bool(_ fields: [String: JSONValue], _ key: String, _ path: String) -> Bool? {
        guard let value = fields[key] else { return nil }
        guard case .bool(let b) = value else {
            problem(join(path, key), "must be true or false, found \(value.kindName)")
            return nil
        }
        return b
    }

    package mutating func integer(
        _ fields: [String: JSONValue], _ key: String, _ path: String, required: Bool, range: ClosedRange<Int>
    ) -> Int? {
        guard let value = fields[key] else {
            if required { problem(join(path, key), "is required") }
            return nil
        }
        guard case .number(let n) = value, n == n.rounded(), abs(n) < 1e15 else {
            problem(
                join(path, key),
                "must be a whole number, found \(value.kindName == "a number" ? "\(value)" : value.kindName)")
            return nil
        }
        let i = Int(n)
        guard range.contains(i) else {
            problem(join(path, key), "\(i) is out of range \(range.lowerBound)-\(range.upperBound)")
            return nil
        }
        return i
    }

    package mutating func address(
        _ fields: [String: JSONValue], _ key: String, _ path: String, required: Bool
    ) -> IPAddress? {
        guard let text = string(fields, key, path, required: required) else { return nil }
        guard let ip = IPAddress(text), ip.isIPv4 else {
            problem(join(path, key), "\"\(text)\" is not an IPv4 address")
            return nil
        }
        return ip
    }

    package mutating func cidr(
        _ fields: [String: JSONValue], _ key: String, _ path: String, required: Bool
    ) -> IPPrefix? {
        guard let text = string(fields, key, path, required: required) else { return nil }
        return cidr(text, shown: "\"\(text)\"", at: join(path, key))
    }

    /// `text` as an IPv4 network prefix, or the problem at `path` (`shown` is how it was written).
    mutating func cidr(
        _ text: String, shown: String, at path: String, like example: String = "10.0.2.0/24"
    )
        -> IPPrefix?
    {
        guard text.contains("/"), let prefix = IPPrefix(text), prefix.family == .inet else {
            problem(path, "\(shown) is not an IPv4 CIDR (like \(example))")
            return nil
        }
        guard prefix.isNetwork else {
            problem(path, "\(text) has host bits set (did you mean \(prefix.network)?)")
            return nil
        }
        return prefix
    }

    /// The value of `key` as one of `T`'s raw values, `fallback` when absent; otherwise the
    /// problem names what it may be.
    package mutating func choice<T: RawRepresentable & CaseIterable>(
        _ fields: [String: JSONValue], _ key: String, _ path: String, default fallback: T
    ) -> T where T.RawValue == String {
        guard let text = string(fields, key, path, required: false) else { return fallback }
        if let parsed = T(rawValue: text) { return parsed }
        let names = T.allCases.map(\.rawValue)
        let list = names.dropLast().joined(separator: ", ") + (names.count > 1 ? " or " : "") + (names.last ?? "")
        problem(join(path, key), "\"\(text)\" is not \(list)")
        return fallback
    }

    package func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    // MARK: The spec

    package mutating func read(_ root: JSONValue) -> NodeSpec? {
        guard
            let top = object(
                root, "",
                allowed: [
                    "apiVersion", "node", "nativeRoutingCIDR", "autoDirectNodeRoutes", "kubeProxyReplacement",
                    "datapath",
                    "pods", "nodes", "services", "nodePortRange", "stateDirectory", "bpffsDirectory", "socketLB",
                    "masquerade", "cluster", "loadBalancer", "conntrack", "ipv4BigTCP",
                ])
        else { return nil }
        if let version = string(top, "apiVersion", "", required: true), version != NodeSpec.apiVersion {
            problem("apiVersion", "\"\(version)\" is not supported (use \"\(NodeSpec.apiVersion)\")")
        }
        var node: LocalNode?
        if top["node"] == nil { problem("node", "is required") }
        if let fields = object(
            top["node"], "node", allowed: ["name", "device", "address", "podCIDR", "routerIP", "mtu"])
        {
            let name = string(fields, "name", "node", required: true)
            let device = string(fields, "device", "node", required: true)
            let address = address(fields, "address", "node", required: true)
            let podCIDR = cidr(fields, "podCIDR", "node", required: true)
            let routerIP = self.address(fields, "routerIP", "node", required: false)
            let mtu = integer(fields, "mtu", "node", required: false, range: 68...65535)
            if let name, let why = LocalNode.nameProblem(name) { problem("node.name", why) }
            if let device, device.utf8.count > 15 || device.contains("/") || device.contains(" ") {
                problem("node.device", "\"\(device)\" is not a valid interface name")
            }
            if let name, let device, let address, let podCIDR {
                node = LocalNode(
                    name: name, device: device, address: address, podCIDR: podCIDR, routerIP: routerIP,
                    mtu: mtu.map(UInt32.init))
            }
        }
        let nativeRoutingCIDR = cidr(top, "nativeRoutingCIDR", "", required: false)
        let autoDirect = bool(top, "autoDirectNodeRoutes", "") ?? true
        let kpr = bool(top, "kubeProxyReplacement", "") ?? true
        var datapath = DatapathSettings()
        if let fields = object(top["datapath"], "datapath", allowed: ["mode", "attachMode"]) {
            if let attach = string(fields, "attachMode", "datapath", required: false) {
                if let a = AttachMode(rawValue: attach) {
                    datapath.attachMode = a
                } else {
                    problem("datapath.attachMode", "\"\(attach)\" is not auto, tcx or clsact")
                }
            }
            if let mode = string(fields, "mode", "datapath", required: false) {
                if let m = DatapathMode(rawValue: mode) {
                    datapath.mode = m
                } else {
                    problem(
                        "datapath.mode",
                        "\"\(mode)\" is not available (this build has: \(DatapathMode.allCases.map(\.rawValue).joined(separator: ", ")))"
                    )
                }
            }
        }
        var range = 30000...32767
        if let text = string(top, "nodePortRange", "", required: false) {
            let parts = text.split(separator: "-").compactMap { Int($0) }
            if parts.count == 2, parts[0] >= 1, parts[0] <= parts[1], parts[1] <= 65535 {
                range = parts[0]...parts[1]
            } else {
                problem("nodePortRange", "\"\(text)\" is not a port range like 30000-32767")
            }
        }
        let stateDirectory = string(top, "stateDirectory", "", required: false)
        let bpffsDirectory = string(top, "bpffsDirectory", "", required: false)
        if let bpffsDirectory, !Paths.isStrictlyBelow(bpffsDirectory, BPFFS.root) {
            problem("bpffsDirectory", "\"\(bpffsDirectory)\" must be a directory under /sys/fs/bpf/ (no '..')")
        }
        if let stateDirectory, !stateDirectory.hasPrefix("/") || stateDirectory.split(separator: "/").contains("..") {
            problem("stateDirectory", "\"\(stateDirectory)\" must be an absolute path without '..'")
        }

        var pods: [PodSpec] = []
        for (i, item) in array(top, "pods", "").enumerated() {
            let path = "pods[\(i)]"
            guard let fields = object(item, path, allowed: ["name", "namespace", "netns", "ip"]) else { continue }
            let name = string(fields, "name", path, required: true)
            let namespace = string(fields, "namespace", path, required: false) ?? "default"
            let netns = string(fields, "netns", path, required: true)
            let ip = address(fields, "ip", path, required: true)
            if let name, let netns, let ip {
                pods.append(PodSpec(name: name, namespace: namespace, netns: netns, ip: ip))
                podPaths.append(path)
            }
        }
        var nodes: [RemoteNode] = []
        for (i, item) in array(top, "nodes", "").enumerated() {
            let path = "nodes[\(i)]"
            guard let fields = object(item, path, allowed: ["name", "address", "podCIDR"]) else { continue }
            let name = string(fields, "name", path, required: true)
            let address = address(fields, "address", path, required: true)
            let podCIDR = cidr(fields, "podCIDR", path, required: true)
            if let name, let address, let podCIDR {
                nodes.append(RemoteNode(name: name, address: address, podCIDR: podCIDR))
                nodePaths.append(path)
            }
        }
        let services = readServices(top, "")
        // Socket LB needs cgroup v2; without it the pods' services are translated per packet.
        var socketLB = SocketLBSettings(cgroup: CgroupV2.root)
        if let fields = object(top["socketLB"], "socketLB", allowed: ["enabled", "cgroup"]) {
            if let cgroup = string(fields, "cgroup", "socketLB", required: false) {
                if !cgroup.hasPrefix("/") || cgroup.split(separator: "/").contains("..") {
                    problem("socketLB.cgroup", "\"\(cgroup)\" must be an absolute path without '..'")
                }
                socketLB.cgroup = cgroup
            }
            if bool(fields, "enabled", "socketLB") == false { socketLB.cgroup = nil }
        }
        let masquerade = bool(top, "masquerade", "") ?? true
        let loadBalancer = readLoadBalancer(top["loadBalancer"])
        var conntrack = ConntrackSettings()
        if let fields = object(top["conntrack"], "conntrack", allowed: ["outsideClientEntries"]),
            let entries = integer(
                fields, "outsideClientEntries", "conntrack", required: false,
                range: ConntrackSettings.outsideClientEntriesRange)
        {
            conntrack.outsideClientEntries = entries
        }
        let cluster = readCluster(top["cluster"])
        if cluster != nil {
            for key in ["nodes", "services"] where !(top[key]?.array?.isEmpty ?? true) {
                problem(key, "in cluster mode \(key) come from etcd; leave them out of the node spec")
            }
        }
        guard let node else { return nil }
        var spec = NodeSpec(
            node: node, nativeRoutingCIDR: nativeRoutingCIDR, autoDirectNodeRoutes: autoDirect,
            kubeProxyReplacement: kpr,
            datapath: datapath, pods: pods, nodes: nodes, services: services, nodePortRange: range,
            stateDirectory: stateDirectory, bpffsDirectory: bpffsDirectory, socketLB: socketLB, masquerade: masquerade,
            cluster: cluster)
        spec.loadBalancer = loadBalancer
        spec.conntrack = conntrack
        spec.ipv4BigTCP = choice(top, "ipv4BigTCP", "", default: BigTCPMode.auto)
        return spec
    }

    /// `loadBalancer` of an object (the node spec, a lab cluster file); the defaults when absent.
    package mutating func readLoadBalancer(_ value: JSONValue?) -> LoadBalancerSettings {
        var settings = LoadBalancerSettings()
        guard let fields = object(value, "loadBalancer", allowed: ["algorithm", "maglevTableSize", "mapEntries"]) else {
            return settings
        }
        settings.algorithm = choice(fields, "algorithm", "loadBalancer", default: LoadBalancerAlgorithm.random)
        if let size = integer(
            fields, "maglevTableSize", "loadBalancer", required: false, range: LoadBalancerSettings.maglevTableSizes)
        {
            if LoadBalancerSettings.isPrime(size) {
                settings.maglevTableSize = size
            } else {
                problem("loadBalancer.maglevTableSize", "\(size) is not a prime (Maglev needs one, like 16381)")
            }
        }
        let allowed = ServiceMapCapacity.allowed
        if let entries = integer(
            fields, "mapEntries", "loadBalancer", required: false,
            range: Int(allowed.lowerBound)...Int(allowed.upperBound))
        {
            settings.mapCapacity = ServiceMapCapacity(entries: UInt32(entries))  // a power of two: the validator
        }
        return settings
    }

    /// `services` of an object (the node spec, a lab cluster file or a cluster service file).
    /// `podBackends`: backends may name a pod (`{"pod": "default/web-1"}`), as cluster services may.
    package mutating func readServices(
        _ fields: [String: JSONValue], _ path: String, podBackends allowPods: Bool = false
    ) -> [ServiceSpec] {
        var services: [ServiceSpec] = []
        for (i, item) in array(fields, "services", path).enumerated() {
            let path = join(path, "services[\(i)]")
            guard
                let fields = object(
                    item, path,
                    allowed: [
                        "name", "type", "clusterIP", "ports", "backends", "externalTrafficPolicy",
                        "internalTrafficPolicy", "sessionAffinity", "sessionAffinityTimeoutSeconds", "externalIPs",
                        "loadBalancerIPs", "loadBalancerSourceRanges", "healthCheckNodePort",
                    ])
            else { continue }
            let policies = ["externalTrafficPolicy", "internalTrafficPolicy"].map {
                choice(fields, $0, path, default: TrafficPolicy.cluster)
            }
            let name = string(fields, "name", path, required: true)
            let type = choice(fields, "type", path, default: ServiceType.clusterIP)
            let clusterIP = address(fields, "clusterIP", path, required: true)
            var ports: [ServicePort] = []
            let portItems = array(fields, "ports", path)
            if portItems.isEmpty { problem("\(path).ports", "needs at least one port") }
            for (j, portItem) in portItems.enumerated() {
                let pp = "\(path).ports[\(j)]"
                guard let pf = object(portItem, pp, allowed: ["name", "protocol", "port", "targetPort", "nodePort"])
                else { continue }
                let portName = string(pf, "name", pp, required: false)
                var proto = TransportProtocol.tcp
                if let p = string(pf, "protocol", pp, required: false) {
                    if let parsed = TransportProtocol(rawValue: p) {
                        proto = parsed
                    } else {
                        problem("\(pp).protocol", "\"\(p)\" is not TCP or UDP")
                    }
                }
                let port = integer(pf, "port", pp, required: true, range: 1...65535)
                let target = integer(pf, "targetPort", pp, required: false, range: 1...65535)
                let nodePort = integer(pf, "nodePort", pp, required: false, range: 1...65535)
                if let port {
                    ports.append(
                        ServicePort(name: portName, protocol: proto, port: port, targetPort: target, nodePort: nodePort)
                    )
                }
            }
            var backends: [ServiceBackend] = []
            var podBackends: [PodBackend] = []
            for (j, b) in array(fields, "backends", path).enumerated() {
                let bp = "\(path).backends[\(j)]"
                let conditions = ["ready", "serving", "terminating"]
                guard
                    let bf = object(b, bp, allowed: (allowPods ? ["ip", "pod", "port"] : ["ip", "port"]) + conditions)
                else { continue }
                let port = integer(bf, "port", bp, required: false, range: 1...65535)
                if allowPods, bf["pod"] != nil {
                    if bf["ip"] != nil { problem(bp, "names both a pod and an ip; give one") }
                    if let pod = string(bf, "pod", bp, required: true) {
                        if let why = PodBackend.problem(pod) {
                            problem(join(bp, "pod"), why)
                        } else {
                            podBackends.append(PodBackend(pod: pod, port: port))
                        }
                    }
                    continue
                }
                let ip = address(bf, "ip", bp, required: true)
                let ready = bool(bf, "ready", bp) ?? true
                let terminating = bool(bf, "terminating", bp) ?? false
                if ready && terminating { problem(join(bp, "terminating"), "a terminating backend is not ready") }
                if let ip {
                    backends.append(
                        ServiceBackend(
                            ip: ip, port: port, ready: ready, serving: bool(bf, "serving", bp), terminating: terminating
                        ))
                }
            }
            func addresses(_ key: String) -> [IPAddress] {
                array(fields, key, path).enumerated().compactMap { j, item -> IPAddress? in
                    guard case .string(let text) = item, let ip = IPAddress(text), ip.isIPv4 else {
                        problem("\(path).\(key)[\(j)]", "\(item.text) is not an IPv4 address")
                        return nil
                    }
                    return ip
                }
            }
            let sourceRanges = array(fields, "loadBalancerSourceRanges", path).enumerated().compactMap {
                j, item -> IPPrefix? in
                cidr(
                    item.string ?? "", shown: item.text, at: "\(path).loadBalancerSourceRanges[\(j)]",
                    like: "203.0.113.0/24")
            }
            let affinity = choice(fields, "sessionAffinity", path, default: SessionAffinity.none)
            let healthCheckNodePort = integer(fields, "healthCheckNodePort", path, required: false, range: 1...65535)
            let affinityTimeout =
                integer(fields, "sessionAffinityTimeoutSeconds", path, required: false, range: 1...86400) ?? 10800
            if let name, let clusterIP {
                services.append(
                    ServiceSpec(
                        name: name, type: type, clusterIP: clusterIP, ports: ports, backends: backends,
                        podBackends: podBackends, externalTrafficPolicy: policies[0], internalTrafficPolicy: policies[1]
                    ))
                services[services.count - 1].externalIPs = addresses("externalIPs")
                services[services.count - 1].loadBalancerIPs = addresses("loadBalancerIPs")
                services[services.count - 1].loadBalancerSourceRanges = sourceRanges
                services[services.count - 1].healthCheckNodePort = healthCheckNodePort
                services[services.count - 1].sessionAffinity = affinity
                services[services.count - 1].sessionAffinityTimeoutSeconds = affinityTimeout
                servicePaths.append(path)
            }
        }
        return services
    }
}
