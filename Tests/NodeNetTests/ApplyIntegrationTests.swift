import BPF
import CBPF
import CNodeNetBPF
import Foundation
import TestSupport
import Testing

@testable import NodeNet
@testable import NodeNetLab

/// `apply` against a real kernel, on a node that is a network namespace. Skipped without root.
@Suite(.serialized, .enabled(if: Privileges.runsNamespaceTests, Comment(rawValue: Privileges.skipReason)))
struct ApplyIntegrationTests {
    @Test func seedKernelStateRowByRow() async throws {
        try await TestNode.with(pods: 2) { t in
            let spec = t.spec()
            let report = try t.controller(spec).apply()
            #expect(report.verified, "\(report.mismatches)")
            let node = try NetlinkSocket(namespace: t.namespace)
            let links = Dictionary(uniqueKeysWithValues: try node.links().map { ($0.name, $0) })
            // Host pair: veth cilium_host <-> cilium_net, up, NOARP, MTU of eth0.
            let host = try #require(links["cilium_host"])
            let net = try #require(links["cilium_net"])
            #expect(
                host.kind == "veth" && net.kind == "veth" && host.peerIndex == net.index && net.peerIndex == host.index)
            #expect(host.isUp && net.isUp && host.isNoARP && net.isNoARP && host.mtu == 1500 && net.mtu == 1500)
            let hostAddresses = try node.addresses(family: .inet, interfaceIndex: host.index)
            #expect(hostAddresses.map { "\($0.prefix) \($0.scope)" } == ["10.0.2.184/32 link"])
            // Sysctls.
            #expect(try Sysctl.read("net.ipv4.ip_forward", in: t.namespace) == "1")
            let lxcs = spec.pods.map(NodeNetNames.endpointDevice(for:))
            for device in ["cilium_host", "cilium_net"] + lxcs {
                let values = try ["forwarding", "rp_filter", "accept_local", "send_redirects"].map {
                    try Sysctl.read("net/ipv4/conf/\(device)/\($0)", in: t.namespace)
                }
                // Kernel mode: strict reverse-path filter on each lxc (a pod sends only from its address).
                #expect(values == ["1", lxcs.contains(device) ? "1" : "0", "1", "0"], "\(device)")
            }
            for lxc in lxcs {
                #expect(
                    try Sysctl.read("net/ipv6/conf/\(lxc)/disable_ipv6", in: t.namespace) == "1", "no IPv6 on \(lxc)")
            }
            // Node routes, exactly the seed's (with nodenet's protocol).
            let names = Dictionary(uniqueKeysWithValues: links.values.map { ($0.index, $0.name) })
            let routes = Set(
                try node.routes(RouteFilter(protocol: NodeNetNames.routeProtocol)).map { $0.summary(names: names) })
            #expect(
                routes == [
                    "10.0.0.0/24 via 172.18.0.4 dev eth0", "10.0.1.0/24 via 172.18.0.3 dev eth0",
                    "10.0.2.0/24 via 10.0.2.184 dev cilium_host src 10.0.2.184",
                    "10.0.2.184/32 dev cilium_host scope link",
                    "10.0.2.32/32 dev \(lxcs[0]) scope link", "10.0.2.204/32 dev \(lxcs[1]) scope link",
                ])
            // Pod side: eth0 with the /32, the router on-link, the default via it with the MTU.
            let pod = try NetlinkSocket(namespace: .named(t.pods[0]))
            let eth0 = try #require(try pod.link(named: "eth0"))
            #expect(eth0.isUp && eth0.kind == "veth" && eth0.peerIndex == links[lxcs[0]]?.index)
            #expect(
                try pod.addresses(family: .inet, interfaceIndex: eth0.index).map { "\($0.prefix) \($0.scope)" } == [
                    "10.0.2.32/32 global"
                ])
            let podNames = [eth0.index: "eth0"]
            #expect(
                Set(try pod.routes(RouteFilter()).map { $0.summary(names: podNames) }) == [
                    "default via 10.0.2.184 dev eth0 mtu 1500", "10.0.2.184/32 dev eth0 scope link",
                ])
            #expect(links[lxcs[0]]?.isUp == true && NodeNetNames.isEndpointDevice(lxcs[0]))
            // Real packets: pod to pod on the node, and pod to another node's address.
            #expect(try t.ping(from: 0, "10.0.2.204"))
            #expect(try t.ping(from: 1, "10.0.2.32"))
            #expect(try t.ping(from: 0, "172.18.0.3"))
        }
    }

    @Test func reapplyMakesNoKernelWrites() async throws {
        try await TestNode.with(pods: 2) { t in
            let controller = try t.controller(t.spec())
            let started = ContinuousClock.now
            let first = try controller.apply()
            // Converged as of the verification's reading.
            #expect(!first.changes.isEmpty && first.verified)
            #expect(first.convergedAt.map { $0 > started + .nanoseconds(1) && $0 <= .now } == true)
            // What apply can write (it never touches IPv6 or neighbours, where the kernel's own
            // address checks and probes on the fresh devices would speak first).
            let groups: MulticastGroups = [.link, .ipv4Address, .ipv4Route, .ipv4Netconf]
            let nodeEvents = try NetlinkMonitor(namespace: t.namespace, groups: groups)
            let podEvents = try NetlinkMonitor(namespace: .named(t.pods[0]), groups: groups)
            // A link event that changes none of these is the kernel's link watcher reporting an
            // operational state late, not a write.
            @Sendable func shape(_ l: Link) -> String {
                "\(l.name) up=\(l.isUp) noarp=\(l.isNoARP) mtu=\(l.mtu ?? 0) mac=\(l.address.map { "\($0)" } ?? "-") master=\(l.masterIndex ?? 0)"
            }
            let quiet = try Set(
                [t.namespace, .named(t.pods[0])].flatMap { try NetlinkSocket(namespace: $0).links().map(shape) })
            let read = ContinuousClock.now
            let report = try controller.apply()
            #expect(report.changes.isEmpty && report.verified)
            // The reading that found nothing to do is when the node was last seen converged.
            #expect(report.convergedAt.map { $0 >= read && $0 <= .now } == true)
            #expect(try controller.plan().isEmpty)
            // A marker change proves the monitors work; nothing may come before it.
            try NetlinkSocket(namespace: t.namespace).add(
                Route(destination: IPPrefix("10.250.0.0/16"), interfaceIndex: 1, scope: .link))
            let pod = try NetlinkSocket(namespace: .named(t.pods[0]))
            try pod.add(
                Route(
                    destination: IPPrefix("10.250.0.0/16"), interfaceIndex: try pod.link(named: "eth0")!.index,
                    scope: .link))
            for monitor in [nodeEvents, podEvents] {
                let first = try await withTimeout(seconds: 20) { () -> String in
                    for await event in monitor {
                        if case .newRoute(let r) = event { return r.destination.description }
                        if case .newLink(let l) = event, quiet.contains(shape(l)) { continue }
                        return "\(event)"
                    }
                    return "end"
                }
                monitor.stop()
                #expect(first == "10.250.0.0/16", "the re-apply changed something: \(first)")
            }
        }
    }

    @Test func removingAPodAndANodeRemovesExactlyTheirObjects() async throws {
        try await TestNode.with(pods: 2) { t in
            let node = try NetlinkSocket(namespace: t.namespace)
            let eth0 = try node.link(named: "eth0")!.index
            // A foreign route in the same table: never touched.
            try node.add(
                Route(
                    destination: IPPrefix("10.123.0.0/16"), gateway: IPAddress("172.18.0.3"), interfaceIndex: eth0,
                    protocol: .static))
            let full = t.spec()
            _ = try t.controller(full).apply()
            let gone = NodeNetNames.endpointDevice(for: full.pods[1])
            let smaller = t.spec(podCount: 1, remote: [full.nodes[1]])
            let report = try t.controller(smaller).apply()
            #expect(report.verified)
            #expect(
                Set(report.changes.map(\.subject)) == [
                    "route 10.0.2.204/32", "route 10.0.0.0/24", "endpoint default/server",
                ])
            #expect(try node.link(named: gone) == nil)
            #expect(try NetlinkSocket(namespace: .named(t.pods[1])).link(named: "eth0") == nil)
            let routes = try node.routes(RouteFilter()).map(\.destination.description)
            #expect(!routes.contains("10.0.0.0/24") && !routes.contains("10.0.2.204/32"))
            #expect(
                routes.contains("10.0.1.0/24") && routes.contains("10.0.2.32/32") && routes.contains("10.123.0.0/16"))
            #expect(try t.ping(from: 0, "172.18.0.3"))
            // The ledger knows only what is left.
            #expect(try Ledger.load(from: t.stateDirectory)?.endpoints.map(\.pod) == ["default/net"])
            _ = try t.controller(smaller).teardown()
            #expect(
                try node.routes(RouteFilter()).contains {
                    $0.destination == IPPrefix("10.123.0.0/16") && $0.protocol == .static
                })
        }
    }

    @Test func aFailureMidwayRollsBackToTheExactPreviousState() async throws {
        try await TestNode.with(pods: 3) { t in
            _ = try t.controller(t.spec(podCount: 2)).apply()
            let ledgerBefore = try Ledger.load(from: t.stateDirectory)
            let before = try TestNode.snapshot(t.namespace)
            let podBefore = try TestNode.snapshot(.named(t.pods[2]))
            // A third pod and a node whose address is not on eth0's subnet: the kernel refuses
            // that direct route, after the pod was already wired up.
            var bad = t.spec(podCount: 3)
            bad.nodes.append(
                RemoteNode(name: "faraway", address: IPAddress("192.168.77.7"), podCIDR: IPPrefix("10.0.9.0/24")))
            let failure = #expect(throws: ApplyFailure.self) { try t.controller(bad).apply() }
            #expect(failure?.change.subject == "route 10.0.9.0/24")
            let text = "\(failure?.error as Any)"
            #expect(text.contains("Nexthop has invalid gateway"), "\(text)")
            #expect(failure?.rollback.complete == true)
            #expect(try TestNode.snapshot(t.namespace) == before)
            let podAfter = try TestNode.snapshot(.named(t.pods[2]))
            #expect(podAfter == podBefore, "\(podAfter.difference(from: podBefore))")
            #expect(try Ledger.load(from: t.stateDirectory) == ledgerBefore)
        }
    }

    @Test func teardownLeavesTheNodeAsBeforeTheFirstApply() async throws {
        try await TestNode.with(pods: 2) { t in
            let before = try TestNode.snapshot(t.namespace)
            let controller = try t.controller(t.spec())
            _ = try controller.apply()
            #expect(try TestNode.snapshot(t.namespace) != before)
            let report = try controller.teardown()
            #expect(report.endpoints == 2 && report.hostPair && report.ledgerRemoved)
            #expect(report.sysctlsRestored == ["net.ipv4.ip_forward=0"])
            #expect(try TestNode.snapshot(t.namespace) == before)
            #expect(try controller.teardown().nothingToDo)
            #expect(try NodeController.teardown(namespace: t.namespace, stateDirectory: t.stateDirectory).nothingToDo)
        }
    }

    @Test func worksOnTheCurrentNamespaceOfAThreadInsideTheNode() async throws {
        try await TestNode.with(pods: 1) { t in
            let spec = t.spec()
            // The same code path as on a real node (namespace .current), run on a thread that
            // is inside the test node, never in the test process's own namespace.
            let report = try NetworkNamespace.run(in: t.namespace) {
                try NodeController(spec: spec, namespace: .current).apply()
            }
            #expect(report.verified && !report.changes.isEmpty)
            #expect(try t.controller(spec).plan().isEmpty)
            #expect(try t.ping(from: 0, "10.0.2.184"))
        }
    }

    @Test func killedMidApplyTheNextApplyConverges() async throws {
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
            "nodenetd")
        try #require(
            FileManager.default.isExecutableFile(atPath: binary.path),
            "build nodenetd first (swift build --build-tests builds it)")
        try await TestNode.with(pods: 60) { t in
            let remote = (0..<1000).map { i in
                RemoteNode(
                    name: "n\(i)", address: IPAddress(ipv4: 0xAC12_1000 + UInt32(i)),
                    podCIDR: IPPrefix(IPAddress(ipv4: 0x0B00_0000 + UInt32(i) << 8), length: 24)!)
            }
            let spec = t.spec(remote: remote)
            let file = FileManager.default.temporaryDirectory.appendingPathComponent(TestNames.unique("spec") + ".json")
            defer { try? FileManager.default.removeItem(at: file) }
            try spec.jsonData().write(to: file)
            let process = Process()
            process.executableURL = binary
            process.arguments = ["apply", file.path, "--netns", t.node]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            // Kill it while it works: once the ledger says "in progress".
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline, (try? Ledger.load(from: t.stateDirectory))??.complete != false, process.isRunning {
                usleep(200)
            }
            usleep(3_000)
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            let report = try t.controller(spec).apply()
            #expect(report.verified, "\(report.mismatches.prefix(5))")
            #expect(try t.controller(spec).plan().isEmpty)
            let lxcs = try NetlinkSocket(namespace: t.namespace).links().filter {
                NodeNetNames.isEndpointDevice($0.name)
            }
            #expect(lxcs.count == 60)
            #expect(try Ledger.load(from: t.stateDirectory)?.complete == true)
        }
    }
}

