import BPF
import CNodeNetBPF
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// One services change of a plan, with what it replaces (for undo).
enum ServiceOperation: Sendable, Equatable {
    case putSettings(NodeSettings, previous: NodeSettings?)
    case putNode(IPAddress, flags: UInt32, previous: UInt32?)
    case deleteNode(IPAddress, previous: UInt32)
    case putBackend(id: UInt32, BackendAddress, previous: BackendAddress?)
    case deleteBackend(id: UInt32, previous: BackendAddress)
    /// Writes a frontend make-before-break (revnat, new slots, slot 0, extra slots removed).
    case putFrontend(FrontendKey, FrontendEntry, previous: FrontendSnapshot?, previousRevnat: FrontendKey?)
    /// Removes a frontend: slot 0 first (no new connections), then its slots.
    case deleteFrontend(FrontendKey, previous: FrontendSnapshot)
    case deleteRevNat(id: UInt16, previous: FrontendKey)
    /// Attaches a socket-LB program to the cgroup (`replacing`: the pin of the same hook and
    /// cgroup from another build, whose link gets the new program).
    case attachSocket(CgroupLink.Hook, cgroup: String, cgroupID: UInt64, replacing: String?)
    case unpinSocket(name: String)
}

/// How to undo one services change.
enum ServiceUndo: Sendable, CustomStringConvertible {
    case settings(NodeSettings?)
    case node(IPAddress, UInt32?)
    case backend(UInt32, BackendAddress?)
    case frontend(FrontendKey, FrontendSnapshot?, current: [UInt16: UInt32])
    case revnat(UInt16, FrontendKey?)

    var description: String {
        switch self {
        case .settings: return "restoring the datapath settings"
        case .node(let ip, _): return "restoring node entry \(ip)"
        case .backend(let id, _): return "restoring backend \(id)"
        case .frontend(let key, _, _): return "restoring frontend \(key)"
        case .revnat(let id, _): return "restoring frontend id \(id)"
        }
    }
}

extension Applier {
    mutating func executeService(_ op: ServiceOperation) throws {
        switch op {
        case .attachSocket(let hook, let cgroup, let cgroupID, let replacing):
            let directory = spec.socketLinkDirectory
            try BPFFS.prepare(directory)
            let path = "\(directory)/\(hook.pinName(cgroupID: cgroupID))"
            let fd = try loadedDatapath().programFD(hook)
            if let replacing {
                // Same build (a map migration rebinds the program): the pin keeps its name.
                try replaceLinkProgram(pinnedAt: "\(directory)/\(replacing)", with: fd, renamingTo: path)
            } else {
                try CgroupLink.attach(programFD: fd, cgroup: cgroup, hook: hook, pinAt: path)
                recordUndo(.unpin(path))
            }
            return
        case .unpinSocket(let name):
            let path = "\(spec.socketLinkDirectory)/\(name)"
            guard unlink(path) == 0 || errno == ENOENT else { throw NodeNetError.state("removing \(path): \(String(cString: strerror(errno)))") }
            recordUndo(.irreversible("socket LB link \(name) was removed"))
            return
        default:
            break
        }
        let maps = try serviceMaps()
        switch op {
        case .putSettings(let settings, let previous):
            try maps.settings.update(0, settings.c)
            recordUndo(.service(.settings(previous)))
        case .putNode(let ip, let flags, let previous):
            try maps.nodes.update(nodenet_node_key(address: ip.ipv4Value!.bigEndian), nodenet_node(flags: flags))
            recordUndo(.service(.node(ip, previous)))
        case .deleteNode(let ip, let previous):
            try maps.nodes.delete(nodenet_node_key(address: ip.ipv4Value!.bigEndian))
            recordUndo(.service(.node(ip, previous)))
        case .putBackend(let id, let backend, let previous):
            try maps.backends.update(id, backend.c)
            recordUndo(.service(.backend(id, previous)))
        case .deleteBackend(let id, let previous):
            try maps.backends.delete(id)
            recordUndo(.service(.backend(id, previous)))
        case .putFrontend(let key, let entry, let previous, let previousRevnat):
            // Undo recorded first: a write that fails halfway has already changed live slots,
            // and restoring is idempotent.
            let current = Dictionary(uniqueKeysWithValues: entry.backendIDs.enumerated().map { (UInt16($0.offset + 1), $0.element) })
            let touched = current.merging(previous?.slots ?? [:]) { a, _ in a }
            recordUndo(.service(.revnat(entry.id, previousRevnat)))
            recordUndo(.service(.frontend(key, previous, current: touched)))
            try maps.put(key, entry, previousSlots: previous?.slots ?? [:])
        case .deleteFrontend(let key, let previous):
            recordUndo(.service(.frontend(key, previous, current: [:])))
            try maps.remove(key, slots: previous.slots)
        case .deleteRevNat(let id, let previous):
            try maps.revnat.delete(UInt32(id))
            recordUndo(.service(.revnat(id, previous)))
        case .attachSocket, .unpinSocket:
            break
        }
    }

