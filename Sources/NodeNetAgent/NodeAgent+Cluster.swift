import Etcd
import Foundation
import Logging
import NodeNet
import Synchronization

/// Makes the etcd client of a node in cluster mode (tests put faults between the agent and etcd).
public typealias EtcdClientFactory = @Sendable (ClusterSettings) throws -> any EtcdClient

extension NodeAgent {
    /// The etcd client nodenet uses: the v3 JSON gateway, with the spec's TLS files.
    public static let gatewayClient: EtcdClientFactory = { try makeGatewayClient($0) }

    public static func makeGatewayClient(
        _ settings: ClusterSettings, requestTimeout: Duration = .seconds(5)
    ) throws -> EtcdGatewayClient {
        let endpoints = try settings.endpoints.map { text throws(EtcdError) in try EtcdEndpoint(text) }
        let tls =
            settings.caFile != nil || settings.certFile != nil
            ? EtcdTLS(caFile: settings.caFile, certFile: settings.certFile, keyFile: settings.keyFile) : nil
        return try EtcdGatewayClient(endpoints: endpoints, tls: tls, requestTimeout: requestTimeout)
    }

    /// etcd from synchronous code (the CLI's `cluster` commands, the lab): runs `body` with
    /// `client` while this thread waits, then shuts the client down. Never on a Swift
    /// concurrency thread (it blocks the thread until `body` is done).
    public static func blocking<T: Sendable>(
        _ client: any EtcdClient, _ body: @escaping @Sendable (any EtcdClient) async throws -> T
    ) throws -> T {
        let outcome = Mutex<Result<T, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            let result: Result<T, any Error>
            do { result = .success(try await body(client)) } catch { result = .failure(error) }
            await client.shutdown()
            outcome.withLock { $0 = result }
            done.signal()
        }
        done.wait()
        return try outcome.withLock { $0! }.get()
    }

    /// The cluster part of a running agent: the member (whose view is the cluster as it
    /// knows it) and its client.
    final class ClusterLink: @unchecked Sendable {
        let member: ClusterMember
        let client: any EtcdClient
        private var task: Task<Void, Never>?

        init(member: ClusterMember, client: any EtcdClient) {
            self.member = member
            self.client = client
        }

        var view: ClusterView { member.currentView }

        func start() { task = Task { await member.run() } }
        func stop() async {
            task?.cancel()
            await task?.value
            await client.shutdown()
        }
    }

    /// Joins the cluster of `spec` (cluster mode): the cached view first (etcd may not answer),
    /// then the member's listing, waited for up to `firstListing`.
    func joinCluster(_ spec: NodeSpec, settings: ClusterSettings, firstListing: Duration) async throws -> ClusterLink {
        let log = logger("cluster")
        let keys = ClusterKeys(prefix: settings.prefix)
        let grace = Duration.seconds(settings.nodeDeleteGrace)
        let cached = ClusterCache.load(keys: keys, grace: grace, stateDirectory: spec.stateDirectory)
        if let warning = cached.warning { log.warning("\(warning)") }
        let client = try (options.etcdClient ?? Self.gatewayClient)(settings)
        let record = ClusterNodeRecord(
            name: spec.node.name, address: spec.node.address, podCIDR: spec.node.podCIDR,
            bootID: Self.bootID, version: NodeNetVersion.current)
        let listed = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let member = ClusterMember(
            settings: settings, client: client, record: record, view: cached.view, logger: log
        ) { [continuation, state] reason in
            listed.continuation.yield()
            // One pending at a time: the loop takes the newest view when it gets to it.
            let first = state.with { box in
                defer { box.clusterPending = true }
                return !box.clusterPending
            }
            if first { continuation.yield(.cluster(reason)) }
        }
        let link = ClusterLink(member: member, client: client)
        link.start()
        // The first listing, briefly: a node that starts with etcd answering programs the
        // cluster in its first reconcile; without etcd, the cached view stands.
        let waited = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await _ in listed.stream { return true }
                return false
            }
            group.addTask {
                try? await Task.sleep(for: firstListing)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        if !waited {
            log.warning(
                "etcd has not answered yet; starting from the cached cluster view",
                metadata: ["cached_nodes": "\(cached.view?.nodes.count ?? 0)"])
        }
        return link
    }

    /// The boot id of this machine (a changed one in a registration means the node rebooted).
    static let bootID: String = {
        let text = (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8)) ?? ""
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }()

    /// Keeps the view for an agent that starts while etcd does not answer; off the loop's
    /// thread (it syncs to disk), one write at a time, the newest view last.
    func saveClusterCache(_ view: ClusterView, stateDirectory: String) {
        let log = logger("cluster")
        // One slot: a write waiting for the disk is replaced by a newer view, never queued behind it.
        let first = Self.pendingCache.withLock { pending in
            defer { pending = (view, stateDirectory) }
            return pending == nil
        }
        guard first else { return }
        Self.cacheWrites.async {
            guard
                let (latest, directory) = Self.pendingCache.withLock({ pending in
                    defer { pending = nil }
                    return pending
                })
            else { return }
            do {
                try ClusterCache.save(latest, stateDirectory: directory)
            } catch {
                log.warning("cannot keep the cluster cache", metadata: ["error": "\(error)"])
            }
        }
    }

    private static let cacheWrites = DispatchQueue(label: "nodenet.cluster-cache")
    private static let pendingCache = Mutex<(ClusterView, String)?>(nil)
}
