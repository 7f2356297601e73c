/// What etcd says about the cluster, as one agent sees it: the nodes (with those whose
/// registration went, for the delete grace), every node's published pods and the services.
/// Built from a full listing and kept current by watch events; it never replays events into
/// the kernel: `spec(merging:)` gives the whole desired set, which the planner compares with
/// the kernel as it always does.
public struct ClusterView: Sendable {
    public let keys: ClusterKeys
    /// How long a node whose registration went is still programmed.
    public let grace: Duration
    /// The revision the view reflects.
    public private(set) var revision: Int64 = 0
    public private(set) var nodes: [String: ClusterNodeRecord] = [:]
    /// Nodes whose registration went, and since when; dropped `grace` after that.
    public private(set) var departed: [String: (record: ClusterNodeRecord, since: ContinuousClock.Instant)] = [:]
    /// node → pod → endpoint.
    public private(set) var endpoints: [String: [String: ClusterEndpointRecord]] = [:]
    public private(set) var services: [String: ServiceSpec] = [:]
    /// Keys whose value was not taken, and why (a record that fails the rules, a foreign key).
    public private(set) var rejected: [String: String] = [:]

    public init(keys: ClusterKeys, grace: Duration) {
        self.keys = keys
        self.grace = grace
    }

    /// Replaces everything with a full listing. Nodes known before and missing now depart now
    /// (they keep their grace), unless `initial` (the first listing of this agent: what went
    /// while it was down is gone at once).
    public mutating func replace(
        with keyValues: [(key: String, value: [UInt8])], revision: Int64, now: ContinuousClock.Instant, initial: Bool
    ) {
        let before = nodes
        let departedEndpoints = endpoints
        nodes = [:]
        endpoints = [:]
        services = [:]
        rejected = [:]
        for (key, value) in keyValues { put(key, value, now: now) }
        if initial {
            departed = [:]
        } else {
            for (name, record) in before where nodes[name] == nil && departed[name] == nil {
                departed[name] = (record, now)
                if let kept = departedEndpoints[name] { endpoints[name] = kept }
            }
            for name in departed.keys {
                if nodes[name] != nil {
                    departed[name] = nil
                } else if endpoints[name] == nil, let kept = departedEndpoints[name] {
                    endpoints[name] = kept
                }
            }
        }
        self.revision = revision
    }

    /// Applies one watch event batch (at `revision`). Node deletions are taken first, so a
    /// lease expiry (node and endpoints deleted in one revision) keeps the endpoints with the
    /// departed node for its grace.
    public mutating func apply(_ changes: [Change], revision: Int64, now: ContinuousClock.Instant) {
        for case .delete(let key) in changes {
            if case .node(let name) = keys.entry(key), let record = nodes.removeValue(forKey: name) {
                departed[name] = (record, now)
            }
        }
        for change in changes {
            switch change {
            case .put(let key, let value): put(key, value, now: now)
            case .delete(let key): delete(key)
            }
        }
        self.revision = max(self.revision, revision)
    }

    public enum Change: Sendable {
        case put(key: String, value: [UInt8])
        case delete(key: String)
    }

    /// Forgets departed nodes whose grace is over; true when one went.
    public mutating func expire(now: ContinuousClock.Instant) -> Bool {
        let over = departed.filter { now - $0.value.since >= grace }.map(\.key)
        for name in over {
            departed[name] = nil
            endpoints[name] = nil
        }
        return !over.isEmpty
    }

    /// When the next departed node's grace ends.
    public var nextExpiry: ContinuousClock.Instant? { departed.values.map { $0.since + grace }.min() }

    private mutating func put(_ key: String, _ value: [UInt8], now: ContinuousClock.Instant) {
        rejected[key] = nil
        switch keys.entry(key) {
        case .node(let name):
            switch ClusterNodeRecord.decode(value) {
            case .success(let record) where record.name == name:
                nodes[name] = record
                departed[name] = nil
            case .success(let record):
                rejected[key] = "the record names node \(record.name), not \(name)"
            case .failure(let error):
                rejected[key] = error.description
            }
        case .endpoint(let node, let pod):
            switch ClusterEndpointRecord.decode(value) {
            case .success(let record) where record.node == node && record.pod == pod:
                endpoints[node, default: [:]][pod] = record
            case .success:
                rejected[key] = "the record names another node or pod than its key"
            case .failure(let error):
                rejected[key] = error.description
            }
        case .service(let name):
            switch ClusterServiceRecord.decode(value) {
            case .success(let service) where service.name == name && ClusterServiceRecord.nameProblem(name) == nil:
                services[name] = service
            case .success(let service): rejected[key] = "the record names service \(service.name), not \(name)"
            case .failure(let error): rejected[key] = error.description
            }
        case .cidr: break
        case nil: rejected[key] = "not a key nodenet writes"
        }
    }

    private mutating func delete(_ key: String) {
        rejected[key] = nil
        switch keys.entry(key) {
        case .node(let name): nodes[name] = nil
        case .endpoint(let node, let pod):
            // A departed node's pods stay with it for its grace.
            if departed[node] == nil { endpoints[node]?[pod] = nil }
        case .service(let name): services[name] = nil
        case .cidr, nil: break
        }
    }

    /// The pods of nodes that are registered or in their grace, by `namespace/name`. Two nodes
    /// publishing one pod (a pod moved, the old node not yet expired): the first node by name
    /// wins, so every agent decides the same way.
    public var podAddresses: [String: IPAddress] {
        var out: [String: IPAddress] = [:]
        for node in endpoints.keys.sorted().reversed() {
            for (pod, record) in endpoints[node] ?? [:] { out[pod] = record.ip }
        }
        return out
    }
}
