import BPF
import CNodeNetBPF
import Foundation
import TestSupport
import Testing

@testable import NodeNet

/// Attacks from a pod, against a real kernel, in both datapath modes. Skipped without root.
@Suite(.serialized, .enabled(if: Privileges.runsNamespaceTests, Comment(rawValue: Privileges.skipReason)))
struct SecurityIntegrationTests {
    static func applied(
        _ t: TestNode, _ mode: DatapathMode, configure: (inout NodeSpec) -> Void = { _ in },
        _ body: (NodeSpec) throws -> Void
    ) throws {
        var spec = t.spec()
        configure(&spec)
        spec.datapath = DatapathSettings(mode: mode)
        spec.bpffsDirectory = "/sys/fs/bpf/\(TestNames.unique("sec"))"
        defer { BPFFS.remove(spec.bpffsDirectory) }
        let report = try t.controller(spec).apply()
        #expect(report.verified, "\(report.mismatches)")
        defer { _ = try? t.controller(spec).teardown() }
        try body(spec)
    }

    /// Before (kernel mode): pod `net` added another pod's address and pinged another node; the
    /// echo requests arrived there from that address.
    @Test(arguments: [DatapathMode.kernel, .bpf])
    func aPodCannotSendFromAnAddressNotItsOwn(_ mode: DatapathMode) async throws {
        try await TestNode.with(pods: 2) { t in
            try Self.applied(t, mode) { _ in
                let net = t.pods[0]
                // Another pod's address, and one nobody has.
                for spoofed in ["10.0.2.204", "10.0.2.99"] {
                    _ = try runTool(["ip", "netns", "exec", net, "ip", "addr", "add", "\(spoofed)/32", "dev", "eth0"])
                }
                let capture = try FrameCapture(namespace: .named(t.fabric), device: "eth0")
                for source in ["10.0.2.32", "10.0.2.204", "10.0.2.99"] {
                    _ = try runTool([
                        "ip", "netns", "exec", net, "ping", "-c", "2", "-i", "0.2", "-w", "2", "-I", source,
                        "172.18.0.3",
                    ])
                }
                let sources = Set(capture.drain().compactMap { CapturedIPv4($0)?.source })
                #expect(sources.contains("10.0.2.32"), "the pod's own address gets through (the capture works)")
                #expect(!sources.contains("10.0.2.204"), "\(mode): another pod's address never leaves the node")
                #expect(!sources.contains("10.0.2.99"), "\(mode): an address nobody has never leaves the node")
            }
        }
    }

    /// Before: a pod's router advertisement gave the node an IPv6 default route and address
    /// through the pod (accept_ra=1, IPv6 on, on every lxc).
    @Test(arguments: [DatapathMode.kernel, .bpf])
    func aPodsRouterAdvertisementDoesNotConfigureTheNode(_ mode: DatapathMode) async throws {
        try await TestNode.with(pods: 1) { t in
            try Self.applied(t, mode) { spec in
                let net = t.pods[0]
                // The pod's eth0 needs its link-local address before it can advertise.
                let deadline = Date().addingTimeInterval(5)
                while Date() < deadline {
                    let out = try runTool(["ip", "netns", "exec", net, "ip", "-6", "addr", "show", "dev", "eth0"])
                        .output
                    if out.contains("fe80::") && !out.contains("tentative") { break }
                    usleep(100_000)
                }
                let lxc = NodeNetNames.endpointDevice(for: spec.pods[0])
                let capture = try FrameCapture(namespace: t.namespace, device: lxc)
                let script = """
                    import socket, struct, time
                    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
                    index = socket.if_nametoindex("eth0")
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
                    ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
                    prefix = struct.pack("!BBBBIII16s", 3, 4, 64, 0xC0, 86400, 14400, 0,
                                         socket.inet_pton(socket.AF_INET6, "2001:db8:77::"))
                    for _ in range(3):
                        s.sendto(ra + prefix, ("ff02::1", 0, 0, index))
                        time.sleep(0.2)
                    """
                let sent = try runTool(["ip", "netns", "exec", net, "python3", "-c", script])
                #expect(sent.status == 0, "\(sent.output)")
                // The advertisement reached the node's device (ICMPv6 type 134).
                let ra = capture.next {
                    $0.count > 54 && $0[12] == 0x86 && $0[13] == 0xDD && $0[20] == 58 && $0[54] == 134
                }
                #expect(ra != nil, "the router advertisement arrived on \(lxc)")
                usleep(500_000)
                let routes = try runTool(["ip", "netns", "exec", t.node, "ip", "-6", "route", "show"]).output
                let addresses = try runTool(["ip", "netns", "exec", t.node, "ip", "-6", "addr", "show"]).output
                #expect(!routes.contains("default"), "\(mode): no IPv6 default route through the pod: \(routes)")
                #expect(!routes.contains("2001:db8:77") && !addresses.contains("2001:db8:77"), "\(mode): \(addresses)")
            }
        }
    }

