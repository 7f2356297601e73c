import BPF
import Synchronization

/// One node's networking, driven from its spec: plan, apply (with verification and
/// rollback), status, listings and teardown. Works on the current namespace (a real node)
/// or on a node that is a network namespace (the lab, tests).
public final class NodeController: @unchecked Sendable {
    public let spec: NodeSpec
    public let session: NodeSession
    /// How programs attach on this node, decided once (`AttachModes`).
    public let attachModes: AttachModes
    /// The node's lock when the caller holds it for longer than one apply (the agent).
    private var heldLock: NodeLock?
    /// Whether `apply` reports the datapath's fingerprint (BPF mode; the agent's audits compare
    /// against it). Off by default: it costs a census of the service maps.
    public var reportsDatapathFingerprint = false
    /// The ids the service maps were last found to hold exactly (an apply's verification, or
    /// any plan since that held them or needed nothing): the next plan compares the maps with
    /// what they make of the spec's frontends before decoding them, as a verification does. A
    /// resync or an event at 100 000 services decoded 800 000 entries and planned them again
    /// (0.9 s) to find nothing; maps that differ in anything, or a spec whose frontends the ids
    /// do not cover, are decoded and planned as before.
    let heldServiceIDs = Mutex<ServiceIDs?>(nil)

    /// Validates `spec` unless `NodeSpec.load` already did (throws `SpecError`) and opens the
    /// node's namespace.
    public init(spec: NodeSpec, namespace: NamespaceReference = .current) throws {
        self.spec = spec.isValidated ? spec : try spec.validated()
        attachModes = spec.effectiveAttachModes
        session = try NodeSession(namespace: namespace)
    }

    /// Takes over what `previous`, the controller of the same node this one replaces (a new
    /// spec, a new endpoint), last found the service maps to hold: its first plan then compares
    /// the maps with what those ids make of its frontends instead of decoding every entry (0.8 s
    /// at 100 000 services). Maps that differ in anything, as when the services changed, are
    /// decoded and planned as before; maps of another place or size are not compared.
    public func continuing(from previous: NodeController) {
        guard previous !== self, previous.spec.bpffsDirectory == spec.bpffsDirectory,
            previous.spec.loadBalancer.mapCapacity == spec.loadBalancer.mapCapacity
        else { return }
        let held = previous.heldServiceIDs.withLock { $0 }
        heldServiceIDs.withLock { $0 = held }
    }

    /// The desired state; the MTU defaults to the native device's, BIG TCP follows what the
    /// kernel and the native device allow.
    public func desiredState() throws -> DesiredState { desiredState(try nativeDeviceInputs()) }

    func desiredState(_ native: NativeDeviceInputs) -> DesiredState {
        var desired = DesiredState(spec: spec, deviceMTU: native.mtu)
        desired.ipv4SegmentSize = native.segmentSize
        if let unavailable = native.unavailable { desired.unavailable.append(unavailable) }
        return desired
    }

    /// What the desired state takes from the native device: its MTU, and the BIG TCP size it
    /// allows (or why none).
    struct NativeDeviceInputs: Equatable {
        var mtu: UInt32
        var segmentSize: UInt32?
        var unavailable: String?
    }

    func nativeDeviceInputs() throws -> NativeDeviceInputs {
        let native = try session.node.link(named: spec.node.device)
        guard native != nil || spec.node.mtu != nil else {
            throw NodeNetError.missing("native device \(spec.node.device) does not exist in \(session.namespace)")
        }
        var inputs = NativeDeviceInputs(mtu: native?.mtu ?? 1500)
        // BIG TCP follows the native device; without it (an MTU given in the spec), devices stay as they are.
        if let native {
            do {
                inputs.segmentSize = try spec.ipv4BigTCP.segmentSize(nativeDevice: native)
            } catch {
                inputs.unavailable = "\(error)"
            }
        }
        return inputs
    }

    /// What apply would change. Changes nothing (an untrusted ledger is left where it is).
    public func plan() throws -> Planner.Plan {
        defer { session.releasePodSockets() }
        let desired = try desiredState()
        return try plan(desired, ledger: try ledger(moveAside: false).ledger)
    }

    /// Runs `apply` and `teardown` under `lock`, which the caller holds for this node for longer
    /// than one apply (`nodenetd run` holds it for its lifetime, across spec reloads), instead of
    /// taking the lock for each.
    public func runUnder(_ lock: NodeLock) throws {
        guard lock.stateDirectory == spec.stateDirectory else {
            throw NodeNetError.state(
                "the lock held is that of \(lock.stateDirectory), not of this node's state directory \(spec.stateDirectory)"
            )
        }
        heldLock = lock
    }

    /// Runs `body` under the node's lock: the one this controller holds, or one taken for it.
    func underLock<T>(command: String, _ body: () throws -> T) throws -> T {
        if heldLock != nil { return try body() }
        let lock = try NodeLock.acquire(stateDirectory: spec.stateDirectory, node: spec.node.name, command: command)
        return try withExtendedLifetime(lock) { try body() }
    }

