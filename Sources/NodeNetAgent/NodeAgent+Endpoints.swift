import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
    import NodeNet
#endif

extension NodeAgent {
    /// An endpoint request waiting for the loop, with where its answer goes.
    struct PendingEndpoint {
        let operation: EndpointOperation
        let reply: @Sendable (EndpointOutcome) -> Void
    }

    /// Runs an endpoint operation in the agent's loop and waits for its answer (the API's
    /// handlers call this). Requests that arrive together are handled together (one plan, one
    /// ledger write). Answers `unavailable` when the agent is not running.
    public func perform(_ operation: EndpointOperation) async -> EndpointOutcome {
        await withCheckedContinuation { (done: CheckedContinuation<EndpointOutcome, Never>) in
            let reply = ReplyOnce(done)
            guard isAcceptingEndpoints else {
                reply.send(.failed(EndpointError(.unavailable, "the agent is not running")))
                return
            }
            state.with { $0.pendingEndpoints.append(PendingEndpoint(operation: operation, reply: reply.send)) }
            if case .terminated = continuation.yield(.endpoints) { refusePendingEndpoints("the agent is stopping") }
        }
    }

    /// Every request queued so far.
    func takePendingEndpoints() -> [PendingEndpoint] {
        state.with { box in
            defer { box.pendingEndpoints = [] }
            return box.pendingEndpoints
        }
    }

    func refusePendingEndpoints(_ why: String) {
        for request in takePendingEndpoints() { request.reply(.failed(EndpointError(.unavailable, why))) }
    }

    /// The loop's side: the queued requests against the store, the spec and the kernel. The store
    /// is saved before the kernel is changed (a crash then leaves an endpoint the next start
    /// completes or a DEL removes, never an interface nobody knows). Only the endpoints
    /// concerned are planned, applied and verified; when that cannot be done (no trusted
    /// ledger, a migration under way) the node is reconciled in full, and the instant that
    /// began is returned.
    func handle(_ requests: [PendingEndpoint], in node: inout RunningNode) async -> ContinuousClock.Instant? {
        await answerChecks(requests, node)
        let removalAt = await removeEndpoints(requests, in: &node)
        let additionAt = await addEndpoints(requests, in: &node)
        return removalAt ?? additionAt
    }

    /// CHECK: read only.
    private func answerChecks(_ requests: [PendingEndpoint], _ node: RunningNode) async {
        for request in requests {
            guard case .check(let attachment) = request.operation else { continue }
            guard let endpoint = node.endpoints.endpoint(attachment) else {
                request.reply(.failed(EndpointError(.notFound, "no endpoint for \(attachment)")))
                continue
            }
            let controller = node.controller
            request.reply(.checked(await Self.onThread { Self.differences(of: endpoint, controller) }))
        }
    }

    /// DEL and GC: out of the store, then out of the kernel (scoped, else the whole node). The
    /// instant a full reconcile began, if one did.
    private func removeEndpoints(
        _ requests: [PendingEndpoint], in node: inout RunningNode
    ) async -> ContinuousClock.Instant? {
        var fullAt: ContinuousClock.Instant?
        var next = node.endpoints
        var removed: [Endpoint] = []
        var answers: [(PendingEndpoint, EndpointOutcome)] = []
        for request in requests {
            switch request.operation {
            case .delete(let attachment):
                let endpoint = next.remove(attachment)
                removed += endpoint.map { [$0] } ?? []
                answers.append((request, .deleted(endpoint)))
            case .collect(let keeping):
                let gone = next.collect(keeping: keeping)
                removed += gone
                answers.append((request, .collected(gone)))
            default: break
            }
        }
        if !removed.isEmpty {
            if let failure = node.adopt(next, agent: self) {
                answers = answers.map { ($0.0, .failed(failure)) }
            } else {
                for endpoint in removed {
                    logger("endpoint").info(
                        "endpoint deleted",
                        metadata: ["attachment": "\(endpoint.attachment)", "pod": "\(endpoint.pod.id)"])
                }
                let replies = answers
                let answer = { for (request, outcome) in replies { request.reply(outcome) } }
                if await !scopedRemove(removed, node.controller, answer: answer) {
                    fullAt = .now
                    await reconcile(node.controller, cause: .endpoint, reason: "CNI DEL/GC", eventAt: nil)
                }
            }
        }
        // Those a verified scoped removal answered already are not answered twice (`ReplyOnce`).
        for (request, outcome) in answers { request.reply(outcome) }
        return fullAt
    }

