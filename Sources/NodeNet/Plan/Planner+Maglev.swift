/// The Maglev part of a services plan (`loadBalancer.algorithm: maglev`): every frontend the
/// packet path serves, with backends, has a table over them; other tables go. A table is
/// compared by its index (size, backends, digest) and built only when that differs.
extension Planner {
    /// The index each wanted table has, by frontend id (empty with the random algorithm).
    func wantedMaglevTables(_ ids: ServiceIDs) -> [FrontendID: (frontend: DesiredFrontend, index: MaglevIndex)] {
        guard let settings = desired.settings, settings.maglevSize != 0 else { return [:] }
        let size = Int(settings.maglevSize)
        var result: [FrontendID: (DesiredFrontend, MaglevIndex)] = [:]
        for frontend in desired.frontends where !frontend.backends.isEmpty {
            // Socket LB translates a ClusterIP at connect(): the packet path never sees one.
            guard frontend.type != .clusterIP || settings.packetLB, let id = ids.frontends[frontend.key] else {
                continue
            }
            let backends = frontend.backends.map { (address: $0, id: ids.backends[$0]!) }.sorted {
                $0.address < $1.address
            }
            result[id] = (frontend, MaglevIndex(size: size, backends: backends))
        }
        return result
    }

    /// Tables that are missing or were built from something else: after the backends they name,
    /// before the frontends that use them.
    mutating func planMaglevTables(_ ids: ServiceIDs) {
        let wanted = wantedMaglevTables(ids)
        wantedMaglev = wanted.mapValues(\.index)
        for (id, want) in wanted.sorted(by: { $0.key < $1.key }) { planMaglevTable(id, want, ids) }
    }

    /// Frontend `id`'s table, when the maps do not have it.
    mutating func planMaglevTable(
        _ id: FrontendID, _ want: (frontend: DesiredFrontend, index: MaglevIndex), _ ids: ServiceIDs
    ) {
        let observed = self.observed.services.maglev
        guard observed[id] != want.index else { return }
        let table = MaglevTable(
            size: want.index.size, backends: want.frontend.backends.map { (address: $0, id: ids.backends[$0]!) })
        addChange(
            observed[id] == nil ? .create : .update, .service, .node,
            "Maglev table of \(want.frontend.type.rawValue) \(want.frontend.key)",
            wanted: want.index.description, found: observed[id]?.description,
            .service(.putMaglevTable(id: id, table, previous: observed[id])))
    }

    /// Tables no wanted frontend has (its frontend gone, no backends left, the algorithm
    /// changed), before the ids and backends they name go.
    mutating func planMaglevPrune(_ ids: ServiceIDs) {
        let wanted = wantedMaglev ?? wantedMaglevTables(ids).mapValues(\.index)
        for (id, index) in observed.services.maglev.sorted(by: { $0.key < $1.key }) where wanted[id] == nil {
            addChange(
                .delete, .service, .node, "Maglev table of frontend id \(id)", wanted: nil,
                found: index.description, .service(.deleteMaglevTable(id: id, previous: index)))
        }
    }
}
