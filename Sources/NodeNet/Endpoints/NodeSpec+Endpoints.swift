extension NodeSpec {
    /// The node as it is meant to be with the CNI endpoints: the spec's pods, then one pod per
    /// endpoint, checked together by the spec's own rules (names, addresses, devices, network
    /// namespaces must not clash) and marked validated. Namespaces are not opened again (the
    /// spec's were checked when it was loaded, each endpoint's at its ADD): one that has gone
    /// since is not a problem here, the planner leaves that pod out and reports it.
    public func including(_ store: EndpointStore) throws -> NodeSpec {
        guard !store.endpoints.isEmpty else { return self }
        var merged = self
        merged.pods += store.endpoints.map(\.pod)
        merged.runtimePodIDs = Set(store.endpoints.map(\.pod.id))
        var validator = SpecValidator(
            spec: merged,
            podPaths: pods.indices.map { "pods[\($0)]" } + store.endpoints.map { "endpoints[\($0.attachment)]" },
            nodePaths: nodes.indices.map { "nodes[\($0)]" }, servicePaths: services.indices.map { "services[\($0)]" },
            namespaceExists: { _ in true })
        let problems = validator.validate()
        if !problems.isEmpty { throw SpecError(problems) }
        merged.markValidated()
        return merged
    }
}

extension NodeSpec {
    /// This spec with the CNI endpoints its agent keeps in the state directory: what every
    /// command that plans, applies or reports the node must work from (a hand-run apply from
    /// the spec alone would take the network from the runtime's pods).
    public func withEndpoints() throws -> NodeSpec {
        try including(EndpointStore.load(stateDirectory: stateDirectory, node: node.name, podCIDR: node.podCIDR))
    }
}
