import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
    import NodeNet
#endif

extension NodeAgent {
    /// Runs an endpoint operation in the agent's loop and waits for its answer (the API's
    /// handlers call this). Answers `unavailable` when the agent is not running.
    public func perform(_ operation: EndpointOperation) async -> EndpointOutcome {
        await withCheckedContinuation { (done: CheckedContinuation<EndpointOutcome, Never>) in
            let reply = ReplyOnce(done)
            guard isAcceptingEndpoints else {
                reply.send(.failed(EndpointError(.unavailable, "the agent is not running")))
                return
            }
            if case .terminated = continuation.yield(.endpoint(operation, reply: reply.send)) {
                reply.send(.failed(EndpointError(.unavailable, "the agent is stopping")))
            }
        }
    }

    /// The loop's side: one operation against the store, the spec and the kernel. The store is
    /// saved before the kernel is changed (a crash then leaves an endpoint the next start
    /// completes or a DEL removes, never an interface nobody knows). The endpoint alone is
    /// planned, applied and verified; when that cannot be done (no trusted ledger, a migration
    /// under way) the node is reconciled in full, and `fullReconcileAt` says when that began.
    func handle(
        _ operation: EndpointOperation, in node: inout RunningNode
    ) async -> (outcome: EndpointOutcome, fullReconcileAt: ContinuousClock.Instant?) {
        let log = logger("endpoint")
        switch operation {
        case .add(let attachment, let netns, let podNamespace, let podName):
            guard access(netns, F_OK) == 0 else {
                return (.failed(EndpointError(.invalid, "network namespace \(netns) does not exist")), nil)
            }
            var next = node.endpoints
            let added: (endpoint: Endpoint, created: Bool)
            do {
                added = try next.add(
                    attachment, netns: netns, podNamespace: podNamespace, podName: podName, spec: node.spec)
            } catch { return (.failed(error), nil) }
            let endpoint = added.endpoint
            if !added.created {
                // A repeated ADD: the same answer, once the endpoint is verified again.
                if case .some(.done(let result)) = await scopedAdd(endpoint, node.controller) {
                    return (.added(result), nil)
                }
            }
            if let failure = await node.adopt(next, agent: self) { return (.failed(failure), nil) }
            log.info(
                "endpoint added",
                metadata: [
                    "attachment": "\(attachment)", "pod": "\(endpoint.pod.id)", "ip": "\(endpoint.ip)",
                    "device": "\(endpoint.hostDevice)",
                ])
            var why: String
            var fullAt: ContinuousClock.Instant?
            switch await scopedAdd(endpoint, node.controller) {
            case .some(.done(let result)): return (.added(result), nil)
            case .none:
                // No scoped path here: the whole node, then the endpoint's interfaces.
                fullAt = .now
                let report = await reconcile(
                    node.controller, cause: .endpoint, reason: "CNI ADD \(attachment)", eventAt: nil)
                why = report.map { $0.mismatches.prefix(3).joined(separator: "; ") } ?? healthReason
                if report?.verified == true {
                    let spec = node.controller.spec
                    do {
                        return (.added(try await Self.onThread { try self.result(for: endpoint, spec) }), fullAt)
                    } catch {
                        why = "\(error)"
                    }
                }
            case .some(.failed(let reason)): why = reason
            }
            // Not in place: take it out again, so a retried ADD starts clean.
            log.error(
                "endpoint could not be set up; removing it", metadata: ["attachment": "\(attachment)", "why": "\(why)"])
            var back = node.endpoints
            back.remove(attachment)
            if await node.adopt(back, agent: self) == nil, await scopedRemove(endpoint, node.controller) == false {
                fullAt = .now
                await reconcile(node.controller, cause: .endpoint, reason: "CNI ADD \(attachment) failed", eventAt: nil)
            }
            return (.failed(EndpointError(.failed, "the pod's network could not be set up: \(why)")), fullAt)

        case .delete(let attachment):
            guard node.endpoints.endpoint(attachment) != nil else { return (.deleted(nil), nil) }
            var next = node.endpoints
            let removed = next.remove(attachment)!
            if let failure = await node.adopt(next, agent: self) { return (.failed(failure), nil) }
            log.info("endpoint deleted", metadata: ["attachment": "\(attachment)", "pod": "\(removed.pod.id)"])
            if await scopedRemove(removed, node.controller) { return (.deleted(removed), nil) }
            await reconcile(node.controller, cause: .endpoint, reason: "CNI DEL \(attachment)", eventAt: nil)
            return (.deleted(removed), .now)

        case .collect(let keeping):
            var next = node.endpoints
            let removed = next.collect(keeping: keeping)
            guard !removed.isEmpty else { return (.collected([]), nil) }
            if let failure = await node.adopt(next, agent: self) { return (.failed(failure), nil) }
            log.info("endpoints collected", metadata: ["removed": "\(removed.map(\.attachment.description))"])
            var allScoped = true
            for endpoint in removed where await !scopedRemove(endpoint, node.controller) { allScoped = false }
            if allScoped { return (.collected(removed), nil) }
            let at = ContinuousClock.now
            await reconcile(node.controller, cause: .endpoint, reason: "CNI GC", eventAt: nil)
            return (.collected(removed), at)

        case .check(let attachment):
            guard let endpoint = node.endpoints.endpoint(attachment) else {
                return (.failed(EndpointError(.notFound, "no endpoint for \(attachment)")), nil)
            }
            let controller = node.controller
            return (.checked(await Self.onThread { Self.differences(of: endpoint, controller) }), nil)
        }
    }

