import Etcd
import Foundation
import Logging
import NodeNet

/// The node's part in the cluster (etcd): registers the node under a lease it keeps alive,
/// claims its pod CIDR (create-if-absent), publishes its pods, and keeps a `ClusterView` from a
/// full listing plus a watch from that revision. Each change hands the agent the whole view
/// (never an event to replay). etcd unreachable: the view stays as it was, the status says
/// degraded, and it reconnects with backoff; a lost lease is granted again and every key
/// written again; a compacted watch re-lists.
final class ClusterMember: @unchecked Sendable {
    enum State: Sendable, Equatable {
        case connecting
        case connected
        /// etcd does not answer; the last view stays programmed.
        case degraded(String)
        /// etcd answers but refuses the node (its pod CIDR is another node's).
        case refused(String)
    }

    let settings: ClusterSettings
    let keys: ClusterKeys
    let client: any EtcdClient
    let record: ClusterNodeRecord
    private let log: Logger
    /// Told why after every change of the view (`currentView`); called on the member's tasks
    /// under its lock, so it must not call back into the member.
    private let changed: @Sendable (String) -> Void
    private let lock = NSLock()
    private var view: ClusterView
    private var state: State = .connecting
    private var lease: EtcdLease?
    /// pod → endpoint: what should be published, and what is (this lease).
    private var wanted: [String: ClusterEndpointRecord] = [:]
    private var published: [String: ClusterEndpointRecord] = [:]
    /// Wakes this round's publisher (a stream per round: a stream ends with its first consumer).
    private var signal: AsyncStream<Void>.Continuation?

    init(
        settings: ClusterSettings, client: any EtcdClient, record: ClusterNodeRecord, view: ClusterView? = nil,
        logger: Logger, changed: @escaping @Sendable (String) -> Void
    ) {
        self.settings = settings
        self.keys = ClusterKeys(prefix: settings.prefix)
        self.client = client
        self.record = record
        self.log = logger
        self.changed = changed
        self.view = view ?? ClusterView(keys: keys, grace: .seconds(settings.nodeDeleteGrace))
    }

    var status: (state: State, revision: Int64, lease: EtcdLease?) {
        lock.withLock { (state, view.revision, lease) }
    }

    var currentView: ClusterView { lock.withLock { view } }

    /// The node's pods now (spec pods and CNI endpoints); published under the lease.
    func publish(pods: [PodSpec]) {
        let next = Dictionary(
            pods.map { ($0.id, ClusterEndpointRecord(pod: $0.id, ip: $0.ip, node: record.name)) },
            uniquingKeysWith: { a, _ in a })
        let changedNow = lock.withLock {
            defer { wanted = next }
            return wanted != next
        }
        if changedNow { lock.withLock { signal }?.yield() }
    }

