import BPF

/// The services part of a plan (BPF datapath): settings, node addresses, backends and
/// frontends in the pinned maps, and socket LB on the cgroup.
extension Planner {
    mutating func planServices() {
        guard datapath == .bpf, var settings = desired.settings else { return }
        settings.nativeIfindex = self.observed.node.links[device]?.index.unsigned ?? 0
        // The maps as they are (empty when the service maps themselves are being replaced: the
        // session does not read maps of another layout, and they are set aside as one unit).
        let observed = self.observed.services
        if observed.settings != settings {
            addChange(
                observed.settings == nil ? .create : .update, .service, .node, "datapath settings",
                wanted: settings.description,
                found: observed.settings?.description, .service(.putSettings(settings, previous: observed.settings)))
        }
        for (ip, flags) in desired.serviceNodes.sorted(by: { $0.key < $1.key }) where observed.nodes[ip] != flags {
            addChange(
                observed.nodes[ip] == nil ? .create : .update, .service, .node, "node address \(ip)",
                wanted: flags.description,
                found: observed.nodes[ip]?.description, .service(.putNode(ip, flags, previous: observed.nodes[ip])))
        }
        let ids = ServiceIDs.assign(desired.frontends, observed: observed)
        serviceIDs = ids
        for (backend, id) in ids.backends.filter({ observed.backends[$0.value] != $0.key }).sorted(by: {
            $0.value < $1.value
        }) {
            addChange(
                observed.backends[id] == nil ? .create : .update, .service, .node, "backend \(id)",
                wanted: backend.description,
                found: observed.backends[id]?.description,
                .service(.putBackend(id: id, backend, previous: observed.backends[id])))
        }
        // Source ranges before the frontends whose flag makes the datapath look them up.
        let ranges = Self.sourceRanges(desired.frontends, ids)
        wantedSourceRanges = ranges
        for range in ranges.subtracting(observed.sourceRanges).sorted() {
            addChange(
                .create, .service, .node, "source range \(range.prefix) of frontend \(range.id)",
                wanted: range.prefix.description, found: nil, .service(.putSourceRange(range)))
        }
        // Maglev tables before their frontends: a frontend is never seen without its table
        // (whatever an id's former frontend left in the chunks is overwritten first).
        planMaglevTables(ids)
        // Built once: per frontend it made planning quadratic (10 000 services: seconds).
        let backendsByID = Dictionary(ids.backends.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a })
        for frontend in desired.frontends {
            let id = ids.frontends[frontend.key]!
            let wanted = FrontendEntry(
                id: id, flags: frontend.flags, backendIDs: frontend.backends.map { ids.backends[$0]! },
                affinityTimeout: frontend.affinityTimeout ?? 0)
            let current = observed.entry(frontend.key)
            guard current != wanted || observed.revnat[id] != frontend.key else { continue }
            addChange(
                current == nil && observed.snapshot(frontend.key) == nil ? .create : .update, .service, .node,
                "\(frontend.type.rawValue) \(frontend.key)",
                wanted: Self.describe(wanted, backends: backendsByID),
                found: current.map { Self.describe($0, backends: observed.backends) },
                .service(
                    .putFrontend(
                        frontend.key, wanted, previous: observed.snapshot(frontend.key),
                        previousRevnat: observed.revnat[id])))
        }
        planSocketLB()
    }

    private mutating func planSocketLB() {
        guard let cgroup = desired.socketCgroup else { return }
        guard let cgroupID = observed.socketCgroupID else {
            addConflict("socket LB cgroup \(cgroup) does not exist (create it, or set socketLB.enabled to false)")
            return
        }
        for hook in CgroupLink.Hook.allCases {
            let name = BPFFSLayout.socketLinkName(hook, cgroupID: cgroupID)
            if observed.pins.socketLinks.contains(name) && !migratingMaps { continue }
            let old = socketPinToReplace(hook, cgroupID: cgroupID)
            addChange(
                old == nil ? .create : .update, .service, .node, "socket LB \(hook.rawValue) on \(cgroup)",
                wanted: "cgroup link, program \(name)", found: old,
                .service(.attachSocket(hook, cgroup: cgroup, cgroupID: cgroupID, replacing: old)))
        }
    }

    /// The pinned link an attachment of `hook` replaces: this build's own pin when it exists
    /// (rebound to new maps), else an older build's; nil when there is none.
    private func socketPinToReplace(_ hook: CgroupLink.Hook, cgroupID: UInt64) -> String? {
        let name = BPFFSLayout.socketLinkName(hook, cgroupID: cgroupID)
        if observed.pins.socketLinks.contains(name) { return name }
        return observed.pins.socketLinks.filter { BPFFSLayout.isSocketLink($0, of: hook, cgroupID: cgroupID) }.min()
    }

    mutating func planServicesPrune() {
        guard datapath == .bpf || !observed.services.frontendKeys.isEmpty || !observed.pins.socketLinks.isEmpty else {
            return
        }
        let observed = self.observed.services
        // Socket LB links no wanted attachment uses (cgroup changed or gone, socket LB off).
        var keep: Set<String> = []
        if desired.socketCgroup != nil, let id = self.observed.socketCgroupID {
            for hook in CgroupLink.Hook.allCases {
                keep.insert(BPFFSLayout.socketLinkName(hook, cgroupID: id))
                if let old = socketPinToReplace(hook, cgroupID: id) { keep.insert(old) }
            }
        }
        for name in self.observed.pins.socketLinks.sorted() where !keep.contains(name) {
            addChange(
                .delete, .service, .node, "socket LB link \(name)", wanted: nil, found: name,
                .service(.unpinSocket(name: name)))
        }
        let wantedKeys = Set(desired.frontends.map(\.key))
        // Sorted only what goes (a converged table of thousands costs no sort).
        for key in observed.frontendKeys.filter({ !wantedKeys.contains($0) }).sorted() {
            let type = observed.masters[key]?.flags.contains(.nodePort) == true ? "NodePort" : "ClusterIP"
            addChange(
                .delete, .service, .node, "\(type) \(key)", wanted: nil,
                found: observed.entry(key).map { Self.describe($0, backends: observed.backends) }
                    ?? "incomplete entries",
                .service(.deleteFrontend(key, previous: observed.snapshot(key)!)))
        }
        let ids = serviceIDs ?? ServiceIDs.assign(desired.frontends, observed: observed)
        planMaglevPrune(ids)
        let wantedIDs = Set(ids.frontends.values)
        for (id, key) in observed.revnat.filter({ !wantedIDs.contains($0.key) }).sorted(by: { $0.key < $1.key }) {
            addChange(
                .delete, .service, .node, "frontend id \(id)", wanted: nil, found: key.description,
                .service(.deleteRevNat(id: id, previous: key)))
        }
        let wantedRanges = wantedSourceRanges ?? Self.sourceRanges(desired.frontends, ids)
        for range in observed.sourceRanges.subtracting(wantedRanges).sorted() {
            addChange(
                .delete, .service, .node, "source range \(range.prefix) of frontend \(range.id)", wanted: nil,
                found: range.prefix.description, .service(.deleteSourceRange(range)))
        }
        let wantedBackends = Set(ids.backends.values)
        for (id, backend) in observed.backends.filter({ !wantedBackends.contains($0.key) }).sorted(by: {
            $0.key < $1.key
        }) {
            addChange(
                .delete, .service, .node, "backend \(id)", wanted: nil, found: backend.description,
                .service(.deleteBackend(id: id, previous: backend)))
        }
        for (ip, flags) in observed.nodes.sorted(by: { $0.key < $1.key }) where desired.serviceNodes[ip] == nil {
            addChange(
                .delete, .service, .node, "node address \(ip)", wanted: nil, found: flags.description,
                .service(.deleteNode(ip, previous: flags)))
        }
    }

    /// Every (frontend id, prefix) the desired LoadBalancer frontends' source ranges make.
    static func sourceRanges(_ frontends: [DesiredFrontend], _ ids: ServiceIDs) -> Set<SourceRange> {
        var ranges: Set<SourceRange> = []
        for frontend in frontends where !frontend.sourceRanges.isEmpty {
            guard let id = ids.frontends[frontend.key] else { continue }
            for prefix in frontend.sourceRanges { ranges.insert(SourceRange(id: id, prefix: prefix)) }
        }
        return ranges
    }

    static func describe(_ e: FrontendEntry, backends: [UInt32: BackendAddress]) -> String {
        let list = e.backendIDs.map { id in backends[id].map { "\($0.address):\($0.port)" } ?? "backend \(id)" }
        return "id \(e.id), \(list.isEmpty ? "no backends" : list.joined(separator: ", "))"
    }
}