    /// Before (BPF mode): an ARP request from a pod with a sender address not its own went on to
    /// the node's stack, which made a neighbour entry for every such sender (200 requests, 200
    /// entries on the lxc): enough of them fill the table (gc_thresh3) and the node can no longer
    /// resolve its gateway or the other nodes.
    @Test(arguments: [DatapathMode.kernel, .bpf])
    func anARPFloodWithForeignSendersDoesNotGrowTheNeighbourTable(_ mode: DatapathMode) async throws {
        try await TestNode.with(pods: 1) { t in
            try Self.applied(t, mode) { spec in
                let lxc = NodeNetNames.endpointDevice(for: spec.pods[0])
                let capture = try FrameCapture(namespace: t.namespace, device: lxc)
                // 200 requests for the router IP, each from another sender address (10.77.0.1-200).
                let script = """
                    import socket, struct
                    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
                    s.bind(("eth0", 0))
                    mac = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
                    router = socket.inet_aton("10.0.2.184")
                    for i in range(200):
                        spa = socket.inet_aton("10.77.0.%d" % (i + 1))
                        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, spa, bytes(6), router)
                        s.send(bytes([0xff] * 6) + mac + bytes([0x08, 0x06]) + arp)
                    """
                let sent = try runTool(["ip", "netns", "exec", t.pods[0], "python3", "-c", script])
                #expect(sent.status == 0, "\(sent.output)")
                let arp = capture.next { $0.count >= 42 && $0[12] == 0x08 && $0[13] == 0x06 && $0[28] == 10 }
                #expect(arp != nil, "the requests arrived on \(lxc)")
                usleep(300_000)
                let socket = try NetlinkSocket(namespace: t.namespace)
                let index = try #require(try socket.link(named: lxc)).index
                let foreign = try socket.neighbours(family: .inet, interfaceIndex: index).filter {
                    $0.address.description.hasPrefix("10.77.")
                }
                #expect(foreign.count == 0, "\(mode): neighbour entries for senders the pod does not own")
            }
        }
    }

