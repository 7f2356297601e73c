/// What a health check node port answers for its service on this node (kube-proxy's): how many
/// of the service's ready backends are this node's pods.
public struct ServiceHealthCheck: Sendable, Equatable {
    /// `namespace/name`.
    public var service: String
    /// Ready (not terminating) backends in this node's pod CIDR: 0 means the load balancer
    /// should send this node nothing.
    public var localEndpoints: Int
}

extension NodeSpec {
    /// The health check node ports the services ask for, by port.
    public var serviceHealthChecks: [UInt16: ServiceHealthCheck] {
        var checks: [UInt16: ServiceHealthCheck] = [:]
        for service in services {
            guard let port = service.healthCheckNodePort, let port = UInt16(exactly: port) else { continue }
            let local = service.backends.filter { $0.ready && !$0.terminating && node.podCIDR.contains($0.ip) }
            checks[port] = ServiceHealthCheck(service: service.name, localEndpoints: local.count)
        }
        return checks
    }
}
