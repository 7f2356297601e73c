extension NodeSpec {
    /// The node as it is meant to be with the CNI endpoints: the spec's pods, then one pod per
    /// endpoint, checked together by the spec's own rules (names, addresses, devices, network
    /// namespaces must not clash) and marked validated. An endpoint whose network namespace is
    /// gone is not a problem here: the planner leaves such a pod out and reports it, as it does
    /// for a spec pod whose namespace vanished.
    public func including(_ store: EndpointStore) throws -> NodeSpec {
        guard !store.endpoints.isEmpty else { return self }
        var merged = self
        merged.pods += store.endpoints.map(\.pod)
        let endpointNamespaces = Set(store.endpoints.map(\.netns))
        var validator = SpecValidator(
            spec: merged,
            podPaths: pods.indices.map { "pods[\($0)]" } + store.endpoints.map { "endpoints[\($0.attachment)]" },
            nodePaths: nodes.indices.map { "nodes[\($0)]" }, servicePaths: services.indices.map { "services[\($0)]" },
            namespaceExists: { endpointNamespaces.contains($0) || Self.namespaceExists($0) })
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