/// Runs `body`, failing after `seconds` (tests are bounded).
func withTimeout<T: Sendable>(seconds: Double, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
            throw CancellationError()
        }
        let first = try await group.next()!
        group.cancelAll()
        return first
    }
}

/// `datapath.mode: bpf` through apply: programs attached, endpoint entries, no forwarding in
/// the node's IP stack, idempotent re-apply, switching back to kernel mode, teardown.
@Suite(
    .serialized,
    .enabled(if: Privileges.runsBPFTests, Comment(rawValue: Privileges.skipReason + " and to load BPF programs")))
struct BPFModeApplyTests {
    func bpfSpec(_ t: TestNode, attach: AttachMode = .clsact) -> NodeSpec {
        var spec = t.spec()
        spec.datapath = DatapathSettings(mode: .bpf, attachMode: attach)
        spec.bpffsDirectory = "/sys/fs/bpf/\(TestNames.unique("bpf"))"
        return spec
    }

    /// BIG TCP: `auto` leaves a node whose native device is at 64 KiB alone, and `on` refuses it.
    /// With the native device at 192 KiB (its administrator's setting; a veth takes 512 KiB),
    /// `auto` gives nodenet's four devices 192 KiB and a pod's TCP stream then crosses its lxc in
    /// packets above 64 KiB, through the BPF datapath. Off: back to 64 KiB on the same devices,
    /// and the stream's packets with it; the native device keeps its own throughout.
    @Test func bigTCPCarriesAPodsStreamInLargerPackets() async throws {
        try await TestNode.with(pods: 2) { t in
            var spec = bpfSpec(t)
            defer { BPFFS.remove(spec.bpffsDirectory) }
            let node = try NetlinkSocket(namespace: t.namespace)
            guard let before = try node.link(named: "eth0"), before.gsoIPv4MaxSize != nil,
                (before.tsoMaxSize ?? 0) >= 196_608
            else {
                try Test.cancel("this kernel or its veth driver has no BIG TCP for IPv4 (6.3+)")
            }
            #expect(try t.controller(spec).desiredState().ipv4SegmentSize == 65_536, "auto, the uplink at 64 KiB")
            spec.ipv4BigTCP = .on
            let refused = try t.controller(spec).plan()
            #expect(
                refused.unavailable.contains { $0.contains("ipv4BigTCP is on, but native device eth0") }
                    && !refused.changes.isEmpty, "the rest of the node is still planned: \(refused.unavailable)")
            spec.ipv4BigTCP = .auto
            // The node's administrator turns BIG TCP on for the uplink (the test node's own eth0).
            try node.setLink(named: "eth0", LinkChange(ipv4MaxSegmentSize: 196_608))
            let native = try #require(try node.link(named: "eth0"))
            let lxc = NodeNetNames.endpointDevice(for: spec.pods[0])
            func sizes() throws -> [String] {
                let pod = try NetlinkSocket(namespace: .named(t.pods[0]))
                return try ["cilium_host", "cilium_net", lxc, "eth0"].map { name in
                    let l = try #require(try node.link(named: name))
                    return "\(name) \(l.gsoIPv4MaxSize ?? 0)/\(l.groIPv4MaxSize ?? 0)"
                } + [try #require(try pod.link(named: "eth0")).gsoIPv4MaxSize.map { "pod eth0 \($0)" } ?? "?"]
            }
            /// The average size of the packets a 40 MB stream from pod 0 to pod 1 brought into
            /// pod 0's lxc.
            func streamPacketSize() throws -> UInt64 {
                let before = try #require(try node.link(named: lxc)?.statistics)
                let server = """
                    import socket
                    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("10.0.2.204", 5201)); s.listen(1); s.settimeout(20)
                    c, _ = s.accept(); n = 0
                    while True:
                        b = c.recv(1 << 20)
                        if not b: break
                        n += len(b)
                    print(n)
                    """
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
                p.arguments = ["netns", "exec", t.pods[1], "python3", "-c", server]
                let out = Pipe()
                p.standardOutput = out
                try p.run()
                defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
                let client = """
                    import socket, time
                    for i in range(100):
                        try:
                            s = socket.create_connection(("10.0.2.204", 5201), timeout=5); break
                        except OSError: time.sleep(0.05)
                    data = b"x" * (1 << 20)
                    for _ in range(40): s.sendall(data)
                    s.close()
                    """
                let sent = try runTool(["ip", "netns", "exec", t.pods[0], "python3", "-c", client])
                try #require(sent.status == 0, "\(sent.output)")
                p.waitUntilExit()
                let received = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                #expect(received.trimmingCharacters(in: .whitespacesAndNewlines) == "\(40 << 20)", "\(received)")
                let after = try #require(try node.link(named: lxc)?.statistics)
                return (after.rxBytes - before.rxBytes) / max(after.rxPackets - before.rxPackets, 1)
            }
            _ = try t.controller(spec).apply()
            #expect(
                try sizes() == [
                    "cilium_host 196608/196608", "cilium_net 196608/196608", "\(lxc) 196608/196608",
                    "eth0 \(native.gsoIPv4MaxSize!)/\(native.groIPv4MaxSize!)", "pod eth0 196608",
                ])
            let big = try streamPacketSize()
            #expect(big > 65_536, "the stream's packets averaged \(big) bytes")
            spec.ipv4BigTCP = .off
            let off = try t.controller(spec).apply()
            // The host pair and both endpoints (each its lxc and the pod's eth0).
            #expect(off.verified && off.changes.filter { $0.subject.hasPrefix("link") }.count == 6, "\(off.changes)")
            #expect(
                try sizes() == [
                    "cilium_host 65536/65536", "cilium_net 65536/65536", "\(lxc) 65536/65536",
                    "eth0 \(native.gsoIPv4MaxSize!)/\(native.groIPv4MaxSize!)", "pod eth0 65536",
                ])
            let small = try streamPacketSize()
            #expect(small <= 65_536 + 100, "the stream's packets averaged \(small) bytes")
        }
    }

    @Test func bpfModeAttachesProgramsAndKeepsPodTrafficOutOfTheIPStack() async throws {
        try await TestNode.with(pods: 2) { t in
            let spec = bpfSpec(t)
            defer { BPFFS.remove(spec.bpffsDirectory) }
            let report = try t.controller(spec).apply()
            #expect(report.verified, "\(report.mismatches)")
            #expect(
                report.changes.filter { $0.kind == .datapath }.count == 5,
                "2 map entries, 2 from-container, 1 from-netdev")
            let node = try NetlinkSocket(namespace: t.namespace)
            for pod in spec.pods {
                let lxc = try #require(try node.link(named: NodeNetNames.endpointDevice(for: pod)))
                let names = try node.filters(interfaceIndex: lxc.index, direction: .ingress).compactMap { $0.bpf?.name }
                #expect(names == [DatapathProgram.fromContainer.filterName])
            }
            let eth0 = try #require(try node.link(named: "eth0"))
            #expect(
                try node.filters(interfaceIndex: eth0.index, direction: .ingress).compactMap { $0.bpf?.name } == [
                    DatapathProgram.fromNetdev.filterName
                ])
            let shown = try runTool(["tc", "-n", t.node, "filter", "show", "dev", "eth0", "ingress"])
            #expect(shown.output.contains("nodenet-from-netdev"), "visible to standard tools")
            #expect(FileManager.default.fileExists(atPath: "\(spec.bpffsDirectory)/nodenet_endpoints"))

            let forwarded = try LabProbe.forwardedDatagrams(in: t.namespace)
            #expect(try t.ping(from: 0, "10.0.2.204"))
            #expect(try LabProbe.forwardedDatagrams(in: t.namespace) == forwarded)
            #expect(try t.controller(spec).apply().changes.isEmpty, "re-apply changes nothing")

            // Back to kernel mode: our programs come off; traffic goes through the stack again.
            var kernel = spec
            kernel.datapath = DatapathSettings(mode: .kernel)
            let back = try t.controller(kernel).apply()
            #expect(back.changes.filter { $0.action == .delete && $0.kind == .datapath }.count == 3)
            #expect(try node.filters(interfaceIndex: eth0.index, direction: .ingress).isEmpty)
            #expect(try t.ping(from: 0, "10.0.2.204"))
            #expect(try LabProbe.forwardedDatagrams(in: t.namespace) > forwarded)

            // BPF again, then teardown removes the native device's program and the pins.
            _ = try t.controller(spec).apply()
            let teardown = try t.controller(spec).teardown()
            #expect(teardown.programs == 1 && teardown.pinsRemoved)
            #expect(try node.filters(interfaceIndex: eth0.index, direction: .ingress).isEmpty)
            #expect(!FileManager.default.fileExists(atPath: spec.bpffsDirectory))
        }
    }

    @Test func forwardingSurvivesTheProcessAndPinnedEntriesAreReused() async throws {
        try await TestNode.with(pods: 2) { t in
            let spec = bpfSpec(t)
            defer { BPFFS.remove(spec.bpffsDirectory) }
            // Apply in a child thread's scope: the controller and every BPF object are gone after it.
            do { _ = try t.controller(spec).apply() }
            let forwarded = try LabProbe.forwardedDatagrams(in: t.namespace)
            #expect(try t.ping(from: 1, "10.0.2.32"), "attached programs and pinned maps keep forwarding")
            #expect(try LabProbe.forwardedDatagrams(in: t.namespace) == forwarded)
            // A new controller reads the pinned entries back and finds nothing to do.
            #expect(try t.controller(spec).plan().isEmpty)
        }
    }
}

