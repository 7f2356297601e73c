import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
    import NodeNet
#endif

/// Why a reconcile ran: the `trigger` label of `nodenet_reconcile_runs_total` and of the logs.
public enum ReconcileCause: String, Sendable, CaseIterable {
    /// The periodic BPF audit found the datapath changed.
    case audit
    /// A CNI endpoint was added or deleted through the endpoint API.
    case endpoint
    /// The agent started.
    case start
    /// A netlink event on something nodenet owns.
    case event
    /// The periodic full re-plan.
    case resync
    /// The spec changed (file or SIGHUP).
    case reload
    /// The cluster changed in etcd (a node, a service or a published pod), or a departed
    /// node's grace ended.
    case cluster
}

/// Keeps a node converged: applies the spec, then stays level-triggered. Netlink events on
/// objects nodenet owns, a periodic full re-plan, and spec changes (file edits, also by
/// atomic rename, or `reload()`) each run a full plan + apply against a fresh read of the
/// kernel. Stopping never tears anything down.
public final class NodeAgent: @unchecked Sendable {
    public struct Options: Sendable {
        public var specPath: String
        public var namespace: NamespaceReference
        /// Full re-plan period (catches what events miss, including monitor overruns).
        public var resyncInterval: Duration
        /// How often the spec file is checked for changes.
        public var specCheckInterval: Duration
        /// How often the BPF datapath is audited (BPF mode): links, filters and maps compared
        /// with what the last verified apply left; a difference starts a reconcile. nil: never.
        public var bpfAuditInterval: Duration?
        /// Where the endpoint API (`nodenet-cni` talks to it) listens.
        public var apiSocket: APISocket
        /// Cluster mode: makes the etcd client (nil: `NodeAgent.gatewayClient`).
        public var etcdClient: EtcdClientFactory?
        /// Cluster mode: how long the first reconcile waits for etcd's listing before it
        /// starts from the cached view.
        public var clusterFirstListing: Duration = .seconds(3)

        public init(
            specPath: String, namespace: NamespaceReference = .current, resyncInterval: Duration = .seconds(30),
            specCheckInterval: Duration = .milliseconds(500), bpfAuditInterval: Duration? = .seconds(1),
            apiSocket: APISocket = .off
        ) {
            self.apiSocket = apiSocket
            self.specPath = specPath
            self.namespace = namespace
            self.resyncInterval = resyncInterval
            self.specCheckInterval = specCheckInterval
            self.bpfAuditInterval = bpfAuditInterval
        }
    }

    public enum APISocket: Sendable, Equatable {
        case off
        /// `/run/nodenet/<node>/nodenet.sock`.
        case standard
        case path(String)

        func path(node: String) -> String? {
            switch self {
            case .off: nil
            case .standard: EndpointAPI.defaultSocket(node: node)
            case .path(let p): p
            }
        }
    }

    /// What makes the agent reconcile, as the loop receives it.
    enum Trigger: Sendable {
        /// `subject`: what the event is about, to tell the effects of the agent's own endpoint
        /// changes from drift.
        case event(String, at: ContinuousClock.Instant, subject: EventSubject? = nil)
        case resync
        case audit
        case reload(String)
        /// Endpoint requests are queued (`pendingEndpoints`): handle every one queued.
        case endpoints
        /// The cluster view changed (the newest is the link's; one pending at a time).
        case cluster(String)
        case stop
    }

    public enum Health: Sendable, Equatable {
        case starting
        case healthy
        case unhealthy(String)
    }

    public let options: Options
    public let metrics: AgentMetrics
    let logger: (String) -> Logger
    let state = StateBox()
    /// How long the last BPF audit took: the next waits at least `auditPace` times as long, so
    /// audits take at most 2 % of a core (counting 800 000 map entries, 100 000 services,
    /// takes about 0.15 s: they come every 7 s or so there, every interval on smaller nodes).
    let lastAuditCost = AuditCost()
    static let auditPace = 50