    /// ADD: into the store, then set up (scoped, else the whole node); those that could not be
    /// set up are taken out again. The instant a full reconcile began, if one did.
    private func addEndpoints(
        _ requests: [PendingEndpoint], in node: inout RunningNode
    ) async -> ContinuousClock.Instant? {
        var next = node.endpoints
        var adds: [(PendingEndpoint, Endpoint, created: Bool)] = []
        for request in requests {
            guard case .add(let attachment, let netns, let podNamespace, let podName) = request.operation else {
                continue
            }
            // The runtime's path is checked, not trusted, by the spec's own rule for a pod's netns.
            if let problem = NodeSpec.namespaceProblem(netns, node: options.namespace) {
                request.reply(.failed(EndpointError(.invalid, "network namespace \(netns) \(problem)")))
                continue
            }
            do {
                let added = try next.add(
                    attachment, netns: netns, podNamespace: podNamespace, podName: podName, spec: node.spec)
                adds.append((request, added.endpoint, added.created))
            } catch { request.reply(.failed(error)) }
        }
        guard !adds.isEmpty else { return nil }
        if adds.contains(where: \.created), let failure = node.adopt(next, agent: self) {
            for (request, _, _) in adds { request.reply(.failed(failure)) }
            return nil
        }
        for (_, endpoint, created) in adds where created {
            logger("endpoint").info(
                "endpoint added",
                metadata: [
                    "attachment": "\(endpoint.attachment)", "pod": "\(endpoint.pod.id)", "ip": "\(endpoint.ip)",
                    "device": "\(endpoint.hostDevice)",
                ])
        }
        let (failed, setUpAt) = await setUp(adds.map { (request: $0.0, endpoint: $0.1) }, node.controller)
        guard !failed.isEmpty else { return setUpAt }
        let takenBackAt = await takeBack(failed, in: &node)
        return setUpAt ?? takenBackAt
    }

    /// Sets the added endpoints up: scoped (all at once; when that fails for several, one at a
    /// time to tell which), else the whole node, then each endpoint's interfaces. Answers those set up; returns
    /// the others with why, and the instant a full reconcile began, if one did.
    private func setUp(
        _ adds: [(request: PendingEndpoint, endpoint: Endpoint)], _ controller: NodeController
    ) async -> (failed: [(PendingEndpoint, Endpoint, String)], fullAt: ContinuousClock.Instant?) {
        var failed: [(PendingEndpoint, Endpoint, String)] = []
        let answer = { (results: [EndpointResult]) in
            for ((request, _), result) in zip(adds, results) { request.reply(.added(result)) }
        }
        switch await scopedAdd(adds.map(\.endpoint), controller, answer: answer) {
        case .some(.done): break
        case .some(.failed(let why)) where adds.count > 1:
            // Which of them: one at a time.
            for (request, endpoint) in adds {
                switch await scopedAdd([endpoint], controller, answer: { request.reply(.added($0[0])) }) {
                case .some(.done): break
                case .some(.failed(let why)): failed.append((request, endpoint, why))
                case .none: failed.append((request, endpoint, why))
                }
            }
        case .some(.failed(let why)):
            failed = adds.map { ($0.request, $0.endpoint, why) }
        case .none:
            // No scoped path here: the whole node, then each endpoint's interfaces.
            let fullAt = ContinuousClock.now
            let report = await reconcile(
                controller, cause: .endpoint, reason: "CNI ADD \(adds.map(\.endpoint.attachment.description))",
                eventAt: nil)
            for (request, endpoint) in adds {
                guard report?.verified == true else {
                    failed.append(
                        (
                            request, endpoint,
                            report.map { $0.mismatches.prefix(3).joined(separator: "; ") } ?? healthReason
                        ))
                    continue
                }
                do {
                    request.reply(.added(try await Self.onThread { try self.result(for: endpoint, controller) }))
                } catch {
                    failed.append((request, endpoint, "\(error)"))
                }
            }
            return (failed, fullAt)
        }
        return (failed, nil)
    }