extension BPFModeApplyTests {
    @Test func theMonitorSeesVerdictsWithAddressesAndDropReasons() async throws {
        try await TestNode.with(pods: 2) { t in
            let spec = bpfSpec(t)
            defer { BPFFS.remove(spec.bpffsDirectory) }
            _ = try t.controller(spec).apply()
            let names = Dictionary(
                try NetlinkSocket(namespace: t.namespace).links().map { ($0.index, $0.name) },
                uniquingKeysWith: { a, _ in a })
            var monitor: DatapathMonitor? = try DatapathMonitor(bpffsDirectory: spec.bpffsDirectory)
            #expect(try t.ping(from: 0, "10.0.2.204"))
            let pod = try NetlinkSocket(namespace: .named(t.pods[0]))
            try pod.add(
                InterfaceAddress(interfaceIndex: try pod.link(named: "eth0")!.index, prefix: IPPrefix("10.0.2.99/32")))
            // Nobody polls during the pings: renew as a polling monitor would (the lease is 2 s).
            try monitor!.renew()
            _ = try runTool([
                "ip", "netns", "exec", t.pods[0], "ping", "-c", "1", "-W", "1", "-I", "10.0.2.99", "10.0.2.204",
            ])
            var events: [DatapathEvent] = []
            for _ in 0..<10 { events += try monitor!.poll(milliseconds: 50, names: names) }
            let lxc0 = NodeNetNames.endpointDevice(for: spec.pods[0])
            let lxc1 = NodeNetNames.endpointDevice(for: spec.pods[1])
            #expect(
                events.contains {
                    $0.verdict == "local-redirect" && $0.source == "10.0.2.32" && $0.destination == "10.0.2.204"
                        && $0.device == lxc0 && $0.targetDevice == lxc1 && $0.protocol == "ICMP"
                })
            #expect(
                events.contains {
                    $0.verdict == "local-redirect" && $0.source == "10.0.2.204" && $0.destination == "10.0.2.32"
                })
            let drop = events.first { $0.verdict == "drop" }
            #expect(drop?.source == "10.0.2.99" && drop?.dropReason == "source address is not the pod's own (spoofed)")
            #expect(
                drop?.description
                    == "DROP (source address is not the pod's own (spoofed)) on \(lxc0): 10.0.2.99 -> 10.0.2.204 ICMP")
            // Closed monitor: the lease is given up and traffic emits nothing (emitting costs
            // one array lookup when nobody listens).
            monitor = nil
            let lease = try #require(
                try BPFMap<UInt32, nodenet_monitor_lease>.pinned(at: "\(spec.bpffsDirectory)/nodenet_monitor"))
            #expect(try lease.lookup(0)?.deadline_ns == 0)
            #expect(try t.ping(from: 0, "10.0.2.204"))
            let later = try DatapathMonitor(bpffsDirectory: spec.bpffsDirectory)
            #expect(try later.poll(milliseconds: 100, names: names).isEmpty, "nothing was queued while nobody listened")
        }
    }
}

