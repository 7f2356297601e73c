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
    /// completes or a DEL removes, never an interface nobody knows).
    func handle(_ operation: EndpointOperation, in node: inout RunningNode) async -> EndpointOutcome {
        let log = logger("endpoint")
        switch operation {
        case .add(let attachment, let netns, let podNamespace, let podName):
            guard access(netns, F_OK) == 0 else {
                return .failed(EndpointError(.invalid, "network namespace \(netns) does not exist"))
            }
            var next = node.endpoints
            let added: (endpoint: Endpoint, created: Bool)
            do {
                added = try next.add(
                    attachment, netns: netns, podNamespace: podNamespace, podName: podName, spec: node.spec)
            } catch { return .failed(error) }
            let current = node.controller.spec
            if !added.created, let result = await Self.onThread({ try? self.result(for: added.endpoint, current) }) {
                return .added(result)
            }
            if let failure = await node.adopt(next, agent: self) { return .failed(failure) }
            log.info(
                "endpoint added",
                metadata: [
                    "attachment": "\(attachment)", "pod": "\(added.endpoint.pod.id)", "ip": "\(added.endpoint.ip)",
                    "device": "\(added.endpoint.hostDevice)",
                ])
            let report = await reconcile(
                node.controller, cause: .endpoint, reason: "CNI ADD \(attachment)", eventAt: nil)
            let spec = node.controller.spec
            var why = report.map { $0.mismatches.prefix(3).joined(separator: "; ") } ?? healthReason
            if report?.verified == true {
                do {
                    return .added(try await Self.onThread { try self.result(for: added.endpoint, spec) })
                } catch { why = "\(error)" }
            }
            // Not in place: take it out again, so a retried ADD starts clean.
            log.error(
                "endpoint could not be set up; removing it", metadata: ["attachment": "\(attachment)", "why": "\(why)"])
            var back = node.endpoints
            back.remove(attachment)
            if await node.adopt(back, agent: self) == nil {
                await reconcile(node.controller, cause: .endpoint, reason: "CNI ADD \(attachment) failed", eventAt: nil)
            }
            return .failed(EndpointError(.failed, "the pod's network could not be set up: \(why)"))

        case .delete(let attachment):
            guard node.endpoints.endpoint(attachment) != nil else { return .deleted(nil) }
            var next = node.endpoints
            let removed = next.remove(attachment)
            if let failure = await node.adopt(next, agent: self) { return .failed(failure) }
            log.info("endpoint deleted", metadata: ["attachment": "\(attachment)", "pod": "\(removed!.pod.id)"])
            await reconcile(node.controller, cause: .endpoint, reason: "CNI DEL \(attachment)", eventAt: nil)
            return .deleted(removed)

        case .collect(let keeping):
            var next = node.endpoints
            let removed = next.collect(keeping: keeping)
            guard !removed.isEmpty else { return .collected([]) }
            if let failure = await node.adopt(next, agent: self) { return .failed(failure) }
            log.info("endpoints collected", metadata: ["removed": "\(removed.map(\.attachment.description))"])
            await reconcile(node.controller, cause: .endpoint, reason: "CNI GC", eventAt: nil)
            return .collected(removed)

        case .check(let attachment):
            guard let endpoint = node.endpoints.endpoint(attachment) else {
                return .failed(EndpointError(.notFound, "no endpoint for \(attachment)"))
            }
            let controller = node.controller
            return .checked(await Self.onThread { Self.differences(of: endpoint, controller) })
        }
    }

    /// What differs for one endpoint: the changes a plan would make to its pod's namespace or its
    /// device, or why it cannot be read.
    static func differences(of endpoint: Endpoint, _ controller: NodeController) -> [String] {
        do {
            let plan = try controller.plan()
            let device = endpoint.hostDevice
            let mine = plan.changes.filter {
                $0.namespace == .pod(endpoint.netns) || $0.subject.contains(device)
                    || $0.subject.contains("\(endpoint.ip)/32") || $0.subject.hasSuffix(" \(endpoint.ip)")
            }
            var differences = mine.map(\.mismatch)
            differences += plan.unavailable.filter { $0.contains(endpoint.pod.id) }
            return differences
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
            routes: [.init(dst: "0.0.0.0/0", gw: "\(spec.node.routerIP)")], mtu: eth0.mtu)
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
