import Foundation

extension NodeSpec {
    /// The spec as JSON in the documented `nodenet/v1` form (what `load` reads back).
    public func jsonData() throws -> Data {
        var node: [String: Any] = [
            "name": self.node.name, "device": self.node.device, "address": self.node.address.description,
            "podCIDR": self.node.podCIDR.description, "routerIP": self.node.routerIP.description,
        ]
        if let mtu = self.node.mtu { node["mtu"] = mtu }
        var top: [String: Any] = [
            "apiVersion": NodeSpec.apiVersion, "node": node, "autoDirectNodeRoutes": autoDirectNodeRoutes,
            "kubeProxyReplacement": kubeProxyReplacement,
            "datapath": ["mode": datapath.mode.rawValue, "attachMode": datapath.attachMode.rawValue],
            "stateDirectory": stateDirectory, "bpffsDirectory": bpffsDirectory,
            "nodePortRange": "\(nodePortRange.lowerBound)-\(nodePortRange.upperBound)",
            "pods": pods.map {
                ["name": $0.name, "namespace": $0.namespace, "netns": $0.netns, "ip": $0.ip.description]
            },
            "nodes": nodes.map {
                ["name": $0.name, "address": $0.address.description, "podCIDR": $0.podCIDR.description]
            },
            "services": services.map(\.jsonObject),
        ]
        if let nativeRoutingCIDR { top["nativeRoutingCIDR"] = nativeRoutingCIDR.description }
        top["socketLB"] = socketLB.cgroup.map { ["enabled": true, "cgroup": $0] } ?? ["enabled": false]
        top["masquerade"] = masquerade
        top["loadBalancer"] = [
            "algorithm": loadBalancer.algorithm.rawValue, "maglevTableSize": loadBalancer.maglevTableSize,
            "mapEntries": Int(loadBalancer.mapCapacity.entries),
        ]
        top["conntrack"] = ["outsideClientEntries": conntrack.outsideClientEntries]
        top["ipv4BigTCP"] = ipv4BigTCP.rawValue
        if let cluster {
            var etcd: [String: Any] = ["endpoints": cluster.endpoints]
            if let ca = cluster.caFile { etcd["caFile"] = ca }
            if let cert = cluster.certFile { etcd["certFile"] = cert }
            if let key = cluster.keyFile { etcd["keyFile"] = key }
            top["cluster"] = [
                "etcd": etcd, "prefix": cluster.prefix, "leaseTTL": cluster.leaseTTL,
                "nodeDeleteGrace": cluster.nodeDeleteGrace,
            ]
        }
        return try JSONSerialization.data(
            withJSONObject: top, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
    }
}

extension ServiceSpec {
    /// The service as the spec writes it (`services[]` of a node spec, a cluster service record).
    public var jsonObject: [String: Any] {
        var object: [String: Any] = [
            "name": name, "type": type.rawValue, "clusterIP": clusterIP.description,
            "ports": ports.map { p -> [String: Any] in
                var port: [String: Any] = ["protocol": p.protocol.rawValue, "port": p.port, "targetPort": p.targetPort]
                if let name = p.name { port["name"] = name }
                if let nodePort = p.nodePort { port["nodePort"] = nodePort }
                return port
            },
            "backends": backends.map { b -> [String: Any] in
                var backend: [String: Any] = ["ip": b.ip.description]
                if let port = b.port { backend["port"] = port }
                if !b.ready { backend["ready"] = false }
                if b.serving != b.ready { backend["serving"] = b.serving }
                if b.terminating { backend["terminating"] = true }
                return backend
            }
                + podBackends.map { b -> [String: Any] in
                    var backend: [String: Any] = ["pod": b.pod]
                    if let port = b.port { backend["port"] = port }
                    return backend
                },
        ]
        if externalTrafficPolicy != .cluster { object["externalTrafficPolicy"] = externalTrafficPolicy.rawValue }
        if internalTrafficPolicy != .cluster { object["internalTrafficPolicy"] = internalTrafficPolicy.rawValue }
        if !externalIPs.isEmpty { object["externalIPs"] = externalIPs.map(\.description) }
        if !loadBalancerIPs.isEmpty { object["loadBalancerIPs"] = loadBalancerIPs.map(\.description) }
        if let healthCheckNodePort { object["healthCheckNodePort"] = healthCheckNodePort }
        if !loadBalancerSourceRanges.isEmpty {
            object["loadBalancerSourceRanges"] = loadBalancerSourceRanges.map(\.description)
        }
        if sessionAffinity != .none {
            object["sessionAffinity"] = sessionAffinity.rawValue
            object["sessionAffinityTimeoutSeconds"] = sessionAffinityTimeoutSeconds
        }
        return object
    }
}