    final class AuditCost: Sendable {
        private let value = Mutex<Duration>(.zero)
        var duration: Duration {
            get { value.withLock { $0 } }
            set { value.withLock { $0 = newValue } }
        }
    }
    /// The services' health check node ports (kube-proxy's), following the spec.
    let healthChecks: HealthCheckServers
    private let triggers: AsyncStream<Trigger>
    let continuation: AsyncStream<Trigger>.Continuation

    final class StateBox: @unchecked Sendable {
        let lock = NSLock()
        var health: Health = .starting
        /// What the last reconcile had to work around (a ledger rebuilt from the kernel); shown by
        /// /healthz until a reconcile needs no workaround.
        var warnings: [String] = []
        /// The datapath as the last verified reconcile left it (BPF mode): what audits compare to.
        var baseline: DatapathFingerprint?
        var audit = AuditRecord()
        /// When the audit record was last written for its `lastAudit`.
        var auditSavedAt: Date?
        var stateDirectory: String?
        var reconciles = 0
        /// Between the first reconcile and stopping.
        var acceptingEndpoints = false
        /// The node's pods by source, for listings.
        var specPods: [PodSpec] = []
        var endpoints: [Endpoint] = []
        var freeAddresses = 0
        /// What the agent's own endpoint changes touched and when they were verified: events
        /// about them from before then are not drift.
        var ownChanges: [EventSubject: ContinuousClock.Instant] = [:]
        /// When a full reconcile's reading last found the node converged (`ApplyReport.convergedAt`).
        var convergedAt: ContinuousClock.Instant?
        /// Endpoint requests waiting for the loop.
        var pendingEndpoints: [PendingEndpoint] = []
        /// Reconciles that failed in a row, and whether a retry is scheduled.
        var failures = 0
        var retryPending = false
        /// Cluster mode: the link to etcd, and what of the cluster was left out.
        var cluster: ClusterLink?
        var clusterSkipped: [String] = []
        var clusterPending = false
        /// A reconcile ran since the heap was last given back (`releaseHeapIfDue`).
        var heapReleaseDue = false
        /// The endpoint store had to be rebuilt at start (shown by /healthz while this agent runs).
        var storeWarning: String?
        /// State files this agent had to set aside (a ledger rebuilt from the kernel): shown by
        /// /healthz while it runs, although the next reconcile is clean again at once.
        var setAside: [String] = []
        func with<T>(_ body: (StateBox) -> T) -> T {
            lock.lock()
            defer { lock.unlock() }
            return body(self)
        }
    }

    /// - Parameter logger: makes a logger for a subsystem (`reconcile`, `monitor`, `spec`, `agent`).
    public init(options: Options, metrics: AgentMetrics = AgentMetrics(), logger: @escaping (String) -> Logger) {
        self.options = options
        self.metrics = metrics
        self.logger = logger
        self.healthChecks = HealthCheckServers(namespace: options.namespace)
        (triggers, continuation) = AsyncStream<Trigger>.makeStream(bufferingPolicy: .unbounded)
    }

    public var health: Health { state.with { $0.health } }
    var isAcceptingEndpoints: Bool { state.with { $0.acceptingEndpoints } }

    /// The pods of the node now: the spec's and the CNI endpoints, and how many addresses are
    /// left for endpoints.
    public var pods: (spec: [PodSpec], endpoints: [Endpoint], freeAddresses: Int) {
        state.with { ($0.specPods, $0.endpoints, $0.freeAddresses) }
    }

    func publish(_ node: RunningNode) {
        let free = node.endpoints.freeAddresses(spec: node.spec)
        let cluster = state.with {
            $0.specPods = node.spec.pods
            $0.endpoints = node.endpoints.endpoints
            $0.freeAddresses = free
            return $0.cluster
        }
        cluster?.member.publish(pods: node.spec.pods + node.endpoints.endpoints.map(\.pod))
        metrics.describe(node.controller.spec)
        healthChecks.sync(node.controller.spec.serviceHealthChecks, log: logger("health-check"))
    }
    /// Reconcile runs so far.
    public var reconcileCount: Int { state.with { $0.reconciles } }

