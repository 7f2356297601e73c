import BPF
import CNodeNetBPF

/// Service maps and socket LB. Consecutive writes of one kind (backends, frontends, their
/// removals) go out as batched map updates; each change records the step that restores what
/// it replaced.
final class ServiceExecutor: ChangeExecutor {
    private let context: ApplyContext

    init(context: ApplyContext) { self.context = context }

    func run(_ changes: DomainChanges<ServiceChange>, undo: inout [UndoStep]) throws {
        var start = 0
        while start < changes.count {
            var end = start + 1
            let key = changes[start].batchKind
            while end < changes.count, key != nil, changes[end].batchKind == key { end += 1 }
            let batch = changes[start..<end]
            // One batch for the group; any failure is found (and undone) change by change. The
            // batch's undo steps stay: part of it may have been written. Each restores a value
            // the plan knew, so running one twice (with the steps below) is harmless.
            if batch.count == 1 || (try? writeBatch(batch, undo: &undo)) == nil {
                for (i, change) in zip(batch.indices, batch) {
                    do { try execute(change, undo: &undo) } catch {
                        throw ChangeFailure(index: i, error: error)
                    }
                }
            }
            start = end
        }
    }

    private func execute(_ change: ServiceChange, undo: inout [UndoStep]) throws {
        let layout = context.bpffs
        switch change {
        case .attachSocket(let hook, let cgroup, let cgroupID, let replacing):
            try BPFFS.prepare(layout.socketLinkDirectory)
            let path = layout.socketLinkPath(BPFFSLayout.socketLinkName(hook, cgroupID: cgroupID))
            let fd = try context.loadedDatapath().programFD(hook)
            if let replacing {
                // Same build (a map migration rebinds the program): the pin keeps its name.
                try context.replaceLinkProgram(
                    pinnedAt: layout.socketLinkPath(replacing), with: fd, renamingTo: path, undo: &undo)
            } else {
                try CgroupLink.attach(programFD: fd, cgroup: cgroup, hook: hook, pinAt: path)
                undo.append(.unpin(path))
            }
        case .unpinSocket(let name):
            try BPFPin.remove(layout.socketLinkPath(name))
            undo.append(.irreversible("socket LB link \(name) was removed"))
        case .putSettings(let settings, let previous):
            try context.serviceMaps().settings.update(0, settings.mapValue)
            undo.append(restore(.settings(previous)))
        case .putNode(let ip, let flags, let previous):
            try context.serviceMaps().nodes.update(nodenet_node_key(ip), nodenet_node(flags: flags.rawValue))
            undo.append(restore(.node(ip, previous)))
        case .deleteNode(let ip, let previous):
            try context.serviceMaps().nodes.delete(nodenet_node_key(ip))
            undo.append(restore(.node(ip, previous)))
        case .putBackend(let id, let backend, _):
            try context.serviceMaps().setBackend(id, backend)
            undo.append(restore(replacedBy: change))
        case .deleteBackend(let id, _):
            try context.serviceMaps().setBackend(id, nil)
            undo.append(restore(replacedBy: change))
        case .putFrontend(let key, let entry, let previous, _):
            // A batch of one: its order (make-before-break) has one owner, ServiceMaps.Batch.
            // Undo recorded first: a write that fails halfway has already changed live slots,
            // and restoring is idempotent.
            let maps = try context.serviceMaps()
            undo.append(restore(replacedBy: change))
            var one = ServiceMaps.Batch()
            one.putFrontend(key, entry, previous: previous)
            try maps.write(one)
        case .deleteFrontend(let key, let previous):
            let maps = try context.serviceMaps()
            undo.append(restore(replacedBy: change))
            var one = ServiceMaps.Batch()
            one.removeFrontend(key, slots: previous.slots)
            try maps.write(one)
        case .deleteRevNat(let id, _):
            try context.serviceMaps().setRevNat(id, nil)
            undo.append(restore(replacedBy: change))
        case .clearMalformed(let entry):
            try context.serviceMaps().setBytes(0, of: entry)
            undo.append(restore(.malformed(entry)))
        case .putSourceRange(let range):
            try context.serviceMaps().sourceRanges.update(range.mapKey, 1)
            undo.append(restore(.sourceRange(range, present: false)))
        case .deleteSourceRange(let range):
            try context.serviceMaps().sourceRanges.delete(range.mapKey)
            undo.append(restore(.sourceRange(range, present: true)))
        case .putMaglevTable(let id, let table, let previous):
            let maps = try context.serviceMaps()
            let chunks = max(table.index.chunks, previous?.chunks ?? 0)
            undo.append(restore(.maglev(id, try maps.maglevSnapshot(id, index: previous), currentChunks: chunks)))
            try maps.putMaglev(id, table, previous: previous)
        case .deleteMaglevTable(let id, let previous):
            let maps = try context.serviceMaps()
            undo.append(
                restore(.maglev(id, try maps.maglevSnapshot(id, index: previous), currentChunks: previous.chunks)))
            try maps.removeMaglev(id, chunks: previous.chunks)
        }
    }