    /// Before (BPF mode): a packet from outside with the source address of one of the node's
    /// pods, its router or the node itself was redirected to the pod it was sent to: a pod
    /// took it for its neighbour's, or the node's (kubelet's address, which policies trust).
    @Test func theOutsideCannotSendAsTheNodeOrItsPods() async throws {
        try await TestNode.with(pods: 2) { t in
            try Self.applied(t, .bpf) { _ in
                let capture = try FrameCapture(namespace: .named(t.pods[0]), device: "eth0")
                // ICMP echo requests to pod net (10.0.2.32) from the fabric, with forged sources.
                let script = """
                    import socket, struct
                    def checksum(b):
                        s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
                        s = (s >> 16) + (s & 0xffff); s += s >> 16
                        return ~s & 0xffff
                    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
                    for source in ["10.0.2.204", "10.0.2.184", "172.18.0.2", "172.18.0.3"]:
                        icmp = struct.pack("!BBHHH", 8, 0, 0, 7, 1) + b"spoof"
                        icmp = icmp[:2] + struct.pack("!H", checksum(icmp + b"\\0")) + icmp[4:]
                        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0,
                                         socket.inet_aton(source), socket.inet_aton("10.0.2.32"))
                        for _ in range(3):
                            s.sendto(ip + icmp, ("10.0.2.32", 0))
                    """
                let sent = try runTool(["ip", "netns", "exec", t.fabric, "python3", "-c", script])
                #expect(sent.status == 0, "\(sent.output)")
                let sources = Set(
                    capture.drain().compactMap { CapturedIPv4($0) }.filter { $0.destination == "10.0.2.32" }.map(
                        \.source))
                #expect(sources.contains("172.18.0.3"), "another node's address gets through (the capture works)")
                for forged in ["10.0.2.204", "10.0.2.184", "172.18.0.2"] {
                    #expect(!sources.contains(forged), "\(forged) from outside reached the pod")
                }
            }
        }
    }

    /// Before (BPF mode): any TCP segment made conntrack or NAT state. 300 ACKs from outside to a
    /// pod made 300 entries in the shared table (evicting live ones under pressure), and 300 ACKs
    /// from a pod to an outside address took 300 NAT ports and left masqueraded. Now only a SYN
    /// opens a flow; a segment with no mapping never leaves with the pod's address either.
    @Test func onlyWhatMayOpenAFlowMakesConntrackOrNATState() async throws {
        try await TestNode.with(pods: 1) { t in
            try Self.applied(t, .bpf) { spec in
                try Self.routeOutside(t)
                func entries(_ kind: String) throws -> [Conntrack.Entry] {
                    try Conntrack.list(bpffsDirectory: spec.bpffsDirectory).filter { $0.kind == kind }
                }
                func segments(
                    from namespace: String, _ source: String, to destination: String, flags: Int, count: Int
                )
                    throws
                {
                    let script = """
                        import socket, struct
                        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
                        for i in range(\(count)):
                            tcp = struct.pack("!HHIIBBHHH", 40000 + i, 80, 1, 1, 5 << 4, \(flags), 8192, 0, 0)
                            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0,
                                             socket.inet_aton("\(source)"), socket.inet_aton("\(destination)"))
                            s.sendto(ip + tcp, ("\(destination)", 0))
                        """
                    let sent = try runTool(["ip", "netns", "exec", namespace, "python3", "-c", script])
                    #expect(sent.status == 0, "\(sent.output)")
                }
                // From outside to the pod: ACKs make nothing, one SYN makes its entry.
                try segments(from: t.fabric, "198.51.100.9", to: "10.0.2.32", flags: 0x10, count: 300)
                #expect(try entries("inbound").count == 0, "ACKs from outside made inbound entries")
                try segments(from: t.fabric, "198.51.100.9", to: "10.0.2.32", flags: 0x02, count: 1)
                #expect(try entries("inbound").count == 1, "a SYN from outside opens its flow")
                // From the pod to the outside: ACKs take no NAT port and never leave, a SYN does.
                let capture = try FrameCapture(namespace: .named(t.fabric), device: "eth0")
                try segments(from: t.pods[0], "10.0.2.32", to: "198.51.100.7", flags: 0x10, count: 300)
                #expect(try entries("nat-out").count == 0, "ACKs from the pod took NAT ports")
                let leaked = capture.drain().compactMap { CapturedIPv4($0) }.filter { $0.destination == "198.51.100.7" }
                #expect(leaked.isEmpty, "\(leaked.count) ACKs left the node: \(leaked.prefix(2))")
                try segments(from: t.pods[0], "10.0.2.32", to: "198.51.100.7", flags: 0x02, count: 1)
                #expect(try entries("nat-out").count == 1, "a SYN from the pod is masqueraded")
                let out = capture.next { CapturedIPv4($0)?.destination == "198.51.100.7" }.flatMap { CapturedIPv4($0) }
                #expect(out?.source == "172.18.0.2", "the SYN left with the node's address: \(out as Any)")
            }
        }
    }