    /// The health and metrics endpoint's answer for `path`: (status, content type, body).
    /// `/healthz` is 200 when the last reconcile succeeded and verified, else 503 with why.
    public func httpResponse(path: String) -> (Int, String, String) {
        switch path {
        case "/healthz":
            switch health {
            case .healthy:
                let (reconcileWarnings, cluster, skipped, store, setAside) = state.with {
                    ($0.warnings, $0.cluster, $0.clusterSkipped, $0.storeWarning, $0.setAside)
                }
                let warnings =
                    (store.map { [$0] } ?? []) + setAside + reconcileWarnings.filter { !setAside.contains($0) }
                var body = "ok\n"
                if let cluster {
                    let status = cluster.member.status
                    switch status.state {
                    case .connecting: body = "degraded: cluster: connecting to etcd\n"
                    case .connected:
                        body +=
                            "cluster: connected (revision \(status.revision), lease \(status.lease.map { "\($0.id)" } ?? "none"))\n"
                    case .degraded(let why):
                        body = "degraded: cluster: etcd unreachable, keeping the last known state: \(why)\n"
                    case .refused(let why): return (503, "text/plain", "unhealthy: cluster: \(why)\n")
                    }
                    body += skipped.map { "warning: cluster record left out: \($0)\n" }.joined()
                }
                return (200, "text/plain", body + warnings.map { "warning: \($0)\n" }.joined())
            case .starting: return (503, "text/plain", "starting\n")
            case .unhealthy(let why): return (503, "text/plain", "unhealthy: \(why)\n")
            }
        case "/metrics":
            return (200, "text/plain; version=0.0.4", metrics.exposition())
        default:
            return (404, "text/plain", "try /healthz or /metrics\n")
        }
    }

    /// Re-reads the spec (what SIGHUP does).
    public func reload(reason: String = "SIGHUP") { continuation.yield(.reload(reason)) }
    /// Stops `run()` after the current reconcile; nothing is torn down.
    public func stop() { continuation.yield(.stop) }