    /// Consecutive backend writes, or consecutive frontend writes, as batched map updates
    /// (one system call per map instead of one per entry). Frontends stay make-before-break:
    /// every new slot and id first, then every slot 0, then surplus slots go. Undo steps are
    /// recorded first, as for single writes.
    private func writeBatch(_ changes: Slice<DomainChanges<ServiceChange>>, undo: inout [UndoStep]) throws {
        let maps = try context.serviceMaps()
        var write = ServiceMaps.Batch()
        for i in changes.indices {
            switch changes[i] {
            case .putBackend(let id, let backend, _):
                write.putBackend(id, backend)
            case .putFrontend(let key, let entry, let previous, _):
                write.putFrontend(key, entry, previous: previous)
            case .deleteFrontend(let key, let previous):
                write.removeFrontend(key, slots: previous.slots)
            case .deleteRevNat(let id, _):
                write.removeRevNat(id)
            case .deleteBackend(let id, _):
                write.removeBackend(id)
            case .putSettings, .putNode, .deleteNode, .attachSocket, .unpinSocket, .putSourceRange,
                .deleteSourceRange, .putMaglevTable, .deleteMaglevTable, .clearMalformed:
                throw NodeNetError.state("\(changes[i]) is not a batched services change")
            }
        }
        undo.append(restore(batch: changes))
        try maps.write(write)
    }

    /// One step for a whole batch, from the changes themselves (which hold what each replaced):
    /// a step per change was two heap objects each, 85 MiB of the apply of 100 000 services.
    private func restore(batch changes: Slice<DomainChanges<ServiceChange>>) -> UndoStep {
        UndoStep("restoring \(changes.count) service map entries", changes: changes.count) { [context] in
            let maps = try context.serviceMaps()
            var undone = 0
            var failures: [String] = []
            for change in changes.reversed() {
                var failed = false
                for previous in Self.replaced(by: change).reversed() {
                    do { try Self.put(previous, back: maps) } catch {
                        failures.append("\(previous.what): \(error)")
                        failed = true
                    }
                }
                if !failed { undone += 1 }
            }
            if !failures.isEmpty { throw PartialUndo(undone: undone, failures: failures) }
        }
    }

    /// The step that puts back what one batchable change replaced (written alone).
    private func restore(replacedBy change: ServiceChange) -> UndoStep {
        let previous = Self.replaced(by: change)
        return UndoStep(previous.last?.what ?? "restoring \(change)") { [context] in
            let maps = try context.serviceMaps()
            for replaced in previous.reversed() { try Self.put(replaced, back: maps) }
        }
    }

    /// What a batchable change replaced, in the order it replaced them (its undo, alone or in
    /// a batch, puts them back in the reverse order).
    private static func replaced(by change: ServiceChange) -> [Previous] {
        switch change {
        case .putBackend(let id, _, let previous): [.backend(id, previous)]
        case .putFrontend(let key, let entry, let previous, let previousRevnat):
            [.revnat(entry.id, previousRevnat), .frontend(key, previous, written: entry.backendIDs.count)]
        case .deleteFrontend(let key, let previous): [.frontend(key, previous, written: 0)]
        case .deleteRevNat(let id, let previous): [.revnat(id, previous)]
        case .deleteBackend(let id, let previous): [.backend(id, previous)]
        case .putSettings, .putNode, .deleteNode, .attachSocket, .unpinSocket, .putSourceRange, .deleteSourceRange,
            .putMaglevTable, .deleteMaglevTable, .clearMalformed:
            []
        }
    }