    /// Before (a345200, between two commits of 2026-12-06): a reset and then a SYN-ACK forged
    /// from outside as a pod's remote backend retired the translation of the pod's connection to
    /// a service (per-packet LB): the reset marked the flow's reverse entry, and the SYN-ACK then
    /// looked like the backend answering a direct connection on a closed flow's tuple. Now only
    /// the client's own end (its reset or FIN) lets a pair go so, and the pair stays.
    @Test func packetsForgedAsARemoteBackendCannotRetireAPodsServiceFlow() async throws {
        try await TestNode.with(pods: 1) { t in
            let service = ServiceSpec(
                name: "default/remote", type: .clusterIP, clusterIP: IPAddress("10.96.7.7"),
                ports: [ServicePort(port: 80)], backends: [ServiceBackend(ip: IPAddress("10.0.1.50"))])
            try Self.applied(t, .bpf, configure: { $0.services = [service] }) { spec in
                // The pod's SYN to the service from port 45000, translated per packet to
                // 10.0.1.50:80 (nobody answers it).
                let opened = try runTool([
                    "ip", "netns", "exec", t.pods[0], "python3", "-c",
                    """
                    import socket, time
                    s = socket.socket()
                    s.setblocking(False)
                    s.bind(("0.0.0.0", 45000))
                    try:
                        s.connect(("10.96.7.7", 80))
                    except BlockingIOError:
                        pass
                    time.sleep(0.2)
                    """,
                ])
                try #require(opened.status == 0, "\(opened.output)")
                func pair() throws -> [String] {
                    try Conntrack.list(bpffsDirectory: spec.bpffsDirectory).filter {
                        ($0.kind == "service" && $0.source == "10.0.2.32:45000")
                            || ($0.kind == "reply" && $0.destination == "10.0.2.32:45000")
                    }.map(\.kind).sorted()
                }
                let translated = try pair()
                try #require(translated == ["reply", "service"], "the pod's flow was translated: \(translated)")
                // From outside, as the backend: a reset, then (past any quiet time) a SYN-ACK.
                let forged = """
                    import socket, struct, time
                    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
                    for flags in (0x04, 0x12):
                        tcp = struct.pack("!HHIIBBHHH", 80, 45000, 7, 1, 5 << 4, flags, 8192, 0, 0)
                        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0,
                                         socket.inet_aton("10.0.1.50"), socket.inet_aton("10.0.2.32"))
                        s.sendto(ip + tcp, ("10.0.2.32", 0))
                        time.sleep(0.3)
                    """
                let sent = try runTool(["ip", "netns", "exec", t.fabric, "python3", "-c", forged])
                try #require(sent.status == 0, "\(sent.output)")
                #expect(try pair() == ["reply", "service"], "the forged packets retired the pod's translation")
            }
        }
    }