    /// Loads the spec, applies it, and keeps the node converged until `stop()`.
    /// Throws `SpecError` when the spec is invalid at start.
    public func run() async throws {
        let log = logger("agent")
        // Stamp before loading: an edit landing in between is then seen as a change.
        let stamp = FileStamp(options.specPath)
        var spec = try NodeSpec.load(path: options.specPath)
        // One writer per node: held for the agent's lifetime (a second agent, a hand-run apply
        // or teardown are refused with who holds it); it dies with the process.
        let lock = try NodeLock.acquire(stateDirectory: spec.stateDirectory, node: spec.node.name, command: "run")
        let endpoints = try loadEndpointStore(for: spec, log: log)
        // Cluster mode: nodes and services come from etcd, merged into the spec.
        let fileSpec = spec
        var clusterLink: ClusterLink?
        defer {
            if let clusterLink {
                state.with { $0.cluster = nil }
                Task { await clusterLink.stop() }
            }
        }
        if let settings = spec.cluster {
            let link = try await joinCluster(spec, settings: settings, firstListing: options.clusterFirstListing)
            clusterLink = link
            state.with { $0.cluster = link }
            let merged = fileSpec.merging(link.view)
            spec = merged.spec
            state.with { $0.clusterSkipped = merged.skipped }
        }
        var node = RunningNode(
            spec: spec, endpoints: endpoints,
            controller: try RunningNode.controller(spec, endpoints, lock: lock, namespace: options.namespace),
            lock: lock, namespace: options.namespace)
        defer { healthChecks.stop() }
        publish(node)
        log.info(
            "starting",
            metadata: ["node": "\(spec.node.name)", "namespace": "\(options.namespace)", "spec": "\(options.specPath)"])
        // Subscribe before the first apply: drift in between is then seen, not left to resync.
        let monitor = try NetlinkMonitor(
            namespace: options.namespace, groups: [.link, .ipv4Address, .ipv4Route, .ipv4Netconf, .trafficControl])
        // tc events name a device by index only: looked up to tell whether it is one of ours.
        let deviceNames = try NetlinkSocket(namespace: options.namespace)
        defer { monitor.stop() }
        node.monitor = monitor
        // The endpoint API listens before the first apply: requests wait for it in the loop's
        // queue (a runtime's ADD during start is answered when the node is ready, not refused).
        state.with { $0.acceptingEndpoints = true }
        defer { state.with { $0.acceptingEndpoints = false } }
        var api: HTTPServer?
        if let path = options.apiSocket.path(node: spec.node.name) {
            api = try EndpointAPI.serve(self, at: path, stateDirectory: spec.stateDirectory, logger: logger("api"))
            log.info("serving the endpoint API", metadata: ["socket": "\(path)"])
        }
        defer { api?.stop() }
        await reconcile(node.controller, cause: .start, reason: "start", eventAt: nil)
        releaseHeapIfDue()
        if spec.datapath.mode == .bpf, options.bpfAuditInterval != nil {
            state.with {
                $0.stateDirectory = spec.stateDirectory
                $0.auditSavedAt = Date()
                return $0.audit
            }.save(stateDirectory: spec.stateDirectory, interval: options.bpfAuditInterval)
        }
        let owned = OwnedBox(OwnershipFilter(spec: node.controller.spec, device: spec.node.device))
        let tasks = eventSources(monitor: monitor, deviceNames: deviceNames, owned: owned, stamp: stamp)
        defer { tasks.forEach { $0.cancel() } }

        // (The node moves into the loop: a replaced controller goes when the loop replaces it.)
        var loop = AgentLoop(
            node: consume node, fileSpec: fileSpec, stamp: stamp, clusterLink: clusterLink, owned: owned)
        for await trigger in triggers {
            // (After the trigger's reconcile and its report are gone.)
            defer { releaseHeapIfDue() }
            await respond(to: trigger, &loop)
        }
    }

    /// One reconcile, on a thread of its own: it blocks in system calls (netlink, sysctl
    /// files, namespace threads), which must not hold a Swift concurrency thread.
    /// Returns the apply's report; nil when the reconcile failed.
    @discardableResult
    func reconcile(
        _ controller: NodeController, cause: ReconcileCause, reason: String, eventAt: ContinuousClock.Instant?
    ) async -> ApplyReport? {
        let report = await withCheckedContinuation { (done: CheckedContinuation<ApplyReport?, Never>) in
            Thread.detachNewThread { [self] in
                let report = reconcileNow(controller, cause: cause, reason: reason, eventAt: eventAt)
                state.with { box in
                    if let at = report?.convergedAt { box.convergedAt = max(box.convergedAt ?? at, at) }
                    box.heapReleaseDue = true
                }
                done.resume(returning: consume report)
            }
        }
        scheduleRetry(succeeded: report?.verified == true)
        return report
    }

    /// Gives the heap's free pages back to the kernel once a reconcile ran and its caller is done
    /// with the report (`HeapRelease`), on a thread of its own.
    ///
    /// Not in `reconcile` itself: the report was still alive there, and its changes (400 000 at a
    /// first apply of 100 000 services) stayed resident until the next reconcile's release.
    func releaseHeapIfDue() {
        let due = state.with { box in
            defer { box.heapReleaseDue = false }
            return box.heapReleaseDue
        }
        if due { Thread.detachNewThread { HeapRelease.now() } }
    }