extension BPFModeApplyTests {
    @Test(.enabled(if: TCXLink.isSupported, "tcx needs kernel 6.6 or later"))
    func tcxLinksCarryTheSameDatapathAndModesSwitchCleanly() async throws {
        try await TestNode.with(pods: 2) { t in
            let tcx = bpfSpec(t, attach: .tcx)
            defer { BPFFS.remove(tcx.bpffsDirectory) }
            let report = try t.controller(tcx).apply()
            #expect(report.verified, "\(report.mismatches)")
            let node = try NetlinkSocket(namespace: t.namespace)
            let eth0 = try #require(try node.link(named: "eth0"))
            let links = try FileManager.default.contentsOfDirectory(atPath: tcx.bpffsDirectory + "/links").sorted()
            #expect(links.count == 3, "\(links)")
            #expect(links.contains { $0.hasPrefix("from-netdev@eth0@\(eth0.index)@") })
            #expect(try node.filters(interfaceIndex: eth0.index, direction: .ingress).isEmpty, "tcx, not cls_bpf")
            let forwarded = try LabProbe.forwardedDatagrams(in: t.namespace)
            #expect(try t.ping(from: 0, "10.0.2.204"))
            #expect(try LabProbe.forwardedDatagrams(in: t.namespace) == forwarded, "tcx programs redirect too")
            #expect(try t.controller(tcx).apply().changes.isEmpty)

            // A link left by an older build (another digest in its pin name) gets this build's
            // program in place (bpf_link_update), and its pin follows.
            let dir = tcx.bpffsDirectory + "/links"
            let current = try #require(links.first { $0.hasPrefix("from-netdev@") })
            let older = current.split(separator: "@").dropLast().joined(separator: "@") + "@0badc0de"
            try BPFPin.move(from: "\(dir)/\(current)", to: "\(dir)/\(older)")
            let upgrade = try t.controller(tcx).apply()
            #expect(
                upgrade.changes.map(\.subject) == ["from-netdev on eth0"] && upgrade.changes.first?.action == .update)
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == links)
            let afterUpgrade = try LabProbe.forwardedDatagrams(in: t.namespace)
            #expect(try t.ping(from: 0, "10.0.2.204"))
            #expect(try LabProbe.forwardedDatagrams(in: t.namespace) == afterUpgrade)

