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
        // Maps found to hold exactly what the ids of a previous plan make of the frontends (a
        // verification, or a controller's plan after a converged one) need nothing (and, left
        // undecoded, show nothing to prune).
        let asWritten = observed.servicesAsWritten.map(ServiceIDs.init)
        let ids =
            asWritten ?? ServiceIDs.assign(desired.frontends, observed: observed, capacity: desired.serviceCapacity)
        serviceIDs = ids
        let changedBackends =
            asWritten != nil ? [] : Self.byID(ids.backends.lazy.filter { observed.backends[$0.value] != $0.key })
        // Room for every change below at once (tens of thousands: growing would move them all).
        reserveChanges(changedBackends.count + (asWritten == nil ? desired.frontends.count : 0))
        // Frontends that go, before any other write: the maps never hold both (see
        // `planServiceWrites`).
        planStaleFrontends(ids)
        // Source ranges before the frontends whose flag makes the datapath look them up.
        let ranges = Self.sourceRanges(desired.frontends, ids)
        wantedSourceRanges = ranges
        for range in ranges.subtracting(observed.sourceRanges).sorted() {
            addChange(
                .create, .service, .node, "source range \(range.prefix) of frontend \(range.id)",
                wanted: range.prefix.description, found: nil, .service(.putSourceRange(range)))
        }
        planServiceWrites(ids, changedBackends: changedBackends, frontends: asWritten == nil)
        planSocketLB()
    }

    /// Frontend `i` (of the desired ones) as `ids` make it, when the maps do not hold it so.
    func frontendWrite(_ i: Int, _ ids: ServiceIDs) -> FrontendEntry? {
        let frontend = desired.frontends[i]
        let id = ids.ordered[i]
        let wanted = FrontendEntry(
            id: id, flags: frontend.flags, backendIDs: Array(ids.slots(i)),
            affinityTimeout: frontend.affinityTimeout ?? 0)
        let observed = self.observed.services
        return observed.entry(frontend.key) != wanted || observed.revnat[id] != frontend.key ? wanted : nil
    }

    mutating func planFrontendWrite(_ i: Int, _ wanted: FrontendEntry) {
        let observed = self.observed.services
        let key = desired.frontends[i].key
        let previous = observed.snapshot(key)
        addChange(
            previous == nil ? .create : .update,
            .putFrontend(key, wanted, previous: previous, previousRevnat: observed.revnat[wanted.id]))
    }

    mutating func planBackendWrite(_ id: UInt32, _ backend: BackendAddress) {
        let previous = observed.services.backends[id]
        addChange(previous == nil ? .create : .update, .putBackend(id: id, backend, previous: previous))
    }

    mutating func planBackendDelete(_ id: UInt32, _ backend: BackendAddress) {
        addChange(.delete, .deleteBackend(id: id, previous: backend))
    }

    /// Frontends no wanted one has a key of (their slots, incomplete ones too).
    mutating func planStaleFrontends(_ ids: ServiceIDs) {
        let observed = self.observed.services
        // Every wanted frontend has an id (validation keeps them within the ids). Sorted only
        // what goes (a converged table of thousands costs no sort).
        let stale =
            observed.masters.keys.filter { ids.frontends[$0] == nil }
            + observed.slots.keys.filter { observed.masters[$0] == nil && ids.frontends[$0] == nil }
        for key in stale.sorted() { addChange(.delete, .deleteFrontend(key, previous: observed.snapshot(key)!)) }
    }

    /// Backends in id order (ids are unique): sorted as words, id and place, which is several
    /// times faster than sorting the pairs (hundreds of thousands in a plan).
    private static func byID(
        _ backends: some Sequence<(key: BackendAddress, value: UInt32)>
    ) -> [(key: BackendAddress, value: UInt32)] {
        let pairs = Array(backends)
        // Ids are handed out lowest first, so they are mostly dense: placed by id, no sort
        // (sorting 30 000 was a tenth of programming 10 000 services). Sorted as words otherwise.
        let maxID = pairs.lazy.map(\.value).max() ?? 0
        if Int(maxID) < 4 * pairs.count + 64 {
            var place = [Int32](repeating: -1, count: Int(maxID) + 1)
            var dense = true
            for (i, pair) in pairs.enumerated() {
                if place[Int(pair.value)] >= 0 { dense = false }  // an id twice: keep both, by sort
                place[Int(pair.value)] = Int32(i)
            }
            if dense { return place.filter { $0 >= 0 }.map { pairs[Int($0)] } }
        }
        var order = pairs.indices.map { UInt64(pairs[$0].value) << 32 | UInt64($0) }
        order.sort()
        return order.map { pairs[Int($0 & 0xFFFF_FFFF)] }
    }

    private mutating func planSocketLB() {
        guard let cgroup = desired.socketCgroup else { return }
        guard let cgroupID = observed.socketCgroupID else {
            addConflict("socket LB cgroup \(cgroup) does not exist (create it, or set socketLB.enabled to false)")
            return
        }
        for hook in CgroupLink.Hook.allCases {
            let name = BPFFSLayout.socketLinkName(hook, cgroupID: cgroupID)
            if observed.pins.socketLinks.contains(name) && !replacingPrograms { continue }
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
        guard
            datapath == .bpf || !observed.services.masters.isEmpty || !observed.services.slots.isEmpty
                || !observed.pins.socketLinks.isEmpty
        else {
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
        let ids =
            serviceIDs ?? ServiceIDs.assign(desired.frontends, observed: observed, capacity: desired.serviceCapacity)
        if serviceIDs == nil { planStaleFrontends(ids) }  // (else `planServices` took them out first)
        planMaglevPrune(ids)
        var wantedIDs = FrontendIDSet(desired.serviceCapacity.frontendIDs)
        for id in ids.frontends.values { _ = wantedIDs.insert(id) }
        for (id, key) in observed.revnat.lazy.filter({ !wantedIDs.contains($0.key) }).sorted(by: { $0.key < $1.key }) {
            addChange(.delete, .deleteRevNat(id: id, previous: key))
        }
        let wantedRanges = wantedSourceRanges ?? Self.sourceRanges(desired.frontends, ids)
        for range in observed.sourceRanges.subtracting(wantedRanges).sorted() {
            addChange(
                .delete, .service, .node, "source range \(range.prefix) of frontend \(range.id)", wanted: nil,
                found: range.prefix.description, .service(.deleteSourceRange(range)))
        }
        let staleBackends = staleBackendsLeft ?? Self.staleBackends(observed, ids)
        for (id, backend) in staleBackends.sorted(by: { $0.key < $1.key }) { planBackendDelete(id, backend) }
        // Entries that decode to nothing, unless this plan writes a backend or frontend there.
        if !observed.malformed.isEmpty {
            let backendIDs = Set(ids.backends.values)
            for entry in observed.malformed {
                let written =
                    entry.array == .backends ? backendIDs.contains(entry.id) : wantedIDs.contains(entry.id)
                if !written { addChange(.delete, .clearMalformed(entry)) }
            }
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
}
