import Foundation

#if canImport(Glibc)
    import NodeNet
#endif

/// What the endpoint API asks of the agent's loop (one at a time, between reconciles).
public enum EndpointOperation: Sendable {
    /// CNI ADD: create (or return) the endpoint and answer once the pod can send and receive.
    case add(Endpoint.Attachment, netns: String, podNamespace: String, podName: String)
    /// CNI DEL: remove it; nothing to remove is not an error.
    case delete(Endpoint.Attachment)
    /// CNI CHECK: what differs for this endpoint, node side and pod side.
    case check(Endpoint.Attachment)
    /// CNI GC: remove every endpoint whose attachment is not kept.
    case collect(keeping: Set<Endpoint.Attachment>)
}

/// The agent's answer to an `EndpointOperation`.
public enum EndpointOutcome: Sendable {
    case added(EndpointResult)
    case deleted(Endpoint?)
    /// Empty when the endpoint is as it should be.
    case checked([String])
    case collected([Endpoint])
    case failed(EndpointError)
}

/// A created endpoint as a CNI result needs it: both interfaces, the address, the gateway and
/// the route the pod got.
public struct EndpointResult: Sendable, Codable, Equatable {
    public struct Interface: Sendable, Codable, Equatable {
        public var name: String
        public var mac: String
        /// The pod's network namespace (only for the pod's interface).
        public var sandbox: String?
    }
    public struct Route: Sendable, Codable, Equatable {
        public var dst: String
        public var gw: String?
    }
    public var endpoint: Endpoint
    public var hostInterface: Interface
    public var podInterface: Interface
    /// `10.0.2.5/32`.
    public var address: String
    public var gateway: String
    public var routes: [Route]
    public var mtu: UInt32?
    /// The host device's ifindex (the agent's own bookkeeping; not part of the answer).
    var hostIndex: InterfaceIndex?

    enum CodingKeys: String, CodingKey {
        case endpoint, hostInterface, podInterface, address, gateway, routes, mtu
    }
}