    /// Endpoints that could not be set up, taken out again (so a retried ADD starts clean) and
    /// answered with why. The instant a full reconcile began, if one did.
    private func takeBack(
        _ failed: [(PendingEndpoint, Endpoint, String)], in node: inout RunningNode
    ) async -> ContinuousClock.Instant? {
        var fullAt: ContinuousClock.Instant?
        var back = node.endpoints
        for (_, endpoint, why) in failed {
            logger("endpoint").error(
                "endpoint could not be set up; removing it",
                metadata: ["attachment": "\(endpoint.attachment)", "why": "\(why)"])
            back.remove(endpoint.attachment)
        }
        if node.adopt(back, agent: self) == nil, await !scopedRemove(failed.map(\.1), node.controller) {
            fullAt = .now
            await reconcile(node.controller, cause: .endpoint, reason: "CNI ADD failed", eventAt: nil)
        }
        for (request, _, why) in failed {
            request.reply(.failed(EndpointError(.failed, "the pod's network could not be set up: \(why)")))
        }
        return fullAt
    }

    enum ScopedOutcome {
        /// Made and answered.
        case done
        /// They could not be made; why.
        case failed(String)
    }

    /// Creates or repairs endpoints on their own and, once they are verified, hands `answer`
    /// one result per endpoint, in order (before the audit's bookkeeping, which the runtime
    /// need not wait for); nil when only a full reconcile may do it.
    private func scopedAdd(
        _ endpoints: [Endpoint], _ controller: NodeController, answer: ([EndpointResult]) -> Void
    ) async -> ScopedOutcome? {
        let log = logger("reconcile")
        let start = ContinuousClock.now
        metrics.reconciles[.endpoint]?.increment()
        let devices = Set(endpoints.map(\.hostDevice))
        let outcome = await Self.onThread {
            () -> Result<(ApplyReport, [EndpointResult]?), any Error> in
            Result {
                let report = try controller.applyEndpoints(hostDevices: devices)
                guard report.verified else { return (report, nil) }
                return (report, try endpoints.map { try self.result(for: $0, controller) })
            }
        }
        let why = "CNI ADD \(endpoints.map(\.attachment.description).joined(separator: ", "))"
        switch outcome {
        case .failure(let error as NodeController.ScopedChangeUnavailable):
            log.info("no scoped change; reconciling the node", metadata: ["why": "\(error)"])
            return nil
        case .failure(let error):
            return .failed("\(error)")
        case .success(let (report, results)):
            // The events of this change are the agent's own from the moment it was verified.
            let verifiedAt = ContinuousClock.now
            if let results {
                metrics.reconcileDuration.record(ContinuousClock.now - start)
                answer(results)
            }
            for change in report.changes {
                log.info(
                    "\(change.action.rawValue) \(change.subject)",
                    metadata: [
                        "why": "\(why)", "kind": "\(change.kind)", "namespace": "\(change.namespace)",
                        "wanted": "\(change.wanted ?? "nothing")",
                    ])
            }
            guard let results else { return .failed(report.mismatches.prefix(3).joined(separator: "; ")) }
            let fingerprint = await Self.onThread { self.fingerprintForAudit(controller) }
            ownChangesVerified(
                zip(endpoints, results).map { ($0.0, $0.1.hostIndex) }, fingerprint: fingerprint, at: verifiedAt)
            return .done
        }
    }

