/// The BPF datapath's part of a plan: endpoints-map entries and attached programs. In
/// kernel mode, any filter of ours that is left is removed.
extension Planner {
    private func filter(on device: String, _ program: DatapathProgram) -> TCFilter? {
        observed.ingressFilters[device]?.first {
            $0.priority == program.priority && $0.handle == program.handle && DatapathProgram.isOurs($0)
        }
    }

    /// The entry a pod needs, from the links as observed (nil when its devices are new).
    private func wantedEntry(_ endpoint: DesiredState.Endpoint) -> EndpointEntry? {
        guard !recreated.contains(endpoint.hostDevice), let host = observed.node.links[endpoint.hostDevice],
            let pod = observed.pods[endpoint.pod.netns]?.links[NodeNetNames.podDevice],
            host.peerIndex == pod.index, let hostMAC = host.address, let podMAC = pod.address
        else { return nil }
        return EndpointEntry(ifindex: host.index.unsigned, hostMAC: hostMAC, podMAC: podMAC)
    }

    /// Whether this build's maps replace incompatible pinned ones in this plan: then every
    /// program is replaced before the old maps go, and every entry is written again when the
    /// endpoints map is one of them (a compatible one is reused as it is: its entries, and
    /// their undo on rollback, stay those of the map the running programs use).
    var migratingMaps: Bool { datapath == .bpf && !observed.pins.incompatibleMaps.isEmpty }

    /// Whether every program is attached again: in a migration, and after one that was cut
    /// short (maps left aside), since the programs may still use the maps set aside: this
    /// build's maps were pinned, then the process stopped before it replaced the programs (whose
    /// names, build and tags are the same either way). They are replaced before those maps go.
    var replacingPrograms: Bool { migratingMaps || (datapath == .bpf && !observed.pins.setAsideMaps.isEmpty) }

    /// Incompatible pinned maps are set aside before anything loads this build's objects.
    mutating func planMapMigration() {
        guard migratingMaps else { return }
        let maps = observed.pins.incompatibleMaps.keys.sorted()
        addChange(
            .update, .datapath, .node, "pinned maps \(maps.map(\.rawValue).joined(separator: ", "))",
            wanted: "this build's layout and sizes (new maps, filled, then programs replaced)",
            found: maps.map { "\($0.rawValue): \(observed.pins.incompatibleMaps[$0]!)" }.joined(separator: "; "),
            .setAsideMaps(maps))
    }

    /// Whether the spec's bpffs directory changed while programs bound to the former one's
    /// maps may still be attached: then every program is replaced before those pins go.
    var rebindingPins: Bool { datapath == .bpf && !observed.formerDirectories.isEmpty }

    /// Endpoint map entries and programs of the wanted endpoints, and (`nativeDevice`) the
    /// native device's program.
    mutating func planDatapath(nativeDevice: Bool) {
        guard datapath == .bpf else { return }
        // Entries first, then the programs.
        var deviceIsNew: [String: Bool] = [:]
        for endpoint in desired.endpoints where observed.pods[endpoint.pod.netns] != nil {
            let current = observed.endpointEntries[endpoint.pod.ip]  // empty when the endpoints map is incompatible
            let wanted = wantedEntry(endpoint)
            deviceIsNew[endpoint.hostDevice] = wanted == nil
            if wanted == nil || current != wanted {
                addChange(
                    current == nil ? .create : .update, .datapath, .node, "endpoint map entry \(endpoint.pod.ip)",
                    wanted: wanted?.description ?? "lxc \(endpoint.hostDevice) and the pod's eth0",
                    found: current?.description,
                    .putEndpointEntry(
                        ip: endpoint.pod.ip, hostDevice: endpoint.hostDevice, netns: endpoint.pod.netns,
                        previous: current))
            }
        }
        for endpoint in desired.endpoints where observed.pods[endpoint.pod.netns] != nil {
            attach(.fromContainer, on: endpoint.hostDevice, deviceIsNew: deviceIsNew[endpoint.hostDevice]!)
        }
        if nativeDevice && observed.node.links[device] != nil { attach(.fromNetdev, on: device, deviceIsNew: false) }
    }

    private mutating func attach(_ program: DatapathProgram, on device: String, deviceIsNew: Bool) {
        if attachModes.mode(for: program) == .tcx {
            let index = deviceIsNew ? nil : observed.node.links[device]?.index
            let pin = index.map { BPFFSLayout.tcxLinkName(program, device: device, ifindex: $0) }
            if !replacingPrograms, let pin, observed.pins.tcxLinks.contains(pin),
                observed.pins.tcxLinkProblems[pin] == nil
            {
                return
            }
            var sameDevice = index.flatMap { i in
                observed.pins.tcxLinks.filter { BPFFSLayout.isTCXLink($0, of: program, device: device, ifindex: i) }
                    .min()
            }
            let problem = sameDevice.flatMap { observed.pins.tcxLinkProblems[$0] }
            if let stale = sameDevice, problem?.replaceable == false {
                // A detached link (or one elsewhere) cannot take a new program: a fresh one replaces it.
                addChange(
                    .delete, .datapath, .node, "tcx link \(stale)", wanted: nil, found: "\(stale): \(problem!)",
                    .unpinLink(name: stale))
                sameDevice = nil
            }
            addChange(
                sameDevice == nil ? .create : .update, .datapath, .node, "\(program.rawValue) on \(device)",
                wanted: "tcx ingress link, program \(program.filterName)",
                found: sameDevice.map { "tcx link \($0)" + (problem.map { ": \($0)" } ?? "") },
                .attachProgram(device: device, program, replacing: sameDevice != nil))
            return
        }
        let current = deviceIsNew ? nil : filter(on: device, program)
        guard replacingPrograms || rebindingPins || current?.bpf?.name != program.filterName else { return }
        addChange(
            current == nil ? .create : .update, .datapath, .node, "\(program.rawValue) on \(device)",
            wanted: "tc ingress bpf \(program.filterName) direct-action", found: current?.bpf?.name,
            .attachProgram(device: device, program, replacing: current != nil))
    }

