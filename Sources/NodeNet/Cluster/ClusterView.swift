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
    /// node → pod → endpoint, of registered nodes (as published now).
    public private(set) var endpoints: [String: [String: ClusterEndpointRecord]] = [:]
    /// The pods departed nodes had when they left (kept with them for their grace; a node
    /// that registers again publishes its pods anew).
    public private(set) var departedEndpoints: [String: [String: ClusterEndpointRecord]] = [:]
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
        let endpointsBefore = endpoints
        let departedBefore = departed
        let departedEndpointsBefore = departedEndpoints
        nodes = [:]
        endpoints = [:]
        services = [:]
        rejected = [:]
        departed = [:]
        departedEndpoints = [:]
        for (key, value) in keyValues { put(key, value, now: now) }
        if !initial {
            // Known before and missing now: departed now (or still, since it left).
            for (name, record) in before where nodes[name] == nil {
                departed[name] = (record, now)
                departedEndpoints[name] = endpointsBefore[name] ?? [:]
            }
            for (name, gone) in departedBefore where nodes[name] == nil && departed[name] == nil {
                departed[name] = gone
                departedEndpoints[name] = departedEndpointsBefore[name] ?? [:]
            }
        }
        // A departed node's key is gone, so its pods' keys are too; any left over are not used.
        for name in departed.keys { endpoints[name] = nil }
        self.revision = revision
    }

    /// Applies one watch event batch (at `revision`). Node deletions are taken first, so a
    /// lease expiry (node and endpoints deleted in one revision) keeps the endpoints with the
    /// departed node for its grace.
    public mutating func apply(_ changes: [Change], revision: Int64, now: ContinuousClock.Instant) {
        for case .delete(let key) in changes {
            if case .node(let name) = keys.entry(key) { depart(name, now: now) }
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
            departedEndpoints[name] = nil
        }
        return !over.isEmpty
    }

    /// When the next departed node's grace ends.
    public var nextExpiry: ContinuousClock.Instant? { departed.values.map { $0.since + grace }.min() }

    /// The node's registration went: it departs with the pods it had.
    private mutating func depart(_ name: String, now: ContinuousClock.Instant) {
        guard let record = nodes.removeValue(forKey: name) else { return }
        departed[name] = (record, now)
        departedEndpoints[name] = endpoints.removeValue(forKey: name) ?? [:]
    }

    /// A record that fails the checks replaces what the key held (as a listing would see it):
    /// the previous value is not kept.
    private mutating func put(_ key: String, _ value: [UInt8], now: ContinuousClock.Instant) {
        rejected[key] = nil
        switch keys.entry(key) {
        case .node(let name):
            switch ClusterNodeRecord.decode(value) {
            case .success(let record) where record.name == name:
                nodes[name] = record
                departed[name] = nil
                departedEndpoints[name] = nil
            case .success(let record):
                rejected[key] = "the record names node \(record.name), not \(name)"
                depart(name, now: now)
            case .failure(let error):
                rejected[key] = error.description
                depart(name, now: now)
            }
        case .endpoint(let node, let pod):
            switch ClusterEndpointRecord.decode(value) {
            case .success(let record) where record.node == node && record.pod == pod:
                endpoints[node, default: [:]][pod] = record
            case .success:
                rejected[key] = "the record names another node or pod than its key"
                endpoints[node]?[pod] = nil
            case .failure(let error):
                rejected[key] = error.description
                endpoints[node]?[pod] = nil
            }
        case .service(let name):
            switch ClusterServiceRecord.decode(value) {
            case .success(let service) where service.name == name && ClusterServiceRecord.nameProblem(name) == nil:
                services[name] = service
            case .success(let service):
                rejected[key] = "the record names service \(service.name), not \(name)"
                services[name] = nil
            case .failure(let error):
                rejected[key] = error.description
                services[name] = nil
            }
        case .cidr: break
        case nil: rejected[key] = "not a key nodenet writes"
        }
    }

    private mutating func delete(_ key: String) {
        rejected[key] = nil
        switch keys.entry(key) {
        case .node(let name): nodes[name] = nil
        case .endpoint(let node, let pod): endpoints[node]?[pod] = nil
        case .service(let name): services[name] = nil
        case .cidr, nil: break
        }
    }

    /// The pods of a node: as published now, or as it had them when it departed.
    public func pods(of node: String) -> [String: ClusterEndpointRecord] {
        nodes[node] != nil ? endpoints[node] ?? [:] : departedEndpoints[node] ?? [:]
    }
}
