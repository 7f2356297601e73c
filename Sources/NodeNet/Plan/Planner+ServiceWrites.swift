import BPF

/// The order of a services plan's backend, Maglev and frontend writes, within the maps' size.
///
/// Frontends that go are out before anything is written (`planStaleFrontends`), and a backend
/// no frontend will name goes as soon as none does: a spec that replaces a node's services never
/// needs the old set and the new one in the maps together (the kernel refuses inserts past a
/// map's size, and the node could never take such a spec). When the backends map has room for
/// every new backend next to the old ones still named, all backends go in, then the Maglev
/// tables, then the frontends (a few batched writes; those that take no more service entries
/// first); the old backends after them. When it has
/// not (most backends replaced at once on maps sized for one set), the frontends are written in
/// groups that fit: a group's new backends, its tables, its frontends, then the old backends
/// none names any longer (frontends that need no new backend first, as they only free; in
/// each part, those that take no more service entries first). Each frontend still changes in
/// one write, to backends that exist; one that cannot fit even alone is a conflict of the plan.
extension Planner {
    mutating func planServiceWrites(
        _ ids: ServiceIDs, changedBackends: [(key: BackendAddress, value: UInt32)], frontends: Bool
    ) {
        guard frontends else {
            planMaglevTables(ids)
            return
        }
        var writes: [(i: Int, entry: FrontendEntry)] = []
        for i in desired.frontends.indices {
            if let entry = frontendWrite(i, ids) { writes.append((i, entry)) }
        }
        let observed = self.observed.services
        // Stale backends, and how many kept frontends name each (all of those are written below
        // with other slots; the frontends that go are out already).
        var stale = Self.staleBackends(observed, ids)
        defer { staleBackendsLeft = stale }  // (what the prune still takes out)
        var names: [UInt32: Int] = [:]
        if !stale.isEmpty {
            for (key, slots) in observed.slots where ids.frontends[key] != nil {
                for id in slots.values where stale[id] != nil { names[id, default: 0] += 1 }
            }
        }
        let unnamed = stale.keys.filter { names[$0] == nil }
        for id in unnamed.sorted() { planBackendDelete(id, stale.removeValue(forKey: id)!) }

        let creates = changedBackends.filter { observed.backends[$0.value] == nil }
        var room = Int(desired.serviceCapacity.entries) - (observed.backends.count - unnamed.count)
        if creates.count <= room {
            for (backend, id) in changedBackends { planBackendWrite(id, backend) }
            planMaglevTables(ids)
            // As the batch writes them (its waves): the frontends that add no services map
            // entry first, as they free room there. Written one at a time (a batch that failed
            // is tried so), this order fits a nearly full map as the batch does.
            var growing: [(i: Int, entry: FrontendEntry)] = []
            for write in writes {
                if servicesMapKeys(of: write).added > 0 {
                    growing.append(write)
                } else {
                    planFrontendWrite(write.i, write.entry)
                }
            }
            for write in growing { planFrontendWrite(write.i, write.entry) }
            return
        }
        // In groups. Backends whose address changes keep their ids (no room needed): first.
        for (backend, id) in changedBackends where observed.backends[id] != nil { planBackendWrite(id, backend) }
        var pending: [UInt32: BackendAddress] = [:]
        pending.reserveCapacity(creates.count)
        for (backend, id) in creates { pending[id] = backend }
        let tables = wantedMaglevTables(ids)
        wantedMaglev = tables.mapValues(\.index)
        // Tables of frontends written in no group, and backends no written frontend names,
        // with the first group.
        let written = Set(writes.map(\.entry.id))
        var named: Set<UInt32> = []
        for write in writes { named.formUnion(backendIDs(of: write, ids)) }
        var group: [(UInt32, BackendAddress)] = pending.filter { !named.contains($0.key) }.map { ($0.key, $0.value) }
        for (id, _) in group { pending[id] = nil }
        var firstTables = tables.filter { !written.contains($0.key) }
        // Frontends that need no new backend first: they only free old ones. In each part,
        // those that add no services map entry first, as they free room there.
        let needsNew = writes.map { backendIDs(of: $0, ids).contains { pending[$0] != nil } }
        let keys = writes.map(servicesMapKeys(of:))
        let order = writes.indices.sorted {
            (needsNew[$0] ? 1 : 0, keys[$0].added > 0 ? 1 : 0, $0) < (
                needsNew[$1] ? 1 : 0, keys[$1].added > 0 ? 1 : 0, $1
            )
        }
        var remaining = order.map { (write: writes[$0], keys: keys[$0]) }
        var slotRoom = Int(desired.serviceCapacity.entries) - Self.serviceEntries(observed, kept: ids)
        var refused = false
        repeat {  // (once at least: the first group's backends and tables, with no frontend to write)
            // The group: every remaining frontend that fits next to those taken, as the batch
            // writes them (the services map's entries freed by the frontends that add none go
            // before any is added); the others wait for the room this group frees.
            var taken: [(i: Int, entry: FrontendEntry)] = []
            var waiting: [(write: (i: Int, entry: FrontendEntry), keys: (added: Int, freed: Int))] = []
            var (added, freedEntries, net) = (0, 0, 0)
            for (n, candidate) in remaining.enumerated() {
                if !taken.isEmpty && waiting.count >= 1024 {  // (enough for one group; bounded work)
                    waiting += remaining[n...]
                    break
                }
                var new: [(UInt32, BackendAddress)] = []
                for id in backendIDs(of: candidate.write, ids) {
                    if let backend = pending.removeValue(forKey: id) { new.append((id, backend)) }
                }
                let fits =
                    group.count + new.count <= room
                    && (candidate.keys.added == 0 || added + candidate.keys.added <= slotRoom + freedEntries)
                guard fits || refused else {
                    for (id, backend) in new { pending[id] = backend }
                    waiting.append(candidate)
                    continue
                }
                group += new
                taken.append(candidate.write)
                if candidate.keys.added == 0 {
                    freedEntries += candidate.keys.freed
                } else {
                    added += candidate.keys.added
                }
                net += candidate.keys.freed - candidate.keys.added
            }
            if taken.isEmpty, let first = remaining.first {
                // Nothing fits: no order of writes makes this plan's frontends before it breaks
                // them. The plan says why (the first one), and the rest go in one group.
                refuse(
                    first.write, backends: backendIDs(of: first.write, ids).count { pending[$0] != nil },
                    room: room - group.count, entries: first.keys.added, entryRoom: slotRoom)
                refused = true
                continue
            }
            for (id, backend) in group.sorted(by: { $0.0 < $1.0 }) { planBackendWrite(id, backend) }
            for write in taken {
                if let table = tables[write.entry.id] { firstTables[write.entry.id] = table }
            }
            for (id, want) in firstTables.sorted(by: { $0.key < $1.key }) { planMaglevTable(id, want, ids) }
            var freed: [UInt32] = []
            for write in taken {
                planFrontendWrite(write.i, write.entry)
                for id in observed.slots[desired.frontends[write.i].key]?.values ?? [:].values {
                    guard let count = names[id] else { continue }
                    names[id] = count > 1 ? count - 1 : nil
                    if count == 1 { freed.append(id) }
                }
            }
            for id in freed.sorted() { planBackendDelete(id, stale.removeValue(forKey: id)!) }
            room += freed.count - group.count
            slotRoom += net
            (group, firstTables, remaining) = ([], [:], waiting)
        } while !remaining.isEmpty
    }

