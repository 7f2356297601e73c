import CNodeNetBPF

/// A frontend the spec asks for, with its backends in the spec's order.
public struct DesiredFrontend: Sendable, Equatable {
    public var key: FrontendKey
    /// `ClusterIP` or `NodePort` (a NodePort service's ClusterIP frontend is `ClusterIP`).
    public var type: ServiceType
    /// The spec's service name (`default/serversvc`).
    public var service: String
    public var backends: [BackendAddress]
    /// Terminating backends that take no new flows here but keep the ones they have (their
    /// entries stay in the backends map, out of the frontend's slots).
    public var retained: [BackendAddress] = []
    /// Only this node's backends (a `Local` traffic policy): with none, traffic is dropped.
    public var localOnly = false
    /// `sessionAffinity: ClientIP`: a client keeps its backend for this many seconds.
    public var affinityTimeout: UInt32?
    /// `loadBalancerSourceRanges` (a LoadBalancer address): the clients it takes from outside.
    public var sourceRanges: [IPPrefix] = []

    var flags: FrontendFlags {
        var flags: FrontendFlags = type.hasNodePorts ? .nodePort : []
        if localOnly { flags.insert(.localOnly) }
        if affinityTimeout != nil { flags.insert(.affinity) }
        if !sourceRanges.isEmpty { flags.insert(.sourceRanges) }
        return flags
    }
}

extension NodeSpec {
    /// The frontends of every service, as Cilium builds them: ClusterIP:port, and for a
    /// NodePort also this node's address:nodePort and the wildcard 0.0.0.0:nodePort. A `Local`
    /// traffic policy keeps only the backends in this node's pod CIDR on the frontends it
    /// governs (the node ports for `externalTrafficPolicy`, the clusterIP for `internal…`).
    public var serviceFrontends: [DesiredFrontend] {
        var result: [DesiredFrontend] = []
        result.reserveCapacity(services.count)
        for service in services {
            for port in service.ports {
                // New flows: the ready backends; none ready: the serving ones (terminating
                // included, KEP-1669). Terminating ones not chosen keep their flows (retained).
                // (Arrays made only where a service needs them: 10 000 services are planned in
                // tens of milliseconds, and a few copies each would be a good part of that.)
                func address(_ b: ServiceBackend) -> BackendAddress {
                    BackendAddress(address: b.ip, port: UInt16(b.port ?? port.targetPort), protocol: port.protocol)
                }
                let backends: [BackendAddress]
                if service.backends.allSatisfy({ $0.ready && !$0.terminating }) {
                    backends = service.backends.map(address)
                } else {
                    let ready = service.backends.filter { $0.ready && !$0.terminating }
                    backends = (ready.isEmpty ? service.backends.filter(\.serving) : ready).map(address)
                }
                let retained =
                    service.backends.contains(where: \.terminating)
                    ? service.backends.filter { $0.terminating }.map(address).filter { !backends.contains($0) } : []
                // The same backend named twice is one backend (a linear check: services have few).
                var unique: [BackendAddress] = []
                unique.reserveCapacity(backends.count)
                if backends.count > 16 {
                    var seen: Set<BackendAddress> = []
                    unique = backends.filter { seen.insert($0).inserted }
                } else {
                    for b in backends where !unique.contains(b) { unique.append(b) }
                }
                let external = service.externalTrafficPolicy == .local
                let local =
                    external || service.internalTrafficPolicy == .local
                    ? unique.filter { node.podCIDR.contains($0.address) } : []
                let affinity =
                    service.sessionAffinity == .clientIP ? UInt32(service.sessionAffinityTimeoutSeconds) : nil
                let internalLocal = service.internalTrafficPolicy == .local
                result.append(
                    DesiredFrontend(
                        key: FrontendKey(address: service.clusterIP, port: UInt16(port.port), protocol: port.protocol),
                        type: .clusterIP, service: service.name, backends: internalLocal ? local : unique,
                        retained: retained, localOnly: internalLocal, affinityTimeout: affinity))
                if service.type.hasNodePorts, let nodePort = port.nodePort {
                    for address in [node.address, IPAddress(ipv4: 0)] {
                        result.append(
                            DesiredFrontend(
                                key: FrontendKey(address: address, port: UInt16(nodePort), protocol: port.protocol),
                                type: .nodePort, service: service.name, backends: external ? local : unique,
                                retained: retained, localOnly: external, affinityTimeout: affinity))
                    }
                }
                // Load balancer and external addresses: reached from outside like node ports; the
                // source ranges govern the load balancer's.
                guard !service.loadBalancerIPs.isEmpty || !service.externalIPs.isEmpty else { continue }
                let ranges = Array(Set(service.loadBalancerSourceRanges)).sorted { $0.description < $1.description }
                for (address, isLoadBalancer) in service.loadBalancerIPs.map({ ($0, true) })
                    + service.externalIPs.map({ ($0, false) })
                {
                    result.append(
                        DesiredFrontend(
                            key: FrontendKey(address: address, port: UInt16(port.port), protocol: port.protocol),
                            type: .loadBalancer, service: service.name, backends: external ? local : unique,
                            retained: retained, localOnly: external, affinityTimeout: affinity,
                            sourceRanges: isLoadBalancer ? ranges : []))
                }
            }
        }
        return result
    }
}

extension TransportProtocol {
    var ipProtocol: UInt8 { self == .tcp ? 6 : 17 }

    init?(ipProtocol: UInt8) {
        switch ipProtocol {
        case 6: self = .tcp
        case 17: self = .udp
        default: return nil
        }
    }
}
