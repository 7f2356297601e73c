import BPF
import CNodeNetBPF
import Foundation

/// One datapath verdict, as `nodenetd monitor` prints it.
public struct DatapathEvent: Sendable, Codable, Equatable, CustomStringConvertible {
    public var timestampNanoseconds: UInt64
    public var ifindex: UInt32
    public var device: String?
    /// `local-redirect`, `remote-redirect`, `to-stack`, `arp-reply` or `drop`.
    public var verdict: String
    /// Why a packet was dropped.
    public var dropReason: String?
    /// `TCP`, `UDP`, `ICMP`, a protocol number, or `ARP`.
    public var `protocol`: String
    public var source: String
    public var destination: String
    public var targetIfindex: UInt32?
    public var targetDevice: String?

    init(_ e: nodenet_event, names: [InterfaceIndex: String]) {
        timestampNanoseconds = e.timestamp_ns
        ifindex = e.ifindex
        device = names[InterfaceIndex(Int32(bitPattern: e.ifindex))]
        switch UInt32(e.verdict) {
        case NODENET_VERDICT_LOCAL_REDIRECT.rawValue: verdict = "local-redirect"
        case NODENET_VERDICT_REMOTE_REDIRECT.rawValue: verdict = "remote-redirect"
        case NODENET_VERDICT_TO_STACK.rawValue: verdict = "to-stack"
        case NODENET_VERDICT_ARP_REPLY.rawValue: verdict = "arp-reply"
        case NODENET_VERDICT_DROP_SPOOFED.rawValue:
            verdict = "drop"
            dropReason = "source address is not the pod's own (spoofed)"
        case NODENET_VERDICT_DROP_NO_BACKEND.rawValue:
            verdict = "drop"
            dropReason = "service has no backend (answered with a TCP reset or ICMP port unreachable)"
        case NODENET_VERDICT_DROP_NAT_EXHAUSTED.rawValue:
            verdict = "drop"
            dropReason = "no free port to translate the source to"
        case NODENET_VERDICT_DROP_NO_FLOW.rawValue:
            verdict = "drop"
            dropReason = "reply to a translated address whose flow is gone (conntrack entry expired)"
        case NODENET_VERDICT_DROP_NO_LOCAL_BACKEND.rawValue:
            verdict = "drop"
            dropReason = "service has a Local traffic policy and no backend on this node"
        case NODENET_VERDICT_DROP_SOURCE_RANGE.rawValue:
            verdict = "drop"
            dropReason = "client is outside the LoadBalancer's loadBalancerSourceRanges"
        case NODENET_VERDICT_DROP_NO_MAPPING.rawValue:
            verdict = "drop"
            dropReason = "TCP segment leaving the cluster with no masquerade mapping (only a SYN opens one)"
        case NODENET_VERDICT_DROP_QUOTA.rawValue:
            verdict = "drop"
            dropReason =
                "the flows this pod opened (from outside: all flows opened from outside) hold their share of the connection-tracking table: no new flow"
        default: verdict = "verdict \(e.verdict)"
        }
        let isARP = UInt32(e.verdict) == NODENET_VERDICT_ARP_REPLY.rawValue
        self.protocol = isARP ? "ARP" : [1: "ICMP", 6: "TCP", 17: "UDP"][e.protocol] ?? "proto \(e.protocol)"
        let sport = UInt16(bigEndian: e.sport)
        let dport = UInt16(bigEndian: e.dport)
        let hasPorts = e.protocol == 6 || e.protocol == 17
        source = isARP ? "-" : IPAddress(ipv4: UInt32(bigEndian: e.saddr)).description + (hasPorts ? ":\(sport)" : "")
        destination =
            isARP ? "-" : IPAddress(ipv4: UInt32(bigEndian: e.daddr)).description + (hasPorts ? ":\(dport)" : "")
        if e.target_ifindex != 0 {
            targetIfindex = e.target_ifindex
            targetDevice = names[InterfaceIndex(Int32(bitPattern: e.target_ifindex))]
        }
    }