            // tcx -> clsact: links unpinned (programs detached), filters attached.
            let clsact = bpfSpec(t, attach: .clsact)
            var other = clsact
            other.bpffsDirectory = tcx.bpffsDirectory
            #expect(try t.controller(other).apply().verified)
            #expect(
                ((try? FileManager.default.contentsOfDirectory(atPath: tcx.bpffsDirectory + "/links")) ?? []).isEmpty)
            #expect(
                try node.filters(interfaceIndex: eth0.index, direction: .ingress).compactMap { $0.bpf?.name } == [
                    DatapathProgram.fromNetdev.filterName
                ])
            #expect(try t.ping(from: 0, "10.0.2.204"))
            // ... and back: filters removed, links pinned again.
            #expect(try t.controller(tcx).apply().verified)
            #expect(try node.filters(interfaceIndex: eth0.index, direction: .ingress).isEmpty)
            #expect(try FileManager.default.contentsOfDirectory(atPath: tcx.bpffsDirectory + "/links").count == 3)
            let before = try LabProbe.forwardedDatagrams(in: t.namespace)
            #expect(try t.ping(from: 1, "10.0.2.32"))
            #expect(try LabProbe.forwardedDatagrams(in: t.namespace) == before)
            // tcx -> auto: the native device keeps its link, the pods' devices get filters
            // instead (their links go), and traffic still passes the routing stack by.
            var auto = bpfSpec(t, attach: .auto)
            auto.bpffsDirectory = tcx.bpffsDirectory
            let netdevLink = try FileManager.default.contentsOfDirectory(atPath: dir).filter {
                $0.hasPrefix("from-netdev@")
            }
            let netdevLinkID = try netdevLink.map { try BPFLink.info(pinnedAt: "\(dir)/\($0)").id }
            let switched = try t.controller(auto).apply()
            #expect(switched.verified, "\(switched.mismatches)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == netdevLink)
            #expect(
                try netdevLink.map { try BPFLink.info(pinnedAt: "\(dir)/\($0)").id } == netdevLinkID,
                "the native device keeps the very same link")

            #expect(try node.filters(interfaceIndex: eth0.index, direction: .ingress).isEmpty)
            for pod in auto.pods {
                let lxc = try #require(try node.link(named: NodeNetNames.endpointDevice(for: pod)))
                #expect(
                    try node.filters(interfaceIndex: lxc.index, direction: .ingress).compactMap { $0.bpf?.name } == [
                        DatapathProgram.fromContainer.filterName
                    ])
            }
            #expect(try t.controller(auto).apply().changes.isEmpty)
            let onAuto = try LabProbe.forwardedDatagrams(in: t.namespace)
            #expect(try t.ping(from: 0, "10.0.2.204"))
            #expect(try LabProbe.forwardedDatagrams(in: t.namespace) == onAuto)
            // Teardown unpins everything: no program stays attached.
            let down = try t.controller(tcx).teardown()
            #expect(down.pinsRemoved && !FileManager.default.fileExists(atPath: tcx.bpffsDirectory))
        }
    }
}