    /// Removes endpoints on their own and, once that is verified, calls `answer` (before the
    /// audit's bookkeeping); false when only a full reconcile may do it (or it failed).
    private func scopedRemove(
        _ endpoints: [Endpoint], _ controller: NodeController, answer: () -> Void = {}
    ) async -> Bool {
        let log = logger("reconcile")
        metrics.reconciles[.endpoint]?.increment()
        let pods = endpoints.map(\.pod)
        let outcome = await Self.onThread {
            () -> Result<(ApplyReport, [String: InterfaceIndex]), any Error> in
            Result {
                // The devices' ifindexes before they go (their setting events name them so),
                // looked up one by one: a dump of every link grows with the node.
                var indexes: [String: InterfaceIndex] = [:]
                for endpoint in endpoints {
                    indexes[endpoint.hostDevice] = try? controller.session.node.link(named: endpoint.hostDevice)?.index
                }
                return (try controller.removeEndpoints(pods), indexes)
            }
        }
        let why = "CNI DEL \(endpoints.map(\.attachment.description).joined(separator: ", "))"
        switch outcome {
        case .success(let (report, indexes)) where report.verified:
            let verifiedAt = ContinuousClock.now
            answer()
            for change in report.changes {
                log.info(
                    "\(change.action.rawValue) \(change.subject)",
                    metadata: ["why": "\(why)", "kind": "\(change.kind)", "namespace": "\(change.namespace)"])
            }
            let fingerprint = await Self.onThread { self.fingerprintForAudit(controller) }
            ownChangesVerified(
                endpoints.map { ($0, indexes[$0.hostDevice]) }, fingerprint: fingerprint, at: verifiedAt)
            return true
        case .success(let (report, _)):
            log.warning("scoped removal left differences", metadata: ["mismatches": "\(report.mismatches)"])
            return false
        case .failure(let error):
            log.info("no scoped removal; reconciling the node", metadata: ["why": "\(error)"])
            return false
        }
    }

    /// The datapath's fingerprint after a verified endpoint change, when audits run (on the
    /// worker thread: it reads pins and maps).
    private func fingerprintForAudit(_ controller: NodeController) -> DatapathFingerprint? {
        guard controller.spec.datapath.mode == .bpf, options.bpfAuditInterval != nil else { return nil }
        return try? controller.datapathFingerprint()
    }

    /// After verified endpoint changes: the events they caused are not drift, and the audit's
    /// baseline takes in what they changed in the datapath (and nothing else).
    private func ownChangesVerified(
        _ changed: [(Endpoint, InterfaceIndex?)], fingerprint: DatapathFingerprint?,
        at now: ContinuousClock.Instant = .now
    ) {
        var subjects: [EventSubject] = []
        for (endpoint, hostIndex) in changed {
            subjects += [.route(IPPrefix(host: endpoint.ip)), .link(endpoint.hostDevice)]
            if let hostIndex { subjects.append(.netconf(hostIndex)) }
        }
        state.with { box in
            box.ownChanges = box.ownChanges.filter { now - $0.value < .seconds(10) }
            for subject in subjects { box.ownChanges[subject] = now }
            if let fingerprint, var baseline = box.baseline {
                for (endpoint, _) in changed {
                    baseline = fingerprint.absorbing(endpoint: endpoint.hostDevice, into: baseline)
                }
                box.baseline = baseline
            }
        }
    }

    /// What differs for one endpoint (node side and pod side), or why it cannot be read.
    static func differences(of endpoint: Endpoint, _ controller: NodeController) -> [String] {
        do {
            let plan = try controller.planEndpoint(hostDevice: endpoint.hostDevice)
            return plan.changes.map(\.mismatch) + plan.conflicts + plan.unavailable
        } catch {
            return ["the node cannot be read: \(error)"]
        }
    }

