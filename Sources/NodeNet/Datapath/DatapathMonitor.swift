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

    init(_ e: nodenet_event, names: [Int32: String]) {
        timestampNanoseconds = e.timestamp_ns
        ifindex = e.ifindex
        device = names[Int32(e.ifindex)]
        switch UInt32(e.verdict) {
        case NODENET_VERDICT_LOCAL_REDIRECT.rawValue: verdict = "local-redirect"
        case NODENET_VERDICT_REMOTE_REDIRECT.rawValue: verdict = "remote-redirect"
        case NODENET_VERDICT_TO_STACK.rawValue: verdict = "to-stack"
        case NODENET_VERDICT_ARP_REPLY.rawValue: verdict = "arp-reply"
        case NODENET_VERDICT_DROP_SPOOFED.rawValue:
            verdict = "drop"
            dropReason = "source address is not the pod's own (spoofed)"
        default: verdict = "verdict \(e.verdict)"
        }
        let isARP = UInt32(e.verdict) == NODENET_VERDICT_ARP_REPLY.rawValue
        self.protocol = isARP ? "ARP" : [1: "ICMP", 6: "TCP", 17: "UDP"][e.protocol] ?? "proto \(e.protocol)"
        let sport = UInt16(bigEndian: e.sport), dport = UInt16(bigEndian: e.dport)
        let hasPorts = e.protocol == 6 || e.protocol == 17
        source = isARP ? "-" : IPAddress(ipv4: UInt32(bigEndian: e.saddr)).description + (hasPorts ? ":\(sport)" : "")
        destination = isARP ? "-" : IPAddress(ipv4: UInt32(bigEndian: e.daddr)).description + (hasPorts ? ":\(dport)" : "")
        if e.target_ifindex != 0 {
            targetIfindex = e.target_ifindex
            targetDevice = names[Int32(e.target_ifindex)]
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
/// while a monitor is open (it switches the node's `nodenet_monitor` flag on, and off again
/// when it is closed).
public final class DatapathMonitor: @unchecked Sendable {
    private let ring: BPFRingBuffer
    private let flag: BPFMap<UInt32, UInt32>
    private let sink: EventSink
    private let ringFD: Int32

    final class EventSink: @unchecked Sendable {
        var events: [nodenet_event] = []
    }

    /// Opens the monitor of the node whose maps are pinned in `bpffsDirectory`.
    public init(bpffsDirectory: String) throws {
        guard let flag = try BPFMap<UInt32, UInt32>.pinned(at: "\(bpffsDirectory)/nodenet_monitor") else {
            throw NodeNetError.missing("no BPF datapath pinned in \(bpffsDirectory) (is datapath.mode bpf applied?)")
        }
        let sink = EventSink()
        let fd = try BPFRingBuffer.pinnedFD(at: "\(bpffsDirectory)/nodenet_events")
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
        self.flag = flag
        self.sink = sink
        try flag.update(0, 1)
    }

    deinit {
        try? flag.update(0, 0)
        close(ringFD)
    }

    /// Waits up to `milliseconds` and returns the events that arrived, with device names
    /// from `names` (ifindex → name in the node's namespace).
    public func poll(milliseconds: Int32, names: [Int32: String] = [:]) throws -> [DatapathEvent] {
        try ring.poll(milliseconds: milliseconds)
        defer { sink.events.removeAll() }
        return sink.events.map { DatapathEvent($0, names: names) }
    }
}