    /// Runs until cancelled.
    func run() async {
        var initial = true
        var failures = 0
        while !Task.isCancelled {
            do {
                try await register()
                let snapshot = try await client.range(prefix: keys.all)
                // Views are handed over under the lock, so the agent never gets an older one last.
                let listed = lock.withLock {
                    self.view.replace(
                        with: snapshot.keyValues.map { ($0.key, $0.value) }, revision: snapshot.revision,
                        now: ContinuousClock.now, initial: initial)
                    state = .connected
                    changed("cluster listed at revision \(snapshot.revision)")
                    return self.view
                }
                if failures > 0 || initial {
                    log.info(
                        "cluster listed",
                        metadata: ["revision": "\(snapshot.revision)", "nodes": "\(listed.nodes.count)"])
                }
                initial = false
                failures = 0
                let (signals, signal) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
                lock.withLock { self.signal = signal }
                signal.yield()  // what changed while registering
                // Each task runs until an error (or cancellation); the first to end ends the round.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await self.keepAlive() }
                    group.addTask { try await self.watch(after: snapshot.revision) }
                    group.addTask { try await self.publishEndpoints(signals) }
                    group.addTask { try await self.expireDeparted() }
                    defer { group.cancelAll() }
                    try await group.next()
                    try Task.checkCancellation()
                    throw EtcdError.unreachable(["the cluster watch stopped"])
                }
            } catch is CancellationError {
                return
            } catch let reason as Reregister {
                // Not etcd trouble: register again at once (a new lease when the old one went).
                log.info("registering again", metadata: ["why": "\(reason)"])
                try? await Task.sleep(for: .milliseconds(100))
            } catch let error as EtcdError {
                if case .compacted = error {
                    log.info("watch history compacted; listing again", metadata: ["error": "\(error)"])
                    try? await Task.sleep(for: .milliseconds(100))
                    continue
                }
                failures += 1
                if error.isLeaseNotFound { lock.withLock { lease = nil } }
                setState(.degraded("\(error)"))
                log.warning(
                    "etcd trouble; keeping the last known cluster state",
                    metadata: [
                        "error": "\(error)", "retry_in_ms": "\(Self.backoff(failures).components.seconds * 1000)",
                    ])
                try? await Task.sleep(for: Self.backoff(failures))
            } catch let error as ClusterRefusal {
                failures += 1
                setState(.refused(error.description))
                log.error("\(error.description)")
                try? await Task.sleep(for: Self.backoff(failures))
            } catch {
                failures += 1
                setState(.degraded("\(error)"))
                try? await Task.sleep(for: Self.backoff(failures))
            }
        }
    }

    /// 0.5 s doubling to 10 s.
    static func backoff(_ failures: Int) -> Duration {
        .milliseconds(min(500 << min(failures - 1, 5), 10_000))
    }

    private func setState(_ next: State) {
        lock.withLock { state = next }
    }

    /// A lease (a new one when the last is gone), the pod CIDR claimed, the node and its pods written.
    private func register() async throws {
        var lease: EtcdLease
        if let current = lock.withLock({ self.lease }), try await client.keepAlive(current.id) > 0 {
            lease = current
        } else {
            lease = try await client.grantLease(ttl: settings.leaseTTL)
        }
        let name = Array(record.name.utf8)
        if let holder = try await client.claim(keys.cidr(record.podCIDR), value: name, lease: lease.id) {
            try? await client.revokeLease(lease.id)
            throw ClusterRefusal.cidrClaimed(cidr: record.podCIDR, by: holder.text)
        }
        try await client.put(keys.node(record.name), value: record.encoded(), lease: lease.id)
        // Pods published by an earlier run: rewritten under this lease, or deleted.
        let earlier = try await client.range(prefix: keys.endpoints(of: record.name))
        lock.withLock {
            self.lease = lease
            published = [:]
        }
        let wantedKeys = Set(lock.withLock { wanted.keys }.map { keys.endpoint(node: record.name, pod: $0) })
        for kv in earlier.keyValues where !wantedKeys.contains(kv.key) {
            try await client.delete(kv.key)
        }
        try await syncEndpoints(lease)
        log.info(
            "registered", metadata: ["node": "\(record.name)", "lease": "\(lease.id)", "podCIDR": "\(record.podCIDR)"])
    }

    private func keepAlive() async throws {
        let period = Duration.milliseconds(max(settings.leaseTTL * 1000 / 3, 500))
        while true {
            try await Task.sleep(for: period)
            guard let lease = lock.withLock({ lease }) else { return }
            let ttl = try await client.keepAlive(lease.id)
            if ttl <= 0 {
                log.warning("the node's lease expired; registering again", metadata: ["lease": "\(lease.id)"])
                lock.withLock { self.lease = nil }
                throw Reregister.leaseExpired
            }
        }
    }

    private func publishEndpoints(_ signals: AsyncStream<Void>) async throws {
        for await _ in signals {
            guard let lease = lock.withLock({ lease }) else { continue }
            try await syncEndpoints(lease)
        }
    }

    /// Writes what is wanted and not yet published; deletes what is published and no longer wanted.
    private func syncEndpoints(_ lease: EtcdLease) async throws {
        let (wanted, published) = lock.withLock { (self.wanted, self.published) }
        for (pod, endpoint) in wanted where published[pod] != endpoint {
            try await client.put(keys.endpoint(node: record.name, pod: pod), value: endpoint.encoded(), lease: lease.id)
            lock.withLock { self.published[pod] = endpoint }
        }
        for pod in published.keys where wanted[pod] == nil {
            try await client.delete(keys.endpoint(node: record.name, pod: pod))
            lock.withLock { self.published[pod] = nil }
        }
    }

    private func watch(after revision: Int64) async throws {
        for try await response in client.watch(prefix: keys.all, after: revision) {
            guard case .events(let events, let revision) = response else { continue }
            let changes: [ClusterView.Change] = events.map {
                switch $0 {
                case .put(let kv): .put(key: kv.key, value: kv.value)
                case .delete(let key, _): .delete(key: key)
                }
            }
            lock.withLock {
                let now = ContinuousClock.now
                self.view.apply(changes, revision: revision, now: now)
                _ = self.view.expire(now: now)  // a grace of 0: gone with this change
                changed("cluster changed at revision \(revision): \(Self.summary(events))")
            }
            // Our own registration deleted by hand (or by a stale lease): write it again.
            if events.contains(where: { if case .delete(keys.node(record.name), _) = $0 { true } else { false } }) {
                throw Reregister.registrationDeleted
            }
        }
        throw EtcdError.unreachable(["the watch ended"])
    }

    /// Drops departed nodes when their grace ends.
    private func expireDeparted() async throws {
        while true {
            let next = lock.withLock { self.view.nextExpiry }
            // A departure after this sleep started is seen within 0.1 s of its grace's end.
            let wait = next.map { max($0 - ContinuousClock.now, .milliseconds(10)) } ?? .milliseconds(100)
            try await Task.sleep(for: min(wait, .milliseconds(100)))
            lock.withLock {
                if self.view.expire(now: ContinuousClock.now) { changed("a departed node's grace ended") }
            }
        }
    }

    private static func summary(_ events: [EtcdEvent]) -> String {
        let shown = events.prefix(3).map {
            switch $0 {
            case .put(let kv): "put \(kv.key)"
            case .delete(let key, _): "delete \(key)"
            }
        }
        return shown.joined(separator: ", ") + (events.count > 3 ? " and \(events.count - 3) more" : "")
    }
}

/// Why the member registers again although etcd answers.
enum Reregister: Error, CustomStringConvertible {
    case leaseExpired
    case registrationDeleted

    var description: String {
        switch self {
        case .leaseExpired: "the node's lease expired"
        case .registrationDeleted: "the node's registration was deleted"
        }
    }
}

/// etcd answers, but the node cannot join.
enum ClusterRefusal: Error, CustomStringConvertible {
    case cidrClaimed(cidr: IPPrefix, by: String)

    var description: String {
        switch self {
        case .cidrClaimed(let cidr, let holder):
            "pod CIDR \(cidr) is claimed by node \(holder) in etcd; this node cannot join until it has a CIDR of its own (or \(holder)'s lease ends)"
        }
    }
}
