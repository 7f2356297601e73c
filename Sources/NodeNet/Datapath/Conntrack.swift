import BPF
import CNodeNetBPF
import Foundation

/// The BPF connection-tracking table of packet-level translation (NodePort from outside,
/// per-packet service translation, masquerading): listing and garbage collection by age.
public enum Conntrack {
    /// Idle times after which a flow is removed (Cilium's defaults; a TCP flow that never got
    /// past its handshake goes sooner, as a SYN flood's would).
    public struct Timeouts: Sendable {
        public var tcp: Duration = .seconds(21_600)
        public var tcpClosing: Duration = .seconds(10)
        /// TCP flows not established (no segment past the handshake went forward).
        public var tcpOpening: Duration = .seconds(15)
        public var other: Duration = .seconds(60)
        public init() {}
    }

    /// One entry, as `nodenetd service ct list` shows it.
    public struct Entry: Sendable, Codable, Equatable {
        /// `service`, `reply`, `nat-out` or `nat-in`.
        public var kind: String
        public var `protocol`: String
        public var source: String
        public var destination: String
        /// service: the backend; reply: the frontend; nat-out: the translated source; nat-in: the original source.
        public var translated: String
        public var idleSeconds: Double
        public var closing: Bool
        /// TCP: a segment past the handshake went forward.
        public var established: Bool
    }

    public struct Collection: Sendable, Codable, Equatable {
        public var scanned: Int
        public var removed: Int
    }

    static func path(_ bpffsDirectory: String) -> String { BPFFSLayout(directory: bpffsDirectory).path(.conntrack) }

    /// How many entries the node's table holds (0 when nothing is pinned).
    public static func count(bpffsDirectory: String) throws -> Int {
        guard let map = try BPFMap<nodenet_tuple, nodenet_ct_entry>.pinned(at: path(bpffsDirectory)) else { return 0 }
        return try map.entries().count
    }

    /// Every entry of the node's table (empty when nothing is pinned).
    public static func list(bpffsDirectory: String) throws -> [Entry] {
        guard let map = try BPFMap<nodenet_tuple, nodenet_ct_entry>.pinned(at: path(bpffsDirectory)) else { return [] }
        let now = BPFClock.nanoseconds()
        return try map.entries().map { k, v in
            let kinds = [1: "service", 2: "reply", 3: "nat-out", 4: "nat-in", 5: "inbound"]
            let proto = [1: "ICMP", 6: "TCP", 17: "UDP"][Int(k.proto)] ?? "\(k.proto)"
            func endpoint(_ a: UInt32, _ p: UInt16) -> String {
                "\(IPAddress(ipv4: UInt32(bigEndian: a))):\(UInt16(bigEndian: p))"
            }
            return Entry(
                kind: kinds[Int(k.kind)] ?? "\(k.kind)", protocol: proto, source: endpoint(k.saddr, k.sport),
                destination: endpoint(k.daddr, k.dport),
                translated: endpoint(v.address, v.port), idleSeconds: Double(now &- min(now, v.last_seen_ns)) / 1e9,
                closing: v.flags & UInt8(NODENET_CT_F_CLOSING) != 0,
                established: v.flags & UInt8(NODENET_CT_F_ESTABLISHED) != 0)
        }.sorted { ($0.source, $0.destination, $0.kind) < ($1.source, $1.destination, $1.kind) }
    }

    private static let partners: [UInt32: (kind: UInt32, translatedIsSource: Bool)] = [
        NODENET_CT_SERVICE.rawValue: (NODENET_CT_REPLY.rawValue, true),
        NODENET_CT_REPLY.rawValue: (NODENET_CT_SERVICE.rawValue, false),
        NODENET_CT_NAT_OUT.rawValue: (NODENET_CT_NAT_IN.rawValue, false),
        NODENET_CT_NAT_IN.rawValue: (NODENET_CT_NAT_OUT.rawValue, true),
    ]

    /// The entry a flow's other direction has (service <-> reply, nat-out <-> nat-in). An entry
    /// made where the flow was translated on its way in (service, nat-in) pairs with one keyed by
    /// the translated address as source; the others pair with one keyed by it as destination.
    static func partner(_ k: nodenet_tuple, _ v: nodenet_ct_entry) -> nodenet_tuple? {
        guard let partner = partners[UInt32(k.kind)] else { return nil }
        var p = nodenet_tuple()
        p.proto = k.proto
        p.kind = UInt8(partner.kind)
        if partner.translatedIsSource {
            (p.saddr, p.sport, p.daddr, p.dport) = (v.address, v.port, k.saddr, k.sport)
        } else {
            (p.saddr, p.sport, p.daddr, p.dport) = (k.daddr, k.dport, v.address, v.port)
        }
        return p
    }