    /// A reconcile that failed (a transient kernel error, drift landing faster than we repair) is
    /// tried again after 0.5 s, doubling up to the resync interval, instead of waiting for the
    /// next event or resync; one retry is pending at a time.
    private func scheduleRetry(succeeded: Bool) {
        let delay: Duration? = state.with { box in
            if succeeded {
                box.failures = 0
                return nil
            }
            box.failures += 1
            guard !box.retryPending else { return nil }
            box.retryPending = true
            let seconds = min(0.5 * Double(1 << min(box.failures - 1, 10)), Self.seconds(options.resyncInterval))
            return .milliseconds(Int64(seconds * 1000))
        }
        guard let delay else { return }
        Task { [continuation, state] in
            try? await Task.sleep(for: delay)
            state.with { $0.retryPending = false }
            continuation.yield(.event("retry after a failed reconcile", at: .now))
        }
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// The changes of a reconcile listed one by one at info level; the others at debug level,
    /// after a line that counts them (a first apply of 100 000 services has 400 000 changes).
    static let changesListed = 100

    /// One plan + apply + verify, logged change by change.
    private func reconcileNow(
        _ controller: NodeController, cause: ReconcileCause, reason: String, eventAt: ContinuousClock.Instant?
    ) -> ApplyReport? {
        let log = logger("reconcile")
        let start = ContinuousClock.now
        metrics.reconciles[cause]?.increment()
        state.with { $0.reconciles += 1 }
        do {
            var report = try controller.apply()
            // A mismatch after apply is usually new drift that landed while we worked
            // (someone changed the kernel again): re-plan at once, a bounded number of times.
            var attempts = 1
            while !report.verified && attempts < 3 {
                log.info(
                    "verification saw new drift; re-planning", metadata: ["mismatches": "\(report.mismatches.count)"])
                let again = try controller.apply()
                report = ApplyReport(
                    node: again.node, changes: report.changes + again.changes, mismatches: again.mismatches,
                    seconds: report.seconds + again.seconds, warnings: report.warnings + again.warnings,
                    datapathFingerprint: again.datapathFingerprint, convergedAt: again.convergedAt)
                attempts += 1
            }
            for warning in report.warnings { log.warning("\(warning)") }
            state.with { box in
                box.warnings = report.warnings
                for warning in report.warnings where warning.contains("moved aside") && !box.setAside.contains(warning)
                {
                    box.setAside = Array((box.setAside + [warning]).suffix(10))
                }
            }
            for (n, change) in report.changes.enumerated() {
                if n == Self.changesListed {
                    log.info(
                        "\(report.changes.count - n) more changes, listed at debug level",
                        metadata: ["why": "\(reason)", "changes": "\(report.changes.count)"])
                }
                let level: Logger.Level = n < Self.changesListed ? .info : .debug
                if level >= log.logLevel {
                    let words = change.words  // (made once: a services change makes them on each read)
                    log.log(
                        level: level, "\(change.action.rawValue) \(words.subject)",
                        metadata: [
                            "why": "\(reason)", "kind": "\(change.kind)", "namespace": "\(change.namespace)",
                            "found": "\(words.found ?? "nothing")", "wanted": "\(words.wanted ?? "nothing")",
                        ])
                }
                if cause == .event || cause == .resync || cause == .audit { metrics.repaired(kind: change.kind) }
            }
            let elapsed = ContinuousClock.now - start
            metrics.reconcileDuration.record(elapsed)
            if let eventAt, !report.changes.isEmpty {
                let latency = ContinuousClock.now - eventAt
                metrics.repairDuration.record(latency)
                log.info(
                    "drift repaired",
                    metadata: [
                        "why": "\(reason)", "changes": "\(report.changes.count)",
                        "latency_ms": "\(Self.milliseconds(latency))",
                    ])
            } else {
                log.debug(
                    "reconciled",
                    metadata: [
                        "trigger": "\(cause.rawValue)", "why": "\(reason)", "changes": "\(report.changes.count)",
                        "ms": "\(Self.milliseconds(elapsed))",
                    ])
            }
            if cause == .start || cause == .reload {
                log.info(
                    "converged",
                    metadata: [
                        "trigger": "\(cause.rawValue)", "changes": "\(report.changes.count)",
                        "ms": "\(Self.milliseconds(elapsed))",
                    ])
            }
            if report.verified {
                setHealth(.healthy)
                // What audits compare against until the next verified reconcile: taken by apply
                // before the plan that found the kernel matching the spec.
                state.with { $0.baseline = report.datapathFingerprint }
            } else {
                metrics.reconcileFailures.increment()
                setHealth(
                    .unhealthy(
                        "kernel does not match the spec after apply: "
                            + report.mismatches.prefix(3).joined(separator: "; ")))
                log.error(
                    "verification failed", metadata: ["mismatches": "\(report.mismatches.joined(separator: "; "))"])
            }
            return report
        } catch {
            metrics.reconcileFailures.increment()
            if error is ApplyFailure || error is NetlinkError { metrics.kernelErrors.increment() }
            setHealth(.unhealthy("\(error)"))
            log.error("reconcile failed", metadata: ["why": "\(reason)", "error": "\(error)"])
            return nil
        }
    }

    /// Compares the datapath with the baseline of the last verified reconcile (on a thread of
    /// its own: it makes bpf(2) and netlink calls). Returns what differs, nil when nothing does.
    func audit(_ controller: NodeController) async -> [String]? {
        await withCheckedContinuation { (done: CheckedContinuation<[String]?, Never>) in
            Thread.detachNewThread { [self] in
                metrics.bpfAudits.increment()
                let baseline = state.with { $0.baseline }
                var drift: [String]?
                do {
                    let start = ContinuousClock.now
                    let now = try controller.datapathFingerprint()
                    lastAuditCost.duration = ContinuousClock.now - start
                    if let baseline {
                        let differences = now.differences(from: baseline)
                        drift = differences.isEmpty ? nil : differences
                    }
                } catch {
                    drift = ["the datapath cannot be read: \(error)"]
                }
                let now = Date()
                // The file learns of audits every few seconds (for `status`), not on each one.
                let due = state.with { box -> AuditRecord? in
                    box.audit.lastAudit = now
                    if let saved = box.auditSavedAt, now.timeIntervalSince(saved) < AuditRecord.lastAuditSaveInterval {
                        return nil
                    }
                    box.auditSavedAt = now
                    return box.audit
                }
                if let due, let directory = state.with({ $0.stateDirectory }) {
                    due.save(stateDirectory: directory, interval: options.bpfAuditInterval)
                }
                if let drift {
                    metrics.bpfAuditDrift.increment()
                    logger("audit").warning("bpf drift", metadata: ["differences": "\(drift.joined(separator: "; "))"])
                }
                done.resume(returning: drift)
            }
        }
    }

    /// Notes BPF drift and whether the reconcile that met it verified, for `status` (written
    /// only when something happened).
    func recordDrift(_ drift: [String], repaired: Bool, spec: NodeSpec) {
        let record = state.with { box -> AuditRecord in
            box.audit.lastDrift = drift
            box.audit.lastDriftAt = Date()
            box.audit.repaired = repaired
            return box.audit
        }
        record.save(stateDirectory: spec.stateDirectory, interval: options.bpfAuditInterval)
    }

    /// BPF drift is also met by reconciles the audit did not start (an unrelated event, the
    /// resync): with the spec unchanged, every datapath or service change they make is a repair.
    func recordDatapathRepair(_ report: ApplyReport?, cause: ReconcileCause, spec: NodeSpec) {
        guard spec.datapath.mode == .bpf, let report else { return }
        let repairs = report.changes.filter { $0.kind == .datapath || $0.kind == .service }
        guard !repairs.isEmpty else { return }
        recordDrift(
            repairs.map { "\($0.mismatch) (met by the \(cause.rawValue) reconcile)" }, repaired: report.verified,
            spec: spec)
    }

    /// Removes idle BPF conntrack entries (each resync) and records how many there are.
    func collectConntrack(_ spec: NodeSpec) {
        do {
            let gc = try Conntrack.collect(bpffsDirectory: spec.bpffsDirectory)
            metrics.conntrackEntries.set(to: Double(gc.scanned - gc.removed))
            metrics.conntrackCollected.increment(by: Int64(gc.removed))
            if gc.removed > 0 {
                logger("conntrack").info(
                    "idle flows removed", metadata: ["removed": "\(gc.removed)", "scanned": "\(gc.scanned)"])
            }
        } catch {
            logger("conntrack").warning("garbage collection failed", metadata: ["error": "\(error)"])
        }
    }

    private func setHealth(_ h: Health) {
        state.with { $0.health = h }
        metrics.healthy.set(to: h == .healthy ? 1.0 : 0.0)
    }

    static func milliseconds(_ d: Duration) -> String {
        String(format: "%.3f", Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
    }
}

/// Identity of a file's contents for change detection (survives atomic renames).
struct FileStamp: Equatable, Sendable {
    var inode: UInt64 = 0, size: Int64 = 0, mtime: Int = 0, mtimeNanos: Int = 0

    init(_ path: String) {
        var s = stat()
        guard stat(path, &s) == 0 else { return }
        inode = UInt64(s.st_ino)
        size = Int64(s.st_size)
        mtime = s.st_mtim.tv_sec
        mtimeNanos = s.st_mtim.tv_nsec
    }
}

final class OwnedBox: @unchecked Sendable {
    private let lock = NSLock()
    private var filter: OwnershipFilter
    init(_ f: OwnershipFilter) { filter = f }
    var value: OwnershipFilter {
        get {
            lock.lock()
            defer { lock.unlock() }
            return filter
        }
        set {
            lock.lock()
            filter = newValue
            lock.unlock()
        }
    }
}

/// Decides whether a netlink event touches something nodenet owns (and says what).
struct OwnershipFilter: Sendable {
    let devices: Set<String>
    let device: String

    init(spec: NodeSpec, device: String) {
        devices = Set(
            [NodeNetNames.hostDevice, NodeNetNames.netDevice] + spec.pods.map(NodeNetNames.endpointDevice(for:)))
        self.device = device
    }

    /// Whether `device` is one nodenet made or attaches to.
    func owns(device name: String) -> Bool { devices.contains(name) || name == device }

    func concerns(_ event: NetlinkEvent) -> String? {
        switch event {
        case .deletedRoute(let r) where r.protocol == NodeNetNames.routeProtocol:
            return "route \(r.destination) deleted"
        case .newRoute(let r) where r.protocol == NodeNetNames.routeProtocol:
            return "route \(r.destination) changed"
        case .deletedLink(let l) where devices.contains(l.name) || l.name == device:
            return "link \(l.name) deleted"
        case .newLink(let l) where devices.contains(l.name):
            return l.isUp ? nil : "link \(l.name) is down"
        case .newLink(let l) where l.name == device:
            return "native device \(l.name) changed"
        case .deletedAddress(let a):
            return "address \(a.prefix) deleted"
        case .netconf:
            return "an IPv4 device setting changed"
        default:
            return nil
        }
    }
}

/// What a netlink event is about, in the terms the agent's own endpoint changes record what
/// they touched: a route by destination, a link by name, a device's IPv4 settings by ifindex.
enum EventSubject: Hashable, Sendable {
    case route(IPPrefix)
    case link(String)
    case netconf(InterfaceIndex)

    init?(_ event: NetlinkEvent) {
        switch event {
        case .deletedRoute(let r), .newRoute(let r): self = .route(r.destination)
        case .deletedLink(let l), .newLink(let l): self = .link(l.name)
        case .netconf(let index?): self = .netconf(index)
        default: return nil
        }
    }
}