    /// What a services change replaced, to put back.
    private enum Previous {
        case settings(NodeSettings?)
        case node(IPAddress, NodeFlags?)
        case backend(UInt32, BackendAddress?)
        /// `written`: the slots 1...written the change writes (with the snapshot's, what undo clears).
        case frontend(FrontendKey, FrontendSnapshot?, written: Int)
        case revnat(FrontendID, FrontendKey?)
        case sourceRange(SourceRange, present: Bool)
        case maglev(FrontendID, MaglevSnapshot?, currentChunks: Int)
        case malformed(MalformedArrayEntry)

        var what: String {
            switch self {
            case .settings: "restoring the datapath settings"
            case .node(let ip, _): "restoring node entry \(ip)"
            case .backend(let id, _): "restoring backend \(id)"
            case .frontend(let key, _, _): "restoring frontend \(key)"
            case .revnat(let id, _): "restoring frontend id \(id)"
            case .sourceRange(let range, _): "restoring source range \(range)"
            case .maglev(let id, _, _): "restoring the Maglev table of frontend \(id)"
            case .malformed(let entry): "restoring the malformed entry of \(entry.subject)"
            }
        }
    }

    private func restore(_ previous: Previous) -> UndoStep {
        UndoStep(previous.what) { [context] in
            try Self.put(previous, back: try context.serviceMaps())
        }
    }

    private static func put(_ previous: Previous, back maps: ServiceMaps) throws {
        switch previous {
        case .settings(let settings):
            try maps.settings.update(0, settings?.mapValue ?? nodenet_config())
        case .node(let ip, let flags):
            if let flags {
                try maps.nodes.update(nodenet_node_key(ip), nodenet_node(flags: flags.rawValue))
            } else {
                try maps.nodes.delete(nodenet_node_key(ip))
            }
        case .backend(let id, let backend):
            try maps.setBackend(id, backend)
        case .frontend(let key, let snapshot, let written):
            try maps.restore(key, snapshot, currentSlots: FrontendSnapshot.slots(written, mergedWith: snapshot))
        case .revnat(let id, let key):
            try maps.setRevNat(id, key)
        case .sourceRange(let range, let present):
            if present {
                try maps.sourceRanges.update(range.mapKey, 1)
            } else {
                _ = try maps.sourceRanges.delete(range.mapKey)
            }
        case .maglev(let id, let snapshot, let chunks):
            try maps.restoreMaglev(id, snapshot, currentChunks: chunks)
        case .malformed(let entry):
            try maps.setBytes(entry.bytes, of: entry)
        }
    }
}

extension ServiceChange {
    /// Changes of one kind that can share a batched map write; nil: written alone.
    fileprivate var batchKind: Int? {
        switch self {
        case .putBackend: 0
        case .putFrontend: 1
        case .deleteFrontend: 2
        case .deleteRevNat: 3
        case .deleteBackend: 4
        case .putSettings, .putNode, .deleteNode, .attachSocket, .unpinSocket, .putSourceRange, .deleteSourceRange,
            .putMaglevTable, .deleteMaglevTable, .clearMalformed:
            nil
        }
    }
}

extension FrontendSnapshot {
    /// Slots 1...written and the previous snapshot's (what undo must clear), made only when
    /// undo runs; only the slot numbers count.
    fileprivate static func slots(_ written: Int, mergedWith previous: FrontendSnapshot?) -> [UInt16: UInt32] {
        var slots = previous?.slots ?? [:]
        for slot in 0..<written where slots[UInt16(slot + 1)] == nil { slots[UInt16(slot + 1)] = 0 }
        return slots
    }
}

extension nodenet_node_key {
    fileprivate init(_ ip: IPAddress) { self.init(address: ip.ipv4Value!.bigEndian) }
}