    /// The outside world (198.51.100.0/24) reached through the fabric, as the node sees it.
    static func routeOutside(_ t: TestNode) throws {
        let node = try NetlinkSocket(namespace: t.namespace)
        try node.add(
            Route(
                destination: IPPrefix("198.51.100.0/24"), gateway: IPAddress("172.18.0.3"),
                interfaceIndex: try #require(try node.link(named: "eth0")).index))
    }

    /// `count` raw IPv4 packets from `source` (UDP from port 5555 to 198.51.100.7:53 when
    /// `count` is 1, else to distinct destinations; `syn`: TCP SYNs from 198.51.100.9, distinct
    /// ports, to `source`'s pod 10.0.2.32).
    static func flood(from namespace: String, _ source: String, count: Int, syn: Bool = false) throws {
        let script = """
            import socket, struct
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            src = socket.inet_aton("\(source)")
            for i in range(\(count)):
                if \(syn ? "True" : "False"):
                    dst, body = "10.0.2.32", struct.pack("!HHIIBBHHH", 1024 + i % 60000, 1 + i // 60000, 1, 0, 5 << 4, 2, 8192, 0, 0)
                    proto = 6
                else:
                    if \(count) == 1:
                        dst, dport = "198.51.100.7", 53
                    else:
                        dst, dport = "198.51.100.%d" % (10 + i // 50000), 1 + i % 50000
                    body, proto = struct.pack("!HHHH", 5555, dport, 8, 0), 17
                ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64, proto, 0, src, socket.inet_aton(dst))
                s.sendto(ip + body, (dst, 0))
            """
        let sent = try runTool(["ip", "netns", "exec", namespace, "python3", "-c", script])
        try #require(sent.status == 0, "\(sent.output)")
    }

    /// The source port pod 10.0.2.204's datagram to 198.51.100.7:53 leaves the node with.
    static func masqueradedPort(_ t: TestNode) throws -> UInt16? {
        let capture = try FrameCapture(namespace: .named(t.fabric), device: "eth0")
        try flood(from: t.pods[1], "10.0.2.204", count: 1)
        return capture.next { CapturedIPv4($0)?.destination == "198.51.100.7" }.flatMap { CapturedIPv4($0)?.sourcePort }
    }

    /// Before (BPF mode): every pod's flows shared one LRU table with no limit per pod. A pod
    /// opening 200 000 UDP flows to the outside (400 000 entries; the table holds 262 144)
    /// pushed another pod's masqueraded flow out: its next datagram left from another port (a
    /// TCP connection would have been dropped). Now a pod's flows hold at most a quarter of the
    /// table: the rest of the flood is dropped (counted), the other pod's flow keeps its port.
    @Test func onePodCannotPushAnotherPodsFlowsOutOfTheTable() async throws {
        try await TestNode.with(pods: 2) { t in
            try Self.applied(t, .bpf) { spec in
                try Self.routeOutside(t)
                let first = try #require(try Self.masqueradedPort(t), "the other pod's datagram left masqueraded")
                // The agent's collection has run (quotas are enforced while its recounts come).
                try Conntrack.collect(bpffsDirectory: spec.bpffsDirectory)
                let verdicts = try #require(
                    try BPFMap<UInt32, UInt64>.pinned(at: spec.bpffs.path(.verdicts), perCPU: true))
                let dropped = try verdicts.sum(UInt32(NODENET_VERDICT_DROP_QUOTA.rawValue))
                try Self.flood(from: t.pods[0], "10.0.2.32", count: 200_000)
                let quota = Int(NODENET_CT_QUOTA)
                #expect(
                    try verdicts.sum(UInt32(NODENET_VERDICT_DROP_QUOTA.rawValue)) - dropped >= 150_000,
                    "the flood beyond the pod's quota (32 768 flows of 200 000) is dropped")
                #expect(try Self.masqueradedPort(t) == first, "the other pod's flow was pushed out of the table")
                // The agent's collection recounts: nothing expired yet, the count stays; an hour
                // on, every flow has, and the pod may open flows again.
                let quotas = try #require(
                    try BPFMap<UInt32, UInt32>.pinned(at: spec.bpffs.path(.conntrackQuota)))
                let pod = IPAddress("10.0.2.32").ipv4Value!.bigEndian
                #expect(try quotas.lookup(pod).map(Int.init) ?? 0 >= quota)
                try Conntrack.collect(bpffsDirectory: spec.bpffsDirectory)
                #expect(try quotas.lookup(pod).map(Int.init) ?? 0 >= quota, "recounted from the table")
                try Conntrack.collect(
                    bpffsDirectory: spec.bpffsDirectory, now: BPFClock.nanoseconds() + 3_600 * 1_000_000_000)
                #expect(try quotas.lookup(pod) == nil)
            }
        }
    }

    /// Before (BPF mode): 400 000 SYNs from outside straight to a pod (each a connection's
    /// inbound entry) pushed a pod's masqueraded flow out of the shared table. Now the flows
    /// opened from outside hold at most half of it together; the pod's flow keeps its port.
    /// (Without a limit per client: the flood stands for many hosts outside.)
    @Test func theOutsideCannotPushThePodsFlowsOutOfTheTable() async throws {
        try await TestNode.with(pods: 2) { t in
            try Self.applied(t, .bpf) { spec in
                try Self.routeOutside(t)
                let first = try #require(try Self.masqueradedPort(t), "the pod's datagram left masqueraded")
                try Conntrack.collect(bpffsDirectory: spec.bpffsDirectory)
                try Self.flood(from: t.fabric, "198.51.100.9", count: 400_000, syn: true)
                let quotas = try #require(
                    try BPFMap<UInt32, UInt32>.pinned(at: spec.bpffs.path(.conntrackQuota)))
                #expect(try Self.masqueradedPort(t) == first, "the pod's flow was pushed out of the table")
                let outside = try quotas.lookup(UInt32(NODENET_CT_QUOTA_OUTSIDE)).map(Int.init) ?? 0
                let cap = Int(NODENET_CT_QUOTA_OUTSIDE_MAX)
                #expect(outside >= cap && outside <= cap + 4, "\(outside) entries opened from outside")
            }
        }
    }

    /// Before (BPF mode): the flows opened from outside shared one count: 140 000 SYNs from one
    /// host outside (198.51.100.9) to a pod filled the outside's half of the table, and a SYN
    /// from another host (198.51.100.10) was dropped. Now each client outside holds at most its
    /// own part (`conntrack.outsideClientEntries`, here 16 384 entries): the flood stops there
    /// and the other host's flow opens.
    @Test func oneHostOutsideCannotCrowdOutTheOthers() async throws {
        try await TestNode.with(pods: 1) { t in
            try Self.applied(t, .bpf, configure: { $0.conntrack.outsideClientEntries = 16_384 }) { spec in
                try Self.routeOutside(t)
                try Conntrack.collect(bpffsDirectory: spec.bpffsDirectory)  // quotas are enforced from here
                try Self.flood(from: t.fabric, "198.51.100.9", count: 140_000, syn: true)
                try Self.flood(from: t.fabric, "198.51.100.10", count: 1, syn: true)
                let inbound = try Conntrack.list(bpffsDirectory: spec.bpffsDirectory).filter { $0.kind == "inbound" }
                let other = inbound.filter { $0.destination.hasPrefix("198.51.100.10:") }
                #expect(other.count == 1, "the other host's SYN opened its flow (\(inbound.count) inbound entries)")
                let limit = 16_384
                #expect(inbound.count >= limit && inbound.count <= limit + 8, "\(inbound.count) inbound entries")
                let clients = try #require(
                    try BPFMap<UInt32, UInt32>.pinned(at: spec.bpffs.path(.conntrackClients)))
                let heavy = IPAddress("198.51.100.9").ipv4Value!.bigEndian
                let counted = try clients.lookup(heavy).map(Int.init) ?? 0
                #expect(counted >= limit && counted <= limit + 4, "\(counted) entries counted for 198.51.100.9")
                // The agent's collection recounts each client from the table (what is left of it: the
                // pod's resets close the flows, and closed flows expire after 10 s); an hour on,
                // nothing is left.
                try Conntrack.collect(bpffsDirectory: spec.bpffsDirectory)
                let left = try Conntrack.list(bpffsDirectory: spec.bpffsDirectory).filter {
                    $0.kind == "inbound" && $0.destination.hasPrefix("198.51.100.9:")
                }
                #expect(try clients.lookup(heavy).map(Int.init) ?? 0 == left.count, "recounted from the table")
                try Conntrack.collect(
                    bpffsDirectory: spec.bpffsDirectory, now: BPFClock.nanoseconds() + 3_600 * 1_000_000_000)
                #expect(try clients.lookup(heavy) == nil)
            }
        }
    }

    /// Before: the state directory was used wherever it was and whoever owned it: another user
    /// could plant it (and its ledger) or swap it for a link to their own. Now each of these is
    /// refused with a sentence, and the node's own directory ends up 0700.
    @Test func aStateDirectoryAnotherUserCouldControlIsRefused() async throws {
        try await TestNode.with(pods: 1) { t in
            let base = FileManager.default.temporaryDirectory.appendingPathComponent(TestNames.unique("sd")).path
            try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: base) }
            func refusal(_ stateDirectory: String) -> String? {
                var spec = t.spec()
                spec.stateDirectory = stateDirectory
                do {
                    _ = try t.controller(spec).apply()
                    return nil
                } catch { return "\(error)" }
            }
            // Planted by another user (uid 65534).
            let planted = base + "/planted"
            try FileManager.default.createDirectory(atPath: planted, withIntermediateDirectories: false)
            chown(planted, 65534, 65534)
            #expect(refusal(planted)?.contains("is owned by uid 65534, not root") == true, "\(refusal(planted) as Any)")
            // A symbolic link to a directory of theirs.
            let link = base + "/link"
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: planted)
            #expect(refusal(link)?.contains("is a symbolic link") == true, "\(refusal(link) as Any)")
            // Below a directory anyone may write to (not sticky): they could swap ours.
            let open = base + "/open"
            try FileManager.default.createDirectory(atPath: open, withIntermediateDirectories: false)
            chmod(open, 0o777)
            #expect(refusal(open + "/state")?.contains("is writable by others") == true)
            // Ours, made 0700 (also one an older nodenet created 0755).
            let mine = base + "/mine"
            try FileManager.default.createDirectory(atPath: mine, withIntermediateDirectories: false)
            chmod(mine, 0o755)
            #expect(refusal(mine) == nil)
            let mode = try FileManager.default.attributesOfItem(atPath: mine)[.posixPermissions] as? Int
            #expect(mode == 0o700)
            var spec = t.spec()
            spec.stateDirectory = mine
            _ = try t.controller(spec).teardown()
        }
    }

    /// Before: bpffs directories were used whoever owned them, and removal followed a link
    /// planted on the way (bpffs mounted without a mode is world-writable): `remove` under a
    /// link to another directory deleted that directory's contents.
    @Test func bpffsPathsAnotherUserCouldControlAreRefused() throws {
        let victim = FileManager.default.temporaryDirectory.appendingPathComponent(TestNames.unique("victim")).path
        try FileManager.default.createDirectory(atPath: victim + "/keep", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: victim) }
        let link = "\(BPFFS.root)/\(TestNames.unique("link"))"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: victim)
        defer { unlink(link) }
        lchown(link, 65534, 65534)  // planted by another user
        BPFFS.remove(link + "/keep")
        #expect(FileManager.default.fileExists(atPath: victim + "/keep"), "removal does not follow a planted link")
        #expect(throws: (any Error).self) { try BPFFS.prepare(link + "/node") }
        // A directory another user made first.
        let planted = "\(BPFFS.root)/\(TestNames.unique("planted"))"
        try FileManager.default.createDirectory(atPath: planted, withIntermediateDirectories: false)
        defer {
            chown(planted, 0, 0)
            BPFFS.remove(planted)
        }
        chown(planted, 65534, 65534)
        let error = #expect(throws: (any Error).self) { try BPFFS.prepare(planted) }
        #expect("\(error as Any)".contains("owned by uid 65534"), "\(error as Any)")
        chown(planted, 0, 0)
        try BPFFS.prepare(planted + "/mine")
        let mode = try FileManager.default.attributesOfItem(atPath: planted + "/mine")[.posixPermissions] as? Int
        #expect(mode == 0o700)
    }
}