extension BPFModeApplyTests {
    /// An upgrade whose endpoints map has another layout: the incompatible pinned map is set
    /// aside, this build's maps are created and filled, every program is replaced, and only
    /// then is the old map dropped. Traffic keeps flowing.
    @Test(arguments: [AttachMode.clsact, .tcx])
    func anIncompatiblePinnedMapIsReplacedAfterTheNewProgramsAreAttached(_ attach: AttachMode) async throws {
        try skipWithoutTCX(attach)
        try await TestNode.with(pods: 2) { t in
            let spec = bpfSpec(t, attach: attach)
            defer { BPFFS.remove(spec.bpffsDirectory) }
            _ = try t.controller(spec).apply()
            // Put a map of another layout (value 8 bytes) where the endpoints map is pinned.
            let path = "\(spec.bpffsDirectory)/nodenet_endpoints"
            try pinMapOfAnotherLayout(
                at: path, type: BPF_MAP_TYPE_HASH, name: "nodenet_endpoi", keySize: 4, valueSize: 8, maxEntries: 128)
            let plan = try t.controller(spec).plan()
            #expect(plan.changes.first { $0.kind == .datapath }?.subject == "pinned maps nodenet_endpoints")
            #expect(
                plan.changes.last { $0.kind == .datapath }?.subject == "pinned maps set aside", "the old map goes last")
            let report = try t.controller(spec).apply()
            #expect(report.verified, "\(report.mismatches)")
            #expect(try BPFMapShape.pinned(at: path)?.valueSize == UInt32(MemoryLayout<nodenet_endpoint>.size))
            #expect(!FileManager.default.fileExists(atPath: path + "_old"))
            let forwarded = try LabProbe.forwardedDatagrams(in: t.namespace)
            #expect(try t.ping(from: 0, "10.0.2.204"))
            #expect(
                try LabProbe.forwardedDatagrams(in: t.namespace) == forwarded,
                "the new programs use the new, filled map")
            #expect(try t.controller(spec).plan().isEmpty)
        }
    }
}

extension BPFModeApplyTests {
    /// A monitor that is killed cannot give the lease up: emitting must stop by itself once
    /// the deadline it last wrote has passed, and a live monitor keeps renewing it.
    @Test func aKilledMonitorsLeaseExpiresAndEventsStop() async throws {
        try await TestNode.with(pods: 2) { t in
            let spec = bpfSpec(t)
            defer { BPFFS.remove(spec.bpffsDirectory) }
            _ = try t.controller(spec).apply()
            let lease = try #require(
                try BPFMap<UInt32, nodenet_monitor_lease>.pinned(at: "\(spec.bpffsDirectory)/nodenet_monitor"))
            // A live monitor renews while it polls: after 1.5 s of polling the deadline has moved
            // past the first lease by more than one renew period (judged against the start, so a
            // stalled test thread cannot fail it).
            do {
                let start = BPFClock.nanoseconds()
                let monitor = try DatapathMonitor(bpffsDirectory: spec.bpffsDirectory)
                while BPFClock.nanoseconds() < start + 1_500_000_000 { _ = try monitor.poll(milliseconds: 100) }
                let deadline = try #require(try lease.lookup(0)).deadline_ns
                #expect(
                    deadline > start + DatapathMonitor.leaseNanoseconds + DatapathMonitor.renewNanoseconds,
                    "renewed while polling")
            }
            #expect(try lease.lookup(0)?.deadline_ns == 0, "given up on close")
            // What a monitor killed right after renewing leaves behind: a deadline one lease ahead.
            try lease.update(
                0, nodenet_monitor_lease(deadline_ns: BPFClock.nanoseconds() + DatapathMonitor.leaseNanoseconds))
            let fd = try BPFRingBuffer.pinnedFD(at: "\(spec.bpffsDirectory)/nodenet_events")
            defer { close(fd) }
            let records = Counter()
            let ring = try BPFRingBuffer(mapFD: fd) { _ in records.value += 1 }
            #expect(try t.ping(from: 0, "10.0.2.204"))
            try ring.poll(milliseconds: 100)
            #expect(records.value > 0, "events while the lease holds")
            // Past the deadline, with nobody renewing: no more records.
            while BPFClock.nanoseconds() < (try lease.lookup(0)?.deadline_ns ?? 0) + 50_000_000 { usleep(50_000) }
            while try ring.poll(milliseconds: 50) > 0 {}
            records.value = 0
            #expect(try t.ping(from: 0, "10.0.2.204"))
            #expect(try t.ping(from: 1, "10.0.2.32"))
            try ring.poll(milliseconds: 200)
            #expect(records.value == 0, "the expired lease stops emitting")
        }
    }
}

final class Counter: @unchecked Sendable { var value = 0 }

extension BPFModeApplyTests {
    /// A pin is not proof of an attachment: a tcx link running another program is given this
    /// build's program again, and a detached link is replaced by a fresh one.
    @Test(.enabled(if: TCXLink.isSupported, "tcx needs kernel 6.6 or later"))
    func tcxLinksAreJudgedByTheirLinkInfoNotTheirPinName() async throws {
        try await TestNode.with(pods: 2) { t in
            let spec = bpfSpec(t, attach: .tcx)
            defer { BPFFS.remove(spec.bpffsDirectory) }
            #expect(try t.controller(spec).apply().verified)
            let dir = spec.bpffs.tcxLinkDirectory
            let pins = try FileManager.default.contentsOfDirectory(atPath: dir)
            let netdevPin = try #require(pins.first { $0.hasPrefix("from-netdev@eth0@") })
            let lxc0 = NodeNetNames.endpointDevice(for: spec.pods[0])
            let lxcPin = try #require(pins.first { $0.hasPrefix("from-container@\(lxc0)@") })
            let info = try BPFLink.info(pinnedAt: "\(dir)/\(netdevPin)")
            let eth0 = try #require(try NetlinkSocket(namespace: t.namespace).link(named: "eth0"))
            #expect(
                info.isTCX && info.ifindex == eth0.index.unsigned && info.attachType == BPFLinkInfo.attachTCXIngress)
            #expect(try BPFProgramInfo(id: info.programID).name == "nodenet_from_ne")
            #expect(try t.controller(spec).plan().isEmpty, "this build's programs, where the pins say: converged")
            #expect(DatapathProgram.buildTags.count == 2, "tags compared too, not only names")
            #expect(
                DatapathProgram.buildTags[.fromNetdev] == (try BPFProgramInfo(id: info.programID).tag),
                "the tag is stable across loads")