    /// tcx links that no wanted attachment uses (device gone or recreated, pod removed,
    /// another mode in effect).
    private mutating func pruneLinks(keeping wanted: Set<String>) {
        let unpinned = Set(
            changes.compactMap { c -> String? in
                if case .datapath(.unpinLink(let n)) = c.change { return n } else { return nil }
            })
        for name in observed.pins.tcxLinks.sorted() where !wanted.contains(name) && !unpinned.contains(name) {
            addChange(.delete, .datapath, .node, "tcx link \(name)", wanted: nil, found: name, .unpinLink(name: name))
        }
    }

    /// Entries of pods that left the spec: before their lxc devices are deleted (an entry
    /// must never point at a device that is gone or, worse, at a reused ifindex).
    mutating func planEndpointEntryPrune() {
        guard datapath == .bpf && !migratingMaps else { return }
        let wanted = Set(desired.endpoints.map(\.pod.ip))
        for (ip, entry) in observed.endpointEntries.sorted(by: { $0.key < $1.key }) where !wanted.contains(ip) {
            addChange(
                .delete, .datapath, .node, "endpoint map entry \(ip)", wanted: nil, found: entry.description,
                .deleteEndpointEntry(ip: ip, previous: entry))
        }
    }

    mutating func planDatapathPrune() {
        for (former, pins) in observed.formerDirectories.sorted(by: { $0.key.directory < $1.key.directory }) {
            addChange(
                .delete, .datapath, .node, "pins in former bpffs directory \(former.directory)", wanted: nil,
                found: pins.joined(separator: ", "),
                .dropFormerDirectory(former))
        }
        if migratingMaps {
            addChange(
                .delete, .datapath, .node, "pinned maps set aside", wanted: nil,
                found: observed.pins.incompatibleMaps.keys.sorted().map(BPFFSLayout.setAsideName).joined(
                    separator: ", "),
                .dropSetAsideMaps(observed.pins.incompatibleMaps.keys.sorted()))
        }
        if !migratingMaps && !observed.pins.setAsideMaps.isEmpty {
            addChange(
                .delete, .datapath, .node, "pinned maps left aside", wanted: nil,
                found: observed.pins.setAsideMaps.map(BPFFSLayout.setAsideName).joined(separator: ", "),
                .dropSetAsideMaps(observed.pins.setAsideMaps))
        }
        if datapath == .bpf && attachModes.usesTCX {
            // Links in use: the current pin of each wanted tcx attachment (devices as observed).
            var keep: Set<String> = []
            if attachModes.endpoints == .tcx {
                for endpoint in desired.endpoints where !recreated.contains(endpoint.hostDevice) {
                    if let i = observed.node.links[endpoint.hostDevice]?.index {
                        keep.insert(BPFFSLayout.tcxLinkName(.fromContainer, device: endpoint.hostDevice, ifindex: i))
                    }
                }
            }
            if attachModes.nativeDevice == .tcx, let i = observed.node.links[device]?.index {
                keep.insert(BPFFSLayout.tcxLinkName(.fromNetdev, device: device, ifindex: i))
            }
            // A link being replaced in place keeps its (renamed) pin: do not prune those.
            let replaced = changes.compactMap { c -> String? in
                if case .datapath(.attachProgram(let d, let p, true)) = c.change, let i = observed.node.links[d]?.index
                {
                    return observed.pins.tcxLinks.filter { BPFFSLayout.isTCXLink($0, of: p, device: d, ifindex: i) }
                        .min()
                }
                return nil
            }
            pruneLinks(keeping: keep.union(replaced))
        } else {
            pruneLinks(keeping: [])
        }
        // Kernel mode, or a program that attaches through tcx here: our cls_bpf filters for it
        // come off (switching modes).
        for (device, filters) in observed.ingressFilters.sorted(by: { $0.key < $1.key }) {
            for f in filters where DatapathProgram.isOurs(f) {
                // The filter's name says whose program it is (an unknown one of ours: by device).
                let program =
                    f.bpf?.name.flatMap(DatapathProgram.init(filterName:))
                    ?? (device == self.device ? .fromNetdev : .fromContainer)
                guard datapath != .bpf || attachModes.mode(for: program) == .tcx else { continue }
                addChange(
                    .delete, .datapath, .node, "\(f.bpf?.name ?? "filter") on \(device)", wanted: nil,
                    found: "tc ingress bpf \(f.bpf?.name ?? "")",
                    .detachProgram(device: device, priority: f.priority, handle: f.handle))
            }
        }
    }
}
