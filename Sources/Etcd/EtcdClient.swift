/// What nodenet asks of etcd (v3): reads of a prefix at a revision, writes under a lease,
/// create-if-absent, leases and their keep-alive, and a watch from a revision. A protocol, so
/// tests can put faults between the agent and a real etcd.
public protocol EtcdClient: Sendable {
    /// Every key under `prefix`, and the store's revision they were read at.
    func range(prefix: String) async throws -> EtcdSnapshot
    /// The key's value, nil when absent.
    func get(_ key: String) async throws -> EtcdKeyValue?
    /// Writes `value` (attached to `lease` when given); returns the revision it made.
    @discardableResult
    func put(_ key: String, value: [UInt8], lease: EtcdLease.ID?) async throws -> Int64
    /// Writes `value` only when the key is as it was read: its mod revision still `modRevision`
    /// (0: still absent). Returns whether it was written.
    func put(_ key: String, value: [UInt8], ifModRevision modRevision: Int64) async throws -> Bool
    /// Deletes the key; returns how many keys went (0 or 1).
    @discardableResult
    func delete(_ key: String) async throws -> Int
    /// Writes `value` only when `key` is absent or already holds `value` (a claim that can be
    /// made again by its owner). Returns nil when written, else what the key holds.
    func claim(_ key: String, value: [UInt8], lease: EtcdLease.ID?) async throws -> EtcdKeyValue?
    /// A lease of `ttl` seconds.
    func grantLease(ttl: Int) async throws -> EtcdLease
    /// Renews the lease; returns its TTL, 0 when etcd no longer has it (it expired).
    func keepAlive(_ lease: EtcdLease.ID) async throws -> Int
    func revokeLease(_ lease: EtcdLease.ID) async throws
    /// Changes under `prefix` after `revision` (exclusive), as etcd reports them, until the
    /// stream ends with an error (etcd unreachable, the revision compacted) or is cancelled.
    func watch(prefix: String, after revision: Int64) -> AsyncThrowingStream<EtcdWatchResponse, any Error>
    /// Closes connections; the client is unusable after.
    func shutdown() async
}

public struct EtcdKeyValue: Sendable, Hashable {
    public var key: String
    public var value: [UInt8]
    public var createRevision: Int64
    public var modRevision: Int64
    public var lease: EtcdLease.ID?

    public init(key: String, value: [UInt8], createRevision: Int64, modRevision: Int64, lease: EtcdLease.ID?) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.lease = lease
    }

    public var text: String { String(decoding: value, as: UTF8.self) }
}

/// Keys read at one revision.
public struct EtcdSnapshot: Sendable {
    public var revision: Int64
    public var keyValues: [EtcdKeyValue]

    public init(revision: Int64, keyValues: [EtcdKeyValue]) {
        self.revision = revision
        self.keyValues = keyValues
    }
}

public struct EtcdLease: Sendable, Hashable {
    public struct ID: Sendable, Hashable, CustomStringConvertible {
        public var rawValue: Int64
        public init(_ rawValue: Int64) { self.rawValue = rawValue }
        public var description: String { String(rawValue, radix: 16) }
    }
    public var id: ID
    public var ttl: Int

    public init(id: ID, ttl: Int) {
        self.id = id
        self.ttl = ttl
    }
}

public enum EtcdEvent: Sendable, Hashable {
    case put(EtcdKeyValue)
    /// The key and the revision that deleted it.
    case delete(key: String, revision: Int64)

    public var key: String {
        switch self {
        case .put(let kv): kv.key
        case .delete(let key, _): key
        }
    }
}

public enum EtcdWatchResponse: Sendable, Hashable {
    /// The watch is in place; changes after `revision` follow.
    case created(revision: Int64)
    case events([EtcdEvent], revision: Int64)
    /// Nothing changed up to `revision`.
    case progress(revision: Int64)
}
