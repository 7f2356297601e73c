/// Executes a plan: each run of consecutive changes of one domain goes to that domain's
/// executor, which batches them as its kernel interface allows and records how to undo each
/// change that took effect; the first failure rolls everything back, newest first.
struct Applier {
    private let netlink: NetlinkExecutor
    private let sysctls: SysctlExecutor
    private let datapath: DatapathExecutor
    private let services: ServiceExecutor
    private var undo: [UndoStep] = []

    init(session: NodeSession, spec: NodeSpec, attachModes: AttachModes) {
        let context = ApplyContext(session: session, spec: spec, attachModes: attachModes)
        netlink = NetlinkExecutor(session: session)
        sysctls = SysctlExecutor(namespace: session.namespace)
        datapath = DatapathExecutor(context: context)
        services = ServiceExecutor(context: context)
    }

    /// Runs all `changes`; on failure throws `ApplyFailure` after rolling back.
    mutating func run(_ changes: [PlannedChange]) throws {
        var start = 0
        while start < changes.count {
            let rest = changes[start...]
            do {
                switch rest.first!.change.domain {
                case .netlink: start += try run(netlink, rest)
                case .sysctl: start += try run(sysctls, rest)
                case .datapath: start += try run(datapath, rest)
                case .service: start += try run(services, rest)
                }
            } catch let failure as ChangeFailure {
                let rollback = rollBack()
                throw ApplyFailure(change: changes[start + failure.index], error: failure.error, rollback: rollback)
            }
        }
        undo.removeAll()  // (done: nothing rolls back now, and the verification need not hold them)
    }

    /// Hands the leading run of `changes` that belongs to `executor`'s domain to it; returns
    /// how many changes that run had.
    private mutating func run<E: ChangeExecutor>(_ executor: E, _ changes: ArraySlice<PlannedChange>) throws -> Int {
        let run = DomainChanges<E.Domain>(leadingRunOf: changes)
        precondition(!run.isEmpty, "the applier handed \(E.self) a change of another domain")
        try executor.run(run, undo: &undo)
        return run.count
    }

    /// Undoes every recorded step, newest first. Returns what could not be undone.
    mutating func rollBack() -> RollbackOutcome {
        var failures: [String] = []
        var undone = 0
        for step in undo.reversed() {
            guard let run = step.run else {
                failures.append(step.what)
                continue
            }
            do {
                try run()
                undone += step.changes
            } catch let partial as PartialUndo {
                undone += partial.undone
                failures += partial.failures
            } catch {
                failures.append("\(step.what): \(error)")
            }
        }
        undo.removeAll()
        return RollbackOutcome(undone: undone, failures: failures)
    }
}

public struct RollbackOutcome: Sendable, CustomStringConvertible {
    public var undone: Int
    public var failures: [String]
    public var complete: Bool { failures.isEmpty }

    public var description: String {
        complete
            ? "rolled back: \(undone) change\(undone == 1 ? "" : "s") undone, the node is as it was before the apply"
            : "rollback incomplete: \(undone) changes undone; not restored:\n"
                + failures.map { "  \($0)" }.joined(separator: "\n")
    }
}

/// An apply that failed midway: what failed, the kernel's error, and the rollback's outcome.
public struct ApplyFailure: Error, Sendable, CustomStringConvertible {
    public var change: PlannedChange
    public var error: any Error & Sendable
    public var rollback: RollbackOutcome

    package init(change: PlannedChange, error: any Error, rollback: RollbackOutcome) {
        self.change = change
        self.error = (error as? NetlinkError).map { $0 as any Error & Sendable } ?? NodeNetError.state("\(error)")
        self.rollback = rollback
    }

    public var description: String {
        "apply failed at \(change.subject) [\(change.namespace)]: \(error)\n\(rollback)"
    }
}