    enum ScopedOutcome {
        case done(EndpointResult)
        /// The endpoint could not be made; why.
        case failed(String)
    }

    /// Creates or repairs one endpoint on its own; nil when only a full reconcile may do it.
    private func scopedAdd(_ endpoint: Endpoint, _ controller: NodeController) async -> ScopedOutcome? {
        let log = logger("reconcile")
        let start = ContinuousClock.now
        metrics.reconciles[.endpoint]?.increment()
        let outcome = await Self.onThread { () -> Result<(ApplyReport, EndpointResult?), any Error> in
            Result {
                let report = try controller.applyEndpoint(hostDevice: endpoint.hostDevice)
                return (report, report.verified ? try self.result(for: endpoint, controller.spec) : nil)
            }
        }
        switch outcome {
        case .failure(let error as NodeController.ScopedChangeUnavailable):
            log.info("no scoped change; reconciling the node", metadata: ["why": "\(error)"])
            return nil
        case .failure(let error):
            return .failed("\(error)")
        case .success(let (report, result)):
            for change in report.changes {
                log.info(
                    "\(change.action.rawValue) \(change.subject)",
                    metadata: ["why": "CNI ADD \(endpoint.attachment)", "kind": "\(change.kind)"])
            }
            guard let result else { return .failed(report.mismatches.prefix(3).joined(separator: "; ")) }
            ownChangesVerified(endpoint, hostIndex: result.hostIndex, controller: controller)
            metrics.reconcileDuration.record(ContinuousClock.now - start)
            return .done(result)
        }
    }

    /// Removes one endpoint on its own; false when only a full reconcile may do it (or it failed).
    private func scopedRemove(_ endpoint: Endpoint, _ controller: NodeController) async -> Bool {
        let log = logger("reconcile")
        metrics.reconciles[.endpoint]?.increment()
        let pod = endpoint.pod
        let index = try? controller.session.node.link(named: endpoint.hostDevice)?.index
        let outcome = await Self.onThread { Result { try controller.removeEndpoint(pod) } }
        switch outcome {
        case .success(let report) where report.verified:
            for change in report.changes {
                log.info(
                    "\(change.action.rawValue) \(change.subject)",
                    metadata: ["why": "CNI DEL \(endpoint.attachment)", "kind": "\(change.kind)"])
            }
            ownChangesVerified(endpoint, hostIndex: index, controller: controller)
            return true
        case .success(let report):
            log.warning("scoped removal left differences", metadata: ["mismatches": "\(report.mismatches)"])
            return false
        case .failure(let error):
            log.info("no scoped removal; reconciling the node", metadata: ["why": "\(error)"])
            return false
        }
    }

    /// After a verified endpoint change: the events it caused are not drift, and the audit's
    /// baseline takes in what it changed in the datapath (and nothing else).
    private func ownChangesVerified(_ endpoint: Endpoint, hostIndex: InterfaceIndex?, controller: NodeController) {
        let now = ContinuousClock.now
        var subjects = ["route \(endpoint.ip)/32", "link \(endpoint.hostDevice)"]
        if let hostIndex { subjects.append("netconf \(hostIndex)") }
        let fingerprint =
            controller.spec.datapath.mode == .bpf && options.bpfAuditInterval != nil
            ? try? controller.datapathFingerprint() : nil
        state.with { box in
            box.ownChanges = box.ownChanges.filter { now - $0.value < .seconds(10) }
            for subject in subjects { box.ownChanges[subject] = now }
            if let fingerprint, let baseline = box.baseline {
                box.baseline = fingerprint.absorbing(endpoint: endpoint.hostDevice, into: baseline)
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
    func result(for endpoint: Endpoint, _ spec: NodeSpec) throws -> EndpointResult {
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
        let node = try NetlinkSocket(namespace: options.namespace)
        guard let host = try node.link(named: endpoint.hostDevice), let hostMAC = host.address else {
            throw NodeNetError.missing("the node has no \(endpoint.hostDevice)")
        }
        return EndpointResult(
            endpoint: endpoint, hostInterface: .init(name: endpoint.hostDevice, mac: "\(hostMAC)", sandbox: nil),
            podInterface: .init(name: Endpoint.supportedInterface, mac: "\(podMAC)", sandbox: endpoint.netns),
            address: "\(endpoint.ip)/32", gateway: "\(spec.node.routerIP)",
            routes: [.init(dst: "0.0.0.0/0", gw: "\(spec.node.routerIP)")], mtu: eth0.mtu, hostIndex: host.index)
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
    var controller: NodeController
    let lock: NodeLock
    let namespace: NamespaceReference

    /// A controller for `spec` with `endpoints`, running under the agent's lock.
    static func controller(
        _ spec: NodeSpec, _ endpoints: EndpointStore, lock: NodeLock, namespace: NamespaceReference
    ) throws -> NodeController {
        let controller = try NodeController(spec: try spec.including(endpoints), namespace: namespace)
        try controller.runUnder(lock)
        controller.reportsDatapathFingerprint = true
        return controller
    }

    /// Saves `next` and makes it the node's endpoints; nil when done, else why not (nothing
    /// changed then).
    mutating func adopt(_ next: EndpointStore, agent: NodeAgent) async -> EndpointError? {
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