            // Someone swaps the program under our link; the pin name still looks right.
            let stranger = try BPFObject(embedded: "bpf_lxc")
            try stranger.load()
            try BPFLink.replaceProgram(
                pinnedAt: "\(dir)/\(netdevPin)", with: try stranger.programFD(named: "nodenet_from_container"))
            let swapped = try t.controller(spec).plan()
            #expect(swapped.changes.map(\.subject) == ["from-netdev on eth0"], "\(swapped.changes)")
            #expect(
                swapped.changes.first?.found?.contains("runs program nodenet_from_co") == true,
                "\(swapped.changes.first?.found as Any)")
            // Someone detaches the pod's link: it still has its pin, but holds nothing.
            let link = bpf_obj_get("\(dir)/\(lxcPin)")
            try #require(link >= 0)
            #expect(bpf_link_detach(link) == 0)
            close(link)
            #expect(try BPFLink.info(pinnedAt: "\(dir)/\(lxcPin)").isDetached)
            let plan = try t.controller(spec).plan()
            #expect(
                plan.changes.map(\.subject) == [
                    "tcx link \(lxcPin)", "from-container on \(lxc0)", "from-netdev on eth0",
                ], "\(plan.changes)")

            let report = try t.controller(spec).apply()
            #expect(report.verified, "\(report.mismatches)")
            #expect(
                try BPFProgramInfo(id: try BPFLink.info(pinnedAt: "\(dir)/\(netdevPin)").programID).name
                    == "nodenet_from_ne")
            #expect(try !BPFLink.info(pinnedAt: "\(dir)/\(lxcPin)").isDetached)
            #expect(try t.controller(spec).plan().isEmpty)
            let forwarded = try LabProbe.forwardedDatagrams(in: t.namespace)
            #expect(try t.ping(from: 0, "10.0.2.204"))
            #expect(try LabProbe.forwardedDatagrams(in: t.namespace) == forwarded, "both links redirect again")
        }
    }
}

extension BPFModeApplyTests {
    /// Teardown removes nodenet's own pins only: a directory shared with others (say
    /// /sys/fs/bpf/tc/globals) keeps their pins, and stays.
    @Test func teardownRemovesOnlyOurPinsFromASharedDirectory() async throws {
        try await TestNode.with(pods: 2) { t in
            let spec = bpfSpec(t, attach: TCXLink.isSupported ? .tcx : .clsact)
            defer { BPFFS.remove(spec.bpffsDirectory) }
            try BPFFS.prepare(spec.bpffs.tcxLinkDirectory)
            // Someone else's pins: a map in the directory, a subdirectory, a file among the links.
            let foreign = try BPFObject(embedded: "bpf_netdev", pinRoot: nil)
            try foreign.load()
            let verdicts = try foreign.map(named: "nodenet_verdicts", key: UInt32.self, value: UInt64.self)
            try BPFFS.prepare(spec.bpffsDirectory + "/tc")
            for path in ["cilium_calls_hostns", "tc/globals_map", "links/someone-elses-link"] {
                #expect(bpf_obj_pin(verdicts.fd, "\(spec.bpffsDirectory)/\(path)") == 0, "\(path)")
            }
            #expect(try t.controller(spec).apply().verified)
            let report = try t.controller(spec).teardown()
            #expect(report.pinsRemoved)
            let left = try FileManager.default.subpathsOfDirectory(atPath: spec.bpffsDirectory).sorted()
            #expect(
                left == ["cilium_calls_hostns", "links", "links/someone-elses-link", "tc", "tc/globals_map"], "\(left)")
            #expect(try t.controller(spec).teardown().nothingToDo)
        }
    }

    /// The spec's bpffsDirectory changes between applies: the programs move to the new
    /// directory's maps, and the former directory's pins (maps and links) are removed, which
    /// the ledger remembers until they are gone.
    @Test(arguments: [AttachMode.clsact, .tcx])
    func aChangedBPFFSDirectoryLeavesNoOrphanedPins(_ attach: AttachMode) async throws {
        try skipWithoutTCX(attach)
        try await TestNode.with(pods: 2) { t in
            let first = bpfSpec(t, attach: attach)
            var second = first
            second.bpffsDirectory = "/sys/fs/bpf/\(TestNames.unique("bpf2"))"
            defer {
                BPFFS.remove(first.bpffsDirectory)
                BPFFS.remove(second.bpffsDirectory)
            }
            #expect(try t.controller(first).apply().verified)
            let node = try NetlinkSocket(namespace: t.namespace)
            let eth0 = try #require(try node.link(named: "eth0"))
            func netdevProgram() throws -> UInt32? {
                if attach == .clsact {
                    return try node.filters(interfaceIndex: eth0.index, direction: .ingress).first?.bpf?.programID
                }
                let dir = second.bpffs.tcxLinkDirectory
                let pin = try FileManager.default.contentsOfDirectory(atPath: dir).first {
                    $0.hasPrefix("from-netdev@")
                }
                return try pin.map { try BPFLink.info(pinnedAt: "\(dir)/\($0)").programID }
            }
            let before = attach == .clsact ? try netdevProgram() : nil

            let report = try t.controller(second).apply()
            #expect(report.verified, "\(report.mismatches)")
            #expect(
                report.changes.last { $0.kind == .datapath }?.subject
                    == "pins in former bpffs directory \(first.bpffsDirectory)")
            #expect(!FileManager.default.fileExists(atPath: first.bpffsDirectory), "the former directory is gone")
            #expect(FileManager.default.fileExists(atPath: "\(second.bpffsDirectory)/nodenet_endpoints"))
            #expect(
                try netdevProgram() != nil && netdevProgram() != before,
                "the program was replaced: it uses the new maps")
            if attach == .tcx {
                let eth0Links = try FileManager.default.contentsOfDirectory(atPath: second.bpffs.tcxLinkDirectory)
                    .filter { $0.hasPrefix("from-netdev@") }
                #expect(eth0Links.count == 1)
            }
            let ledger = try #require(try Ledger.load(from: t.stateDirectory))
            #expect(ledger.bpffsDirectory == second.bpffsDirectory && ledger.formerBPFFSDirectories == nil)
            let forwarded = try LabProbe.forwardedDatagrams(in: t.namespace)
            #expect(try t.ping(from: 0, "10.0.2.204"))
            #expect(try LabProbe.forwardedDatagrams(in: t.namespace) == forwarded)
            #expect(try t.controller(second).plan().isEmpty)

            // Teardown with a spec naming yet another directory still cleans the ledger's.
            var third = second
            third.bpffsDirectory = "/sys/fs/bpf/\(TestNames.unique("bpf3"))"
            #expect(try t.controller(third).teardown().pinsRemoved)
            #expect(!FileManager.default.fileExists(atPath: second.bpffsDirectory))
        }
    }
}