    /// Removes flows idle longer than their timeout (both directions judged together: a flow
    /// is idle only when neither direction was used), then recounts the flow quotas. The LRU
    /// table also evicts the oldest entries by itself when full. The first collection on a table
    /// (no recount stamp yet: a build before flows were marked established) takes its TCP flows
    /// for established, so an idle connection of the old build is not cut after 15 s.
    @discardableResult
    public static func collect(
        bpffsDirectory: String, timeouts: Timeouts = Timeouts(), now: UInt64? = nil
    ) throws -> Collection {
        guard let map = try BPFMap<nodenet_tuple, nodenet_ct_entry>.pinned(at: path(bpffsDirectory)) else {
            return Collection(scanned: 0, removed: 0)
        }
        let now = now ?? BPFClock.nanoseconds()
        let quotas = try BPFMap<UInt32, UInt32>.pinned(
            at: BPFFSLayout(directory: bpffsDirectory).path(.conntrackQuota))
        let firstCollection = try quotas.map { try $0.lookup(UInt32(NODENET_CT_QUOTA_STAMP)) == nil } ?? false
        let entries = try map.entries()
        var byKey: [TupleKey: nodenet_ct_entry] = [:]
        for (k, v) in entries { byKey[TupleKey(k)] = v }
        func nanoseconds(_ d: Duration) -> UInt64 {
            UInt64(d.components.seconds) * 1_000_000_000 + UInt64(d.components.attoseconds / 1_000_000_000)
        }
        var removed = 0
        var kept: [(nodenet_tuple, nodenet_ct_entry)] = []
        kept.reserveCapacity(entries.count)
        for (k, v) in entries {
            let partnerKey = partner(k, v)
            let other = partnerKey.flatMap { byKey[TupleKey($0)] }
            let lastSeen = max(v.last_seen_ns, other?.last_seen_ns ?? 0)
            let flags = v.flags | (other?.flags ?? 0)
            let closing = flags & UInt8(NODENET_CT_F_CLOSING) != 0
            var established = flags & UInt8(NODENET_CT_F_ESTABLISHED) != 0
            if firstCollection && k.proto == 6 && !closing && !established {
                var marked = v
                marked.flags |= UInt8(NODENET_CT_F_ESTABLISHED)
                try? map.update(k, marked)
                established = true
            }
            let timeout =
                k.proto == 6
                ? (closing ? timeouts.tcpClosing : established ? timeouts.tcp : timeouts.tcpOpening) : timeouts.other
            guard now > lastSeen, now - lastSeen > nanoseconds(timeout) else {
                kept.append((k, v))
                continue
            }
            // Used since it was read? Then it stays.
            if let fresh = try map.lookup(k), fresh.last_seen_ns != v.last_seen_ns {
                kept.append((k, v))
                continue
            }
            if try map.delete(k) { removed += 1 } else { kept.append((k, v)) }
        }
        if let quotas { try recountQuotas(quotas, bpffsDirectory, kept: kept) }
        return Collection(scanned: entries.count, removed: removed)
    }

    /// Sets the counts of the quota map to the entries the flows hold now: the datapath only
    /// counts up (as flows open); what expired or was evicted is subtracted here. A flow is a
    /// nat-out (masquerade, NodePort to a remote backend) or service entry with its partner, the
    /// pod's when its source is a local pod, else the outside's and its client's (the source); an
    /// inbound entry (a connection from outside straight to a pod, keyed by the pod's reply) is
    /// the outside's and its client's (the reply's destination) alone.
    /// The stamp says when (the datapath enforces quotas only while it is recent).
    static func recountQuotas(
        _ quotas: BPFMap<UInt32, UInt32>, _ bpffsDirectory: String, kept: [(nodenet_tuple, nodenet_ct_entry)]
    ) throws {
        let layout = BPFFSLayout(directory: bpffsDirectory)
        let endpoints = try BPFMap<nodenet_endpoint_key, nodenet_endpoint>.pinned(at: layout.path(.endpoints))
        let pods = Set(try endpoints?.keys().map(\.ip) ?? [])
        let outside = UInt32(NODENET_CT_QUOTA_OUTSIDE)
        let clients = try BPFMap<UInt32, UInt32>.pinned(at: layout.path(.conntrackClients))
        var counts: [UInt32: UInt32] = [:]
        var clientCounts: [UInt32: UInt32] = [:]
        let stamp = UInt32(NODENET_CT_QUOTA_STAMP)
        for owner in try quotas.keys() where owner != stamp { counts[owner] = 0 }
        for client in try clients?.keys() ?? [] { clientCounts[client] = 0 }
        for (k, _) in kept {
            switch UInt32(k.kind) {
            case NODENET_CT_NAT_OUT.rawValue, NODENET_CT_SERVICE.rawValue:
                if pods.contains(k.saddr) {
                    counts[k.saddr, default: 0] += 2
                } else {
                    counts[outside, default: 0] += 2
                    clientCounts[k.saddr, default: 0] += 2
                }
            case NODENET_CT_INBOUND.rawValue:
                counts[outside, default: 0] += 1
                clientCounts[k.daddr, default: 0] += 1
            default: continue
            }
        }
        for (owner, count) in counts {
            if count == 0 { _ = try quotas.delete(owner) } else { try quotas.update(owner, count) }
        }
        if let clients {
            for (client, count) in clientCounts {
                // The LRU may have forgotten a client meanwhile: it counts afresh from here.
                if count == 0 { _ = try clients.delete(client) } else { try clients.update(client, count) }
            }
        }
        try quotas.update(stamp, UInt32(truncatingIfNeeded: BPFClock.nanoseconds() / 1_000_000_000))
    }

    /// A hashable copy of a tuple (the C struct is not Hashable).
    struct TupleKey: Hashable {
        var saddr, daddr: UInt32
        var sport, dport: UInt16
        var proto, kind: UInt8
        init(_ t: nodenet_tuple) {
            (saddr, daddr, sport, dport, proto, kind) = (t.saddr, t.daddr, t.sport, t.dport, t.proto, t.kind)
        }
    }
}