    /// The interfaces as the kernel has them now; throws when either is missing.
    func result(for endpoint: Endpoint, _ controller: NodeController) throws -> EndpointResult {
        let pod = try NetlinkSocket(namespace: NamespaceReference(endpoint.netns))
        guard let eth0 = try pod.link(named: Endpoint.supportedInterface), let podMAC = eth0.address else {
            throw NodeNetError.missing("\(endpoint.netns) has no \(Endpoint.supportedInterface)")
        }
        guard
            try pod.addresses().contains(where: { $0.interfaceIndex == eth0.index && $0.prefix.address == endpoint.ip })
        else {
            throw NodeNetError.missing(
                "\(Endpoint.supportedInterface) in \(endpoint.netns) does not have \(endpoint.ip)")
        }
        guard let host = try controller.session.node.link(named: endpoint.hostDevice), let hostMAC = host.address else {
            throw NodeNetError.missing("the node has no \(endpoint.hostDevice)")
        }
        return EndpointResult(
            endpoint: endpoint, hostInterface: .init(name: endpoint.hostDevice, mac: "\(hostMAC)", sandbox: nil),
            podInterface: .init(name: Endpoint.supportedInterface, mac: "\(podMAC)", sandbox: endpoint.netns),
            address: "\(endpoint.ip)/32", gateway: "\(controller.spec.node.routerIP)",
            routes: [.init(dst: "0.0.0.0/0", gw: "\(controller.spec.node.routerIP)")], mtu: eth0.mtu,
            hostIndex: host.index)
    }

    var healthReason: String {
        if case .unhealthy(let why) = health { return why }
        return "the reconcile did not finish"
    }

    /// Runs blocking work (netlink, namespaces) on a thread of its own.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { done in
            Thread.detachNewThread { done.resume(with: Result { try body() }) }
        }
    }

    static func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { done in
            Thread.detachNewThread { done.resume(returning: body()) }
        }
    }
}

/// What the agent's loop runs: the spec from the file, the CNI endpoints, and the controller
/// for both together.
struct RunningNode {
    var spec: NodeSpec
    var endpoints: EndpointStore
    /// A replacement takes over what the one before knew of the service maps.
    var controller: NodeController {
        didSet {
            controller.continuing(from: oldValue)
            ignoreOwnChanges()
        }
    }
    /// The agent's netlink monitor, which leaves out what the controller itself changes (its
    /// verification has seen that): a change of the cluster's nodes is one reconcile, not two.
    var monitor: NetlinkMonitor? {
        didSet { ignoreOwnChanges() }
    }
    let lock: NodeLock
    let namespace: NamespaceReference

    /// Only the current controller's socket: a replaced one's id may go to another process.
    private func ignoreOwnChanges() { monitor?.ignoreChanges(madeBy: [controller.session.node.portID]) }

    /// A controller for `spec` with `endpoints`, running under the agent's lock.
    static func controller(
        _ spec: NodeSpec, _ endpoints: EndpointStore, lock: NodeLock, namespace: NamespaceReference
    ) throws -> NodeController {
        let controller = try NodeController(spec: try spec.including(endpoints), namespace: namespace)
        try controller.runUnder(lock)
        controller.reportsDatapathFingerprint = true
        return controller
    }

    /// Makes `next` the node's spec (a reloaded file, a changed cluster), with a controller for
    /// it; throws, changing nothing, when the spec with the endpoints fails.
    mutating func adopt(_ next: NodeSpec, agent: NodeAgent) throws {
        controller = try Self.controller(next, endpoints, lock: lock, namespace: namespace)
        spec = next
        agent.publish(self)
    }

    /// Saves `next` and makes it the node's endpoints; nil when done, else why not (nothing
    /// changed then).
    mutating func adopt(_ next: EndpointStore, agent: NodeAgent) -> EndpointError? {
        do {
            let controller = try Self.controller(spec, next, lock: lock, namespace: namespace)
            try next.save()
            endpoints = next
            self.controller = controller
            agent.publish(self)
            return nil
        } catch let error as SpecError {
            return EndpointError(.conflict, error.problems.map(\.description).joined(separator: "; "))
        } catch {
            return EndpointError(.failed, "\(error)")
        }
    }
}

/// Resumes a continuation once, whoever answers first.
final class ReplyOnce: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<EndpointOutcome, Never>?
    init(_ c: CheckedContinuation<EndpointOutcome, Never>) { continuation = c }
    func send(_ outcome: EndpointOutcome) {
        lock.lock()
        let c = continuation
        continuation = nil
        lock.unlock()
        c?.resume(returning: outcome)
    }
}
