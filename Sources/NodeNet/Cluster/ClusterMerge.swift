extension NodeSpec {
    /// The desired state of a node in cluster mode: this spec (its node, pods and settings)
    /// with the cluster's nodes and services. Whatever in the cluster fails the spec's rules
    /// against this node (an overlapping pod CIDR, a clashing service) is left out and said in
    /// `skipped`; the rest is used. The result is validated (pods were checked when this spec
    /// was loaded; their namespaces are not opened again).
    public func merging(_ view: ClusterView) -> (spec: NodeSpec, skipped: [String]) {
        var skipped = view.rejected.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }
        var merged = self
        let taken = clusterNodes(view, skipped: &skipped)
        merged.nodes = taken.nodes
        merged.services = clusterServices(view, pods: Self.podAddresses(view, of: taken), podCIDRs: taken.podCIDRs)
        merged.leaveOutServicesBeyondTheMaps(&skipped)
        return merged.leavingOutWhatFails(alone: self, skipped: skipped)
    }

    /// The cluster's nodes taken, with every taken node's pod CIDR (this node's first).
    private struct TakenNodes {
        var nodes: [RemoteNode] = []
        /// Each pod CIDR's node, in the order of `podCIDRs.prefixes`.
        var owners: [String]
        var podCIDRs = PrefixIndex()
    }

    /// Nodes: registered and in their grace, by name (every agent decides alike), each taken
    /// unless its pod CIDR or address clashes with this node's or one taken before it.
    private func clusterNodes(_ view: ClusterView, skipped: inout [String]) -> TakenNodes {
        var records = view.nodes
        for (name, departed) in view.departed where records[name] == nil { records[name] = departed.record }
        var addresses: Set<IPAddress> = [node.address]
        var sortedAddresses: [UInt32] = [node.address.ipv4Value ?? 0]
        var taken = TakenNodes(owners: [node.name])
        taken.podCIDRs.insert(node.podCIDR)
        for name in records.keys.sorted() where name != node.name {
            let record = records[name]!
            let start = record.podCIDR.network.address.ipv4Value ?? 0
            let end = start | (record.podCIDR.length >= 32 ? 0 : UInt32.max >> UInt32(record.podCIDR.length))
            let firstAbove = sortedAddresses.partitioningIndex { $0 >= start }
            if let space = nativeRoutingCIDR,
                !space.contains(record.podCIDR.network.address) || space.length > record.podCIDR.length
            {
                skipped.append("node \(name): podCIDR \(record.podCIDR) is outside nativeRoutingCIDR \(space)")
            } else if addresses.contains(record.address) {
                skipped.append("node \(name): address \(record.address) is already another node's")
            } else if let clash = taken.podCIDRs.firstOverlap(record.podCIDR) {
                skipped.append(
                    "node \(name): podCIDR \(record.podCIDR) overlaps \(taken.owners[clash])'s \(taken.podCIDRs.prefixes[clash])"
                )
            } else if let inside = taken.podCIDRs.containing(record.address).first {
                skipped.append("node \(name): address \(record.address) is inside \(taken.owners[inside])'s podCIDR")
            } else if firstAbove < sortedAddresses.count, sortedAddresses[firstAbove] <= end {
                skipped.append("node \(name): podCIDR \(record.podCIDR) holds another node's address")
            } else {
                taken.nodes.append(record.remoteNode)
                addresses.insert(record.address)
                let value = record.address.ipv4Value ?? 0
                sortedAddresses.insert(value, at: sortedAddresses.partitioningIndex { $0 >= value })
                taken.podCIDRs.insert(record.podCIDR)
                taken.owners.append(name)
            }
        }
        return taken
    }

    /// Pods, for backends named by pod: only those of nodes taken (this one included), inside
    /// their node's pod CIDR; two nodes publishing one pod: the first by name wins.
    private static func podAddresses(_ view: ClusterView, of taken: TakenNodes) -> [String: IPAddress] {
        var pods: [String: IPAddress] = [:]
        for (owner, cidr) in zip(taken.owners, taken.podCIDRs.prefixes).sorted(by: { $0.0 > $1.0 }) {
            for (pod, record) in view.pods(of: owner) where cidr.contains(record.ip) { pods[pod] = record.ip }
        }
        return pods
    }

    /// Services: pod backends resolved; then backends in the cluster's pod space on no node
    /// taken left out (nothing would route them).
    private func clusterServices(
        _ view: ClusterView, pods: [String: IPAddress], podCIDRs: PrefixIndex
    ) -> [ServiceSpec] {
        let podSpace = nativeRoutingCIDR
        return view.services.keys.sorted().map { name in
            var service = view.services[name]!
            for backend in service.podBackends {
                if let ip = pods[backend.pod],
                    !service.backends.contains(where: { $0.ip == ip && $0.port == backend.port })
                {
                    service.backends.append(ServiceBackend(ip: ip, port: backend.port))
                }
            }
            service.backends = service.backends.filter { backend in
                guard let podSpace, podSpace.contains(backend.ip) else { return true }
                return !podCIDRs.containing(backend.ip).isEmpty
            }
            service.podBackends = []
            return service
        }
    }

    /// More services than this node's service maps hold: the last ones (by name) are left out
    /// at once, so that the rest fits (one validation a service left out would take hours at
    /// tens of thousands).
    private mutating func leaveOutServicesBeyondTheMaps(_ skipped: inout [String]) {
        let capacity = loadBalancer.mapCapacity
        if capacity.isValid {
            var demand = ServiceMapDemand()
            for service in services { demand.add(service) }
            if !demand.fits(capacity) {
                var kept = ServiceMapDemand()
                let cut = services.firstIndex { service in
                    kept.add(service)
                    return !kept.fits(capacity)
                }!
                let size =
                    demand.smallest.map { "loadBalancer.mapEntries: \($0.entries) holds them all" }
                    ?? "none holds them all"
                skipped.append(
                    "services: \(services.count - cut) of \(services.count) (\(services[cut].name) and after, by name) do not fit this node's service maps (loadBalancer.mapEntries \(capacity.entries): \(capacity.maxFrontends) frontends, \(capacity.entries) entries and backends); \(size)"
                )
                services.removeSubrange(cut...)
            }
        }
    }

    /// What still fails the spec's rules (a clashing clusterIP or nodePort) is left out, by
    /// index, until the rest passes (each round leaves out at least one; services last). When
    /// nothing of the cluster is left to leave out, `alone` (the node's own spec, which passed
    /// alone) is programmed without the cluster.
    private func leavingOutWhatFails(alone: NodeSpec, skipped: [String]) -> (spec: NodeSpec, skipped: [String]) {
        var merged = self
        var skipped = skipped
        while true {
            var validator = SpecValidator(
                spec: merged, podPaths: merged.pods.indices.map { "pods[\($0)]" },
                nodePaths: merged.nodes.indices.map { "nodes[\($0)]" },
                servicePaths: merged.services.indices.map { "services[\($0)]" }, namespaceExists: { _ in true })
            let problems = validator.validate()
            if problems.isEmpty { break }
            var dropNodes: Set<Int> = []
            var dropServices: Set<Int> = []
            for problem in problems {
                if let i = Self.index(in: problem.path, of: "nodes") {
                    dropNodes.insert(i)
                    skipped.append("node \(merged.nodes[i].name): \(problem.message)")
                } else if let i = Self.index(in: problem.path, of: "services") {
                    dropServices.insert(i)
                    skipped.append("service \(merged.services[i].name): \(problem.message)")
                } else if let last = merged.services.indices.last {
                    // Map capacity: the last services go first.
                    dropServices.insert(last)
                    skipped.append("\(problem.path): \(problem.message)")
                } else {
                    // Nothing of the cluster's left to leave out: the node's own spec fails with
                    // it (it passed alone); the node is programmed without the cluster.
                    skipped.append("\(problem.path): \(problem.message)")
                    var alone = alone
                    alone.markValidated()
                    return (alone, skipped)
                }
            }
            merged.nodes = merged.nodes.enumerated().filter { !dropNodes.contains($0.offset) }.map(\.element)
            merged.services = merged.services.enumerated().filter { !dropServices.contains($0.offset) }.map(\.element)
        }
        merged.markValidated()
        return (merged, skipped)
    }

    /// `3` for `services[3].ports[0]` and `services`.
    private static func index(in path: String, of array: String) -> Int? {
        guard path.hasPrefix(array + "["), let close = path.firstIndex(of: "]") else { return nil }
        return Int(path[path.index(path.startIndex, offsetBy: array.count + 1)..<close])
    }
}

extension Array {
    /// The first index whose element satisfies `belongs` (which must be false, then true, along the array).
    fileprivate func partitioningIndex(where belongs: (Element) -> Bool) -> Int {
        var low = 0
        var high = count
        while low < high {
            let mid = (low + high) / 2
            if belongs(self[mid]) { high = mid } else { low = mid + 1 }
        }
        return low
    }
}