    /// A plan whose frontends cannot all be written within the maps' size, in any order of
    /// writes that keeps each before it breaks (its old backends and its new ones at once): it
    /// says so, with the first that does not fit, rather than failing halfway through the apply.
    private mutating func refuse(
        _ write: (i: Int, entry: FrontendEntry), backends: Int, room: Int, entries: Int, entryRoom: Int
    ) {
        let frontend = desired.frontends[write.i]
        let setting = "loadBalancer.mapEntries (\(desired.serviceCapacity.entries))"
        let what = "\(frontend.type.rawValue) \(frontend.key)"
        if room < 0 {
            addConflict(
                "the backends map has no room for the new backends no changed frontend names (\(-room) too many) next to those in use; raise \(setting)"
            )
        } else if backends > room {
            addConflict(
                "\(what) needs \(backends) new backends and the backends map has room for \(room) while the old ones are still in use; replace its backends over two applies, or raise \(setting)"
            )
        }
        if entries > max(entryRoom, 0) {
            addConflict(
                "\(what) needs \(entries) more service map entries and the map has room for \(max(entryRoom, 0)) while the other frontends' old entries are still in use; apply the change over two applies, or raise \(setting)"
            )
        }
    }

    /// The services map's entries of the frontends `ids` keeps (slot 0 and each slot).
    static func serviceEntries(_ observed: ObservedServices, kept ids: ServiceIDs) -> Int {
        var count = 0
        for key in observed.masters.keys where ids.frontends[key] != nil { count += 1 }
        for (key, slots) in observed.slots where ids.frontends[key] != nil { count += slots.count }
        return count
    }

    /// Backends under an id no wanted backend has. A backend whose address still has its id
    /// stays; the others only if another address took the id (a set built then: a converged
    /// node needs none).
    static func staleBackends(_ observed: ObservedServices, _ ids: ServiceIDs) -> [UInt32: BackendAddress] {
        var wantedIDs: Set<UInt32>?
        var stale: [UInt32: BackendAddress] = [:]
        for (id, backend) in observed.backends where ids.backends[backend] != id {
            if wantedIDs == nil { wantedIDs = Set(ids.backends.values) }
            if !wantedIDs!.contains(id) { stale[id] = backend }
        }
        return stale
    }

    /// The services map keys a frontend's write adds and frees over the maps as found.
    private func servicesMapKeys(of write: (i: Int, entry: FrontendEntry)) -> (added: Int, freed: Int) {
        write.entry.servicesMapKeys(over: observed.services.snapshot(desired.frontends[write.i].key))
    }

    /// The backends a frontend's write names: its slots' and its retained ones'.
    private func backendIDs(of write: (i: Int, entry: FrontendEntry), _ ids: ServiceIDs) -> [UInt32] {
        write.entry.backendIDs + desired.frontends[write.i].retained.compactMap { ids.backends[$0] }
    }
}