    public var description: String {
        var s = verdict.uppercased()
        if let dropReason { s += " (\(dropReason))" }
        s += " on \(device ?? "ifindex \(ifindex)"): \(source) -> \(destination) \(self.protocol)"
        if let targetIfindex, verdict != "arp-reply" { s += " => \(targetDevice ?? "ifindex \(targetIfindex)")" }
        return s
    }
}

/// Datapath events of one node, read from its pinned ring buffer. Events are emitted only
/// while a monitor holds the node's lease (`nodenet_monitor`, bpf/lib/maps.h): a deadline on
/// the kernel's monotonic clock that every poll moves forward and closing sets to 0. A monitor
/// that is killed stops renewing, so emitting stops at most one lease later.
public final class DatapathMonitor: @unchecked Sendable {
    private let ring: BPFRingBuffer
    private let lease: BPFMap<UInt32, nodenet_monitor_lease>
    private let sink: EventSink
    private let ringFD: Int32
    /// The deadline this monitor last wrote (to give up the lease only if it is still ours).
    private var deadline: UInt64 = 0
    private var renewedAt: UInt64 = 0

    /// How long a lease lasts and how often a polling monitor renews it (nanoseconds).
    public static let leaseNanoseconds = UInt64(NODENET_MONITOR_LEASE_NS)
    public static let renewNanoseconds = UInt64(NODENET_MONITOR_RENEW_NS)

    final class EventSink: @unchecked Sendable {
        var events: [nodenet_event] = []
    }

    /// Opens the monitor of the node whose maps are pinned in `bpffsDirectory` and takes the lease.
    public init(bpffsDirectory: String) throws {
        guard
            let lease = try BPFMap<UInt32, nodenet_monitor_lease>.pinned(
                at: BPFFSLayout(directory: bpffsDirectory).path(.monitor))
        else {
            throw NodeNetError.missing("no BPF datapath pinned in \(bpffsDirectory) (is datapath.mode bpf applied?)")
        }
        let sink = EventSink()
        let fd = try BPFRingBuffer.pinnedFD(at: BPFFSLayout(directory: bpffsDirectory).path(.events))
        do {
            ring = try BPFRingBuffer(mapFD: fd) { bytes in
                guard bytes.count >= MemoryLayout<nodenet_event>.size else { return }
                sink.events.append(bytes.withUnsafeBytes { $0.loadUnaligned(as: nodenet_event.self) })
            }
        } catch {
            close(fd)
            throw error
        }
        self.ringFD = fd
        self.lease = lease
        self.sink = sink
        try renew()
    }

    deinit {
        // Give the lease up, unless another monitor has renewed it since (it keeps it).
        if (try? lease.lookup(0))?.deadline_ns == deadline {
            try? lease.update(0, nodenet_monitor_lease(deadline_ns: 0))
        }
        close(ringFD)
    }

    /// Moves the lease's deadline to now + the lease duration (never backwards: another
    /// monitor of the same node may hold a later one).
    public func renew() throws {
        let now = BPFClock.nanoseconds()
        let current = (try lease.lookup(0))?.deadline_ns ?? 0
        deadline = max(now + Self.leaseNanoseconds, current)
        try lease.update(0, nodenet_monitor_lease(deadline_ns: deadline))
        renewedAt = now
    }

    /// Waits up to `milliseconds` and returns the events that arrived, with device names
    /// from `names` (ifindex → name in the node's namespace). Renews the lease while it waits.
    public func poll(milliseconds: Int32, names: [InterfaceIndex: String] = [:]) throws -> [DatapathEvent] {
        let end = BPFClock.nanoseconds() + UInt64(max(milliseconds, 0)) * 1_000_000
        repeat {
            let now = BPFClock.nanoseconds()
            if now >= renewedAt + Self.renewNanoseconds { try renew() }
            let slice = min(end > now ? (end - now) / 1_000_000 : 0, Self.renewNanoseconds / 1_000_000)
            if try ring.poll(milliseconds: Int32(slice)) > 0 { break }
        } while BPFClock.nanoseconds() < end
        defer { sink.events.removeAll() }
        return sink.events.map { DatapathEvent($0, names: names) }
    }
}