    /// The ledger to plan with: the node's own when it can be trusted; rebuilt from the kernel
    /// (with why) when it cannot; nil when there is none.
    func ledger(moveAside: Bool) throws -> (ledger: Ledger?, recovered: String?) {
        switch Ledger.read(from: spec.stateDirectory, node: spec.node.name, moveAside: moveAside) {
        case .none:
            return (nil, nil)
        case .valid(let ledger):
            return (ledger, nil)
        case .untrusted(let reason, let movedTo):
            let what =
                "\(reason); " + (movedTo.map { "moved aside to \($0)" } ?? "left in place")
                + "; ownership rebuilt from the kernel (nodenet's route protocol, lxc devices, the bpffs directory),"
                + " sysctl values from before nodenet are not known"
            let rebuilt = Ledger.rebuilt(
                node: spec.node.name, links: try session.node.links(),
                bpffsDirectory: spec.datapath.mode == .bpf ? spec.bpffsDirectory : nil, reason: what)
            return (rebuilt, what)
        }
    }

    func plan(_ desired: DesiredState, ledger: Ledger?) throws -> Planner.Plan {
        try observedPlan(desired, ledger: ledger).plan
    }

    /// An apply's verification: the plan made after `applied` was carried out (empty when the
    /// kernel matches the spec). Service maps holding exactly what `applied` wrote are compared
    /// entry by entry instead of being decoded and planned again.
    private func verificationPlan(
        _ desired: DesiredState, ledger: Ledger?, after applied: Planner.Plan
    ) throws -> Planner.Plan {
        let expected = applied.serviceIDs.map { ServiceMapsImage(desired.frontends, ids: $0) }
        return try observedPlan(desired, ledger: ledger, expectedServices: expected).plan
    }

    /// The plan and the kernel state it was made from (read once, for callers that report both).
    func observedPlan(
        _ desired: DesiredState, ledger: Ledger?, expectedServices: ServiceMapsImage? = nil
    ) throws -> (plan: Planner.Plan, observed: ObservedState) {
        let former = (ledger?.pinDirectories ?? []).filter { $0 != spec.bpffsDirectory }.map {
            BPFFSLayout(directory: $0)
        }
        // (A scoped plan reads no service map.)
        let held = desired.scope == .node ? heldServiceIDs.withLock { $0 } : nil
        let expected = expectedServices ?? held.map { ServiceMapsImage(desired.frontends, ids: $0) }
        let observed = try session.observe(desired, spec: spec, formerDirectories: former, expectedServices: expected)
        let plan = Planner.plan(
            desired: desired, observed: observed, ledger: ledger, nativeDevice: spec.node.device,
            datapath: spec.datapath.mode,
            attachModes: attachModes)
        if desired.scope == .node {
            // Held as written, or decoded and needing nothing: what the ids make is what the maps hold.
            let now =
                observed.services.servicesAsWritten.map(ServiceIDs.init) ?? (plan.isEmpty ? plan.serviceIDs : nil)
            heldServiceIDs.withLock { $0 = now }
        }
        return (plan, observed)
    }

    /// Makes the kernel match the spec, then re-reads it and reports what still differs.
    /// A failure midway rolls the node back and throws `ApplyFailure`.
    public func apply() throws -> ApplyReport {
        try underLock(command: "apply") { try applyLocked() }
    }