extension BPFModeApplyTests {
    /// The programs attached to each device now: cls_bpf filter program ids, or tcx link program ids.
    func attachedPrograms(_ t: TestNode, _ spec: NodeSpec) throws -> [String: UInt32] {
        let node = try NetlinkSocket(namespace: t.namespace)
        var result: [String: UInt32] = [:]
        let modes = spec.effectiveAttachModes
        if modes.usesTCX {
            for pin in try FileManager.default.contentsOfDirectory(atPath: spec.bpffs.tcxLinkDirectory) {
                result[String(pin.split(separator: "@")[1])] = try BPFLink.info(
                    pinnedAt: "\(spec.bpffs.tcxLinkDirectory)/\(pin)"
                ).programID
            }
        }
        let clsact =
            (modes.endpoints == .clsact ? spec.pods.map(NodeNetNames.endpointDevice(for:)) : [])
            + (modes.nativeDevice == .clsact ? ["eth0"] : [])
        for device in clsact {
            let link = try #require(try node.link(named: device))
            result[device] = try node.filters(interfaceIndex: link.index, direction: .ingress).first?.bpf?.programID
        }
        return result
    }

    /// An upgrade that replaces every program (the monitor map's old 4-byte layout is
    /// migrated) fails later in the same apply: rollback gives every device its previous
    /// program, puts the set-aside map back, and leaves the live endpoints map's entries alone.
    @Test(arguments: [AttachMode.clsact, .tcx])
    func aFailedUpgradeRollsBackToThePreviousPrograms(_ attach: AttachMode) async throws {
        try skipWithoutTCX(attach)
        try await TestNode.with(pods: 2) { t in
            let spec = bpfSpec(t, attach: attach)
            defer { BPFFS.remove(spec.bpffsDirectory) }
            _ = try t.controller(spec).apply()
            // The monitor flag as an older build pinned it: a 4-byte value.
            let path = "\(spec.bpffsDirectory)/nodenet_monitor"
            try pinMapOfAnotherLayout(
                at: path, type: BPF_MAP_TYPE_ARRAY, name: "nodenet_monito", keySize: 4, valueSize: 4, maxEntries: 1)
            let before = try attachedPrograms(t, spec)
            #expect(before.count == 3)

            var bad = spec
            bad.nodes.append(
                RemoteNode(name: "faraway", address: IPAddress("192.168.77.7"), podCIDR: IPPrefix("10.0.9.0/24")))
            let failure = #expect(throws: ApplyFailure.self) { try t.controller(bad).apply() }
            #expect(failure?.change.subject == "route 10.0.9.0/24")
            #expect(failure?.rollback.complete == true, "\(failure?.rollback as Any)")
            #expect(try attachedPrograms(t, spec) == before, "every device runs its previous program again")
            #expect(try BPFMapShape.pinned(at: path)?.valueSize == 4, "the set-aside map is back")
            #expect(!FileManager.default.fileExists(atPath: path + "_old"))
            #expect(
                try DatapathObjects.pinnedEntries(spec.bpffs).count == 2, "the live endpoints map keeps its entries")
            let forwarded = try LabProbe.forwardedDatagrams(in: t.namespace)
            #expect(try t.ping(from: 0, "10.0.2.204"))
            #expect(
                try LabProbe.forwardedDatagrams(in: t.namespace) == forwarded, "the previous programs still redirect")

            // The good spec migrates the monitor map; the monitor works on the new layout.
            let report = try t.controller(spec).apply()
            #expect(report.verified, "\(report.mismatches)")
            #expect(try BPFMapShape.pinned(at: path)?.valueSize == UInt32(MemoryLayout<nodenet_monitor_lease>.size))
            #expect(try attachedPrograms(t, spec).allSatisfy { before[$0.key] != $0.value })
            _ = try DatapathMonitor(bpffsDirectory: spec.bpffsDirectory)
        }
    }

    /// The clsact qdisc an apply added to the native device goes again when it rolls back
    /// (one that was there before stays).
    @Test func aRolledBackApplyRemovesTheClsactItAdded() async throws {
        try await TestNode.with(pods: 1) { t in
            var bad = bpfSpec(t, attach: .clsact)
            defer { BPFFS.remove(bad.bpffsDirectory) }
            bad.nodes.append(
                RemoteNode(name: "faraway", address: IPAddress("192.168.77.7"), podCIDR: IPPrefix("10.0.9.0/24")))
            let node = try NetlinkSocket(namespace: t.namespace)
            let eth0 = try #require(try node.link(named: "eth0"))
            let before = try TestNode.snapshot(t.namespace)
            let failure = #expect(throws: ApplyFailure.self) { try t.controller(bad).apply() }
            #expect(failure?.rollback.complete == true, "\(failure?.rollback as Any)")
            #expect(try node.qdiscs(interfaceIndex: eth0.index).filter(\.isClsact).isEmpty, "no clsact left on eth0")
            #expect(try TestNode.snapshot(t.namespace) == before)
            // A clsact that was there before the apply is not ours to remove.
            try node.addClsact(interfaceIndex: eth0.index)
            #expect(throws: ApplyFailure.self) { try t.controller(bad).apply() }
            #expect(try node.qdiscs(interfaceIndex: eth0.index).filter(\.isClsact).count == 1)
        }
    }
}

/// A tcx case on a kernel without tcx is reported as skipped (cancelled, with the reason), never
/// as passed.
func skipWithoutTCX(_ attach: AttachMode) throws {
    if attach == .tcx && !TCXLink.isSupported {
        try Test.cancel(
            "tcx needs kernel 6.6 or later; this kernel has \(KernelRelease.version.map { "\($0.major).\($0.minor)" } ?? "an unknown version")"
        )
    }
}
