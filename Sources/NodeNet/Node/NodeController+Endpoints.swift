import Foundation

/// One endpoint at a time (CNI ADD and DEL): planned, applied and verified on its own, without
/// reading the rest of the node, so its cost does not grow with the node. The full `apply` stays
/// the safety net: it compares everything, these compare one endpoint.
extension NodeController {
    /// Why a scoped change cannot run: the caller falls back to a full `apply`.
    public struct ScopedChangeUnavailable: Error, CustomStringConvertible {
        public var description: String
    }

    /// Creates or repairs the endpoints of the spec's pods on `hostDevices` (several CNI ADDs
    /// at once share one plan and one ledger write); reports what changed and what still
    /// differs for them.
    public func applyEndpoints(hostDevices: Set<String>) throws -> ApplyReport {
        try underLock(command: "apply") {
            defer { session.releasePodSockets() }
            let start = ContinuousClock.now
            guard let desired = try desiredState().scoped(toEndpoints: hostDevices) else {
                throw NodeNetError.missing(
                    "the node has no pod on one of \(hostDevices.sorted().joined(separator: ", "))")
            }
            var ledger = try trustedLedger()
            let plan = try self.plan(desired, ledger: ledger)
            guard plan.conflicts.isEmpty else {
                throw NodeNetError.conflict(
                    "cannot apply:\n" + plan.conflicts.map { "  \($0)" }.joined(separator: "\n"))
            }
            guard plan.unavailable.isEmpty else { throw NodeNetError.missing(plan.unavailable.joined(separator: "; ")) }
            let entries = desired.endpoints.map {
                Ledger.Endpoint($0.pod, of: spec)
            }
            if !Set(entries).isSubset(of: Set(ledger.endpoints)) {
                // Recorded before the devices exist: a crash leaves nothing nodenet does not know.
                ledger.endpoints = (ledger.endpoints.filter { !hostDevices.contains($0.hostDevice) } + entries).sorted {
                    $0.hostDevice < $1.hostDevice
                }
                try ledger.save(to: spec.stateDirectory)
            }
            try run(plan)
            let after = try self.plan(desired, ledger: ledger)
            return ApplyReport(
                node: spec.node.name, changes: plan.changes,
                mismatches: after.changes.map(\.mismatch) + after.conflicts + after.unavailable,
                seconds: Self.seconds(since: start))
        }
    }

    /// Removes the endpoints of `pods`, which the spec no longer has.
    public func removeEndpoints(_ pods: [PodSpec]) throws -> ApplyReport {
        let removed = pods.map { Ledger.Endpoint($0) }
        let devices = Set(removed.map(\.hostDevice))
        return try underLock(command: "apply") {
            defer { session.releasePodSockets() }
            let start = ContinuousClock.now
            let full = try desiredState()
            if let wanted = full.endpoints.first(where: { devices.contains($0.hostDevice) }) {
                throw NodeNetError.conflict("pod \(wanted.pod.id) on \(wanted.hostDevice) is still wanted")
            }
            let desired = full.removing(removed)
            var ledger = try trustedLedger()
            let plan = try self.plan(desired, ledger: ledger)
            try run(plan)
            let after = try self.plan(desired, ledger: ledger)
            if after.isEmpty && ledger.endpoints.contains(where: { devices.contains($0.hostDevice) }) {
                ledger.endpoints.removeAll { devices.contains($0.hostDevice) }
                try ledger.save(to: spec.stateDirectory)
            }
            return ApplyReport(
                node: spec.node.name, changes: plan.changes, mismatches: after.changes.map(\.mismatch),
                seconds: Self.seconds(since: start))
        }
    }

    /// Applies the plan's changes (none: nothing to do).
    private func run(_ plan: Planner.Plan) throws {
        guard !plan.isEmpty else { return }
        var applier = Applier(session: session, spec: spec, attachModes: attachModes)
        try applier.run(plan.changes)
    }

    /// What differs for the endpoint on `hostDevice` (its veth, the pod's eth0, addresses,
    /// routes, sysctls, map entry, program): CNI CHECK.
    public func planEndpoint(hostDevice: String) throws -> Planner.Plan {
        defer { session.releasePodSockets() }
        guard let desired = try desiredState().scoped(toEndpoints: [hostDevice]) else {
            throw NodeNetError.missing("the node has no pod on \(hostDevice)")
        }
        return try plan(desired, ledger: try ledger(moveAside: false).ledger)
    }

    /// The ledger, when it can be trusted and the last full apply completed; otherwise a
    /// scoped change is not safe (it would not know what else is the node's).
    private func trustedLedger() throws -> Ledger {
        guard case .valid(let ledger) = Ledger.read(from: spec.stateDirectory, node: spec.node.name, moveAside: false),
            ledger.complete
        else {
            throw ScopedChangeUnavailable(description: "the ledger is missing, untrusted or from an unfinished apply")
        }
        return ledger
    }

    static func seconds(since start: ContinuousClock.Instant) -> Double {
        let d = ContinuousClock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}