    private func applyLocked() throws -> ApplyReport {
        defer { session.releasePodSockets() }
        // (Before the desired state, which takes the native device's MTU: a change of it after
        // this is not taken as seen by `convergedAt`.)
        let start = ContinuousClock.now
        let desiredNative = try nativeDeviceInputs()
        let desired = desiredState(desiredNative)
        let (previousLedger, recovered) = try ledger(moveAside: true)
        var warnings = recovered.map { ["ledger: \($0)"] } ?? []
        let previousLedgerBytes = Ledger.snapshot(in: spec.stateDirectory)
        // Taken before the plan that judges it: when that plan (or the verification) finds nothing
        // to do, the kernel matched the spec when the fingerprint was taken. One taken after
        // would include drift that landed in between, and audits would take it for normal.
        var fingerprint = try fingerprintIfReported()
        let plan = try plan(desired, ledger: previousLedger)
        guard plan.conflicts.isEmpty else {
            throw NodeNetError.conflict("cannot apply:\n" + plan.conflicts.map { "  \($0)" }.joined(separator: "\n"))
        }
        warnings += plan.unavailable
        let wantedEndpoints = desired.endpoints.map {
            Ledger.Endpoint($0.pod, of: spec)
        }
        var ledger = previousLedger ?? Ledger(node: spec.node.name)
        // A recovery note stays until an apply that started from a trusted ledger completes.
        let clearsRecovery = recovered == nil && ledger.recovery != nil
        if recovered == nil { ledger.recovery = nil }
        if plan.isEmpty {
            if ledger.endpoints != wantedEndpoints || !ledger.complete || clearsRecovery || recovered != nil {
                ledger.endpoints = wantedEndpoints
                ledger.complete = true
                try ledger.save(to: spec.stateDirectory)
            }
            return ApplyReport(
                node: spec.node.name, changes: [], mismatches: [], seconds: Self.seconds(since: start),
                warnings: warnings, datapathFingerprint: fingerprint, convergedAt: start)
        }
        // Before touching anything: remember every endpoint that may exist afterwards and
        // the sysctl values about to be overwritten, so a crash or teardown can clean up.
        var inProgress = ledger
        let wantedDevices = Set(wantedEndpoints.map(\.hostDevice))
        inProgress.endpoints = (ledger.endpoints.filter { !wantedDevices.contains($0.hostDevice) } + wantedEndpoints)
            .sorted { $0.hostDevice < $1.hostDevice }
        for i in plan.changes.indices where plan.changes[i].kind == .sysctl {  // (by index: no copies)
            if let sysctl = plan.changes[i].change.sysctl, let previous = sysctl.previous, sysctl.setting.device == nil,
                inProgress.sysctlOriginals[sysctl.setting.key] == nil
            {
                inProgress.sysctlOriginals[sysctl.setting.key] = previous
            }
        }
        inProgress.complete = false
        // A changed bpffs directory: the old one stays known until its pins are gone.
        let former = ledger.pinDirectories.filter { $0 != spec.bpffsDirectory }
        inProgress.formerBPFFSDirectories = former.isEmpty ? nil : former
        if spec.datapath.mode == .bpf { inProgress.bpffsDirectory = spec.bpffsDirectory }
        try inProgress.save(to: spec.stateDirectory)

        var applier = Applier(session: session, spec: spec, attachModes: attachModes)
        do {
            try applier.run(plan.changes)
        } catch let failure as ApplyFailure {
            // Rolled back completely: the ledger goes back to exactly what it was.
            if failure.rollback.complete { Ledger.restore(previousLedgerBytes, in: spec.stateDirectory) }
            throw failure
        }
        fingerprint = try fingerprintIfReported()
        let verificationRead = ContinuousClock.now
        // The desired state was made before the changes: it still holds only if the native
        // device still gives what it took (an MTU changed meanwhile is not taken as seen).
        let nativeUnchanged = try nativeDeviceInputs() == desiredNative
        let after = try verificationPlan(desired, ledger: inProgress, after: plan)
        inProgress.endpoints = wantedEndpoints
        let stillPinned = former.filter { !BPFFSLayout(directory: $0).ownedPins().isEmpty }
        inProgress.formerBPFFSDirectories = stillPinned.isEmpty ? nil : stillPinned
        inProgress.complete = after.isEmpty
        try inProgress.save(to: spec.stateDirectory)
        return ApplyReport(
            node: spec.node.name, changes: plan.changes, mismatches: after.changes.map(\.mismatch) + after.conflicts,
            seconds: Self.seconds(since: start), warnings: warnings,
            datapathFingerprint: after.isEmpty ? fingerprint : nil,
            convergedAt: after.isEmpty && nativeUnchanged ? verificationRead : nil)
    }

    private func fingerprintIfReported() throws -> DatapathFingerprint? {
        reportsDatapathFingerprint && spec.datapath.mode == .bpf ? try datapathFingerprint() : nil
    }

}

/// The outcome of an apply.
public struct ApplyReport: Sendable {
    public var node: String
    /// The changes made, in order (empty on a converged node).
    public var changes: [PlannedChange]
    /// `what: wanted X, found Y` for everything that still differs after applying.
    public var mismatches: [String]
    public var seconds: Double
    /// What the apply had to work around (a ledger it could not trust), in sentences.
    public var warnings: [String]
    /// The datapath as it was when the kernel was last seen to match the spec (only with
    /// `reportsDatapathFingerprint`, BPF mode, and a verified apply).
    public var datapathFingerprint: DatapathFingerprint?
    /// When the kernel was last seen to match the spec: the start of the reading that found
    /// nothing left to do (the verification's, or the plan's when there was nothing to do); nil
    /// when none did. Whatever changed in the kernel before then is in that reading (a netlink
    /// event stamped earlier needs no reconcile of its own).
    public var convergedAt: ContinuousClock.Instant?
    public var verified: Bool { mismatches.isEmpty }

    public init(
        node: String, changes: [PlannedChange], mismatches: [String], seconds: Double, warnings: [String] = [],
        datapathFingerprint: DatapathFingerprint? = nil, convergedAt: ContinuousClock.Instant? = nil
    ) {
        self.node = node
        self.changes = changes
        self.mismatches = mismatches
        self.seconds = seconds
        self.warnings = warnings
        self.datapathFingerprint = datapathFingerprint
        self.convergedAt = convergedAt
    }
}
