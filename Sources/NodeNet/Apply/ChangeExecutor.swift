import BPF
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// How to undo one change that took effect: recorded by the executor that made it, run by
/// the applier's rollback, newest first.
struct UndoStep {
    /// What undoing does, said when it fails (`restoring sysctl …`).
    var what: String { describe() }
    /// Made only when said: an apply of 10 000 services records some 50 000 steps and, when it succeeds, says none.
    private let describe: () -> String
    /// nil: the change cannot be undone (`what` says what was lost).
    let run: (() throws -> Void)?
    /// How many changes it undoes (a batch of map writes is undone by one step).
    let changes: Int

    init(_ what: @autoclosure @escaping () -> String, changes: Int = 1, _ run: @escaping () throws -> Void) {
        self.describe = what
        self.run = run
        self.changes = changes
    }

    private init(irreversible what: String) {
        self.describe = { what }
        run = nil
        changes = 1
    }

    /// A change that cannot be undone (a deleted link comes back only as a new link).
    static func irreversible(_ what: String) -> UndoStep { UndoStep(irreversible: what) }

    /// Removes a pin this apply created.
    static func unpin(_ path: String) -> UndoStep { UndoStep("removing \(path)") { try BPFPin.remove(path) } }
}

/// A step of several changes that undid only some: how many, and what the others could not
/// put back.
struct PartialUndo: Error {
    let undone: Int
    let failures: [String]
}

/// The change of a run that failed: its index in the run and the error.
struct ChangeFailure: Error {
    let index: Int
    let error: any Error
}

/// Runs one domain's changes. The applier hands it each run of consecutive changes of its
/// domain, in plan order; the executor batches them as its kernel interface allows.
protocol ChangeExecutor {
    associatedtype Domain: DomainChange
    /// Runs `changes` in order, appending to `undo`, as each takes effect, the step that
    /// undoes it. Stops at the first failure, throwing `ChangeFailure` with its index.
    func run(_ changes: DomainChanges<Domain>, undo: inout [UndoStep]) throws
}

/// A run of a plan's changes of one domain, read in place as that domain's changes (indexed
/// from 0): an executor's copy of them was 48 MiB of the apply of 100 000 services, held until
/// the apply ended by the undo steps of its batches.
struct DomainChanges<Element: DomainChange>: RandomAccessCollection {
    private let plan: ArraySlice<PlannedChange>

    /// The leading run of `plan` in `Element`'s domain.
    init(leadingRunOf plan: ArraySlice<PlannedChange>) {
        // By index: a loop variable would copy each whole planned change (words and all).
        var end = plan.startIndex
        while end < plan.endIndex, plan[end].change.domain == Element.domain { end += 1 }
        self.plan = plan[..<end]
    }

    var startIndex: Int { 0 }
    var endIndex: Int { plan.count }

    subscript(i: Int) -> Element {
        precondition(i >= 0 && i < plan.count, "change \(i) of a run of \(plan.count)")
        return Element.of(plan[plan.startIndex + i].change)
    }
}

/// What the executors of one apply share: the node's sockets and spec, and the datapath's
/// objects and service maps, loaded on first use (a plan without datapath changes loads
/// nothing).
final class ApplyContext {
    let session: NodeSession
    let spec: NodeSpec
    let attachModes: AttachModes
    private var datapath: DatapathObjects?
    private var pinnedServiceMaps: ServiceMaps?

    init(session: NodeSession, spec: NodeSpec, attachModes: AttachModes) {
        self.session = session
        self.spec = spec
        self.attachModes = attachModes
    }

    var bpffs: BPFFSLayout { spec.bpffs }

    func loadedDatapath() throws -> DatapathObjects {
        if let datapath { return datapath }
        let loaded = try DatapathObjects.loaded(spec.bpffs)
        datapath = loaded
        return loaded
    }

    /// The service maps: the node's pinned ones when they all exist (no program needs
    /// loading for a services-only change), else those of the loaded objects.
    func serviceMaps() throws -> ServiceMaps {
        if let datapath { return datapath.services }
        if let pinnedServiceMaps { return pinnedServiceMaps }
        if let pinned = try ServiceMaps(pinnedIn: spec.bpffs) {
            pinnedServiceMaps = pinned
            return pinned
        }
        return try loadedDatapath().services
    }

    /// Gives the link pinned at `oldPath` (tcx or cgroup) the program `fd`, pinned as `path`
    /// from now on; undone by giving the link its previous program and name back.
    func replaceLinkProgram(
        pinnedAt oldPath: String, with fd: Int32, renamingTo path: String, undo: inout [UndoStep]
    ) throws {
        // Hold the program the link runs now, to give it back on rollback.
        let previous = try BPFLink.currentProgram(pinnedAt: oldPath)
        try BPFLink.replaceProgram(pinnedAt: oldPath, with: fd)
        undo.append(
            UndoStep("giving \(oldPath) its previous program") {
                try BPFLink.replaceProgram(pinnedAt: oldPath, with: previous.fd)
            })
        if oldPath != path {
            try BPFPin.move(from: oldPath, to: path)
            undo.append(UndoStep("moving \(path) back to \(oldPath)") { try BPFPin.move(from: path, to: oldPath) })
        }
    }
}