    /// Consecutive backend writes, or consecutive frontend writes, as batched map updates
    /// (one system call per map instead of one per entry). Frontends stay make-before-break:
    /// every new slot and id first, then every slot 0, then surplus slots go. Undo steps are
    /// recorded first, as for single writes.
    mutating func executeServiceBatch(_ ops: [Operation]) throws {
        let maps = try serviceMaps()
        var backendKeys: [UInt32] = [], backendValues: [nodenet_backend] = []
        var revnatKeys: [UInt32] = [], revnatValues: [nodenet_revnat] = []
        var slotKeys: [nodenet_service_key] = [], slotValues: [nodenet_service] = []
        var masterKeys: [nodenet_service_key] = [], masterValues: [nodenet_service] = []
        var surplus: [nodenet_service_key] = []
        var masterRemovals: [nodenet_service_key] = [], slotRemovals: [nodenet_service_key] = []
        var revnatRemovals: [UInt32] = [], backendRemovals: [UInt32] = []
        for op in ops {
            switch op {
            case .service(.putBackend(let id, let backend, let previous)):
                recordUndo(.service(.backend(id, previous)))
                backendKeys.append(id)
                backendValues.append(backend.c)
            case .service(.putFrontend(let key, let entry, let previous, let previousRevnat)):
                let current = Dictionary(uniqueKeysWithValues: entry.backendIDs.enumerated().map { (UInt16($0.offset + 1), $0.element) })
                recordUndo(.service(.revnat(entry.id, previousRevnat)))
                recordUndo(.service(.frontend(key, previous, current: current.merging(previous?.slots ?? [:]) { a, _ in a })))
                revnatKeys.append(UInt32(entry.id))
                revnatValues.append(key.revnat)
                let before = previous?.slots ?? [:]
                for (i, id) in entry.backendIDs.enumerated() where before[UInt16(i + 1)] != id {
                    slotKeys.append(key.c(slot: UInt16(i + 1)))
                    slotValues.append(slotValue(id))
                }
                masterKeys.append(key.c(slot: 0))
                masterValues.append(FrontendMaster(count: UInt16(entry.backendIDs.count), id: entry.id, flags: entry.flags).c)
                for slot in before.keys where Int(slot) > entry.backendIDs.count { surplus.append(key.c(slot: slot)) }
            case .service(.deleteFrontend(let key, let previous)):
                recordUndo(.service(.frontend(key, previous, current: [:])))
                masterRemovals.append(key.c(slot: 0))
                for slot in previous.slots.keys.sorted() { slotRemovals.append(key.c(slot: slot)) }
            case .service(.deleteRevNat(let id, let previous)):
                recordUndo(.service(.revnat(id, previous)))
                revnatRemovals.append(UInt32(id))
            case .service(.deleteBackend(let id, let previous)):
                recordUndo(.service(.backend(id, previous)))
                backendRemovals.append(id)
            default:
                throw NodeNetError.state("not a batched services change")
            }
        }
        // Removals: slot 0 of every frontend first (no new choices), then their slots.
        try maps.services.delete(keys: masterRemovals)
        try maps.services.delete(keys: slotRemovals)
        try maps.revnat.delete(keys: revnatRemovals)
        try maps.backends.delete(keys: backendRemovals)
        try maps.backends.update(keys: backendKeys, values: backendValues)
        try maps.revnat.update(keys: revnatKeys, values: revnatValues)
        try maps.services.update(keys: slotKeys, values: slotValues)
        try maps.services.update(keys: masterKeys, values: masterValues)
        for key in surplus { try maps.services.delete(key) }
    }

    mutating func undoService(_ step: ServiceUndo) throws {
        let maps = try serviceMaps()
        switch step {
        case .settings(let previous):
            if let previous { try maps.settings.update(0, previous.c) } else { try maps.settings.update(0, nodenet_config()) }
        case .node(let ip, let flags):
            let key = nodenet_node_key(address: ip.ipv4Value!.bigEndian)
            if let flags { try maps.nodes.update(key, nodenet_node(flags: flags)) } else { try maps.nodes.delete(key) }
        case .backend(let id, let previous):
            if let previous { try maps.backends.update(id, previous.c) } else { try maps.backends.delete(id) }
        case .frontend(let key, let snapshot, let current):
            try maps.restore(key, snapshot, currentSlots: current)
        case .revnat(let id, let previous):
            if let previous { try maps.revnat.update(UInt32(id), previous.revnat) } else { try maps.revnat.delete(UInt32(id)) }
        }
    }
}
