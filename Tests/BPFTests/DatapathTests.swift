import BPF
import CNodeNetBPF
import Foundation
import NodeNet
import NodeNetLab
import TestSupport
import Testing

/// The from-container program, built into the binary by the BPFBuild plugin, against a real
/// kernel. Skipped without the privileges to load BPF and create namespaces.
@Suite(
    .serialized,
    .enabled(if: Privileges.runsBPFTests, Comment(rawValue: Privileges.skipReason + " and to load BPF programs")))
struct DatapathTests {
    static func mac(_ m: MACAddress) -> (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) {
        let b = m.bytes
        return (b[0], b[1], b[2], b[3], b[4], b[5])
    }

    static func key(_ ip: IPAddress) -> nodenet_endpoint_key { nodenet_endpoint_key(ip: ip.ipv4Value!.bigEndian) }

    /// An Ethernet frame of an ICMP echo request (IP header checksum left 0) from `source` to
    /// 10.0.2.204, the second test pod, whose header claims `ihl` 32-bit words.
    static func echo(
        to destination: MACAddress, from sender: MACAddress, ihl: UInt8 = 5, source: [UInt8] = [10, 0, 2, 32]
    )
        -> [UInt8]
    {
        var f = destination.bytes + sender.bytes + [0x08, 0x00]
        f += [0x40 | ihl, 0, 0, 40, 0, 1, 0, 0, 64, 1, 0, 0] + source + [10, 0, 2, 204]
        f += [8, 0, 0xf7, 0xff] + [UInt8](repeating: 0, count: 16)  // ICMP echo, checksum of zeros
        return f
    }

    /// Loaded without a pin root: nothing is pinned anywhere.
    static func loaded() throws -> BPFObject {
        let object = try BPFObject(embedded: "bpf_lxc")
        try object.load()
        return object
    }

    /// The backends array, mapped: what a store writes is what the kernel (and a program)
    /// reads, a mapping for reading sees it and refuses to write, and an index beyond the
    /// array is refused with the array's size.
    @Test func theBackendsArrayIsWrittenInPlace() throws {
        let object = try Self.loaded()
        let map = try object.map(named: "nodenet_backends", key: UInt32.self, value: nodenet_backend.self)
        let array = try BPFMappedArray<nodenet_backend>(fd: map.fd, name: "nodenet_backends")
        #expect(array.count == Int(NODENET_BACKENDS_MAX))
        let backend = nodenet_backend(address: 0x0A00_010F, port: UInt16(8080).bigEndian, proto: 6, flags: 0)
        try array.store(backend, at: 5)
        let kernel = try #require(try map.lookup(5))
        #expect(kernel.address == 0x0A00_010F && kernel.port == UInt16(8080).bigEndian && kernel.proto == 6)
        #expect(try map.lookup(4)?.proto == 0, "an entry never written is zeros")
        let reader = try BPFMappedArray<nodenet_backend>(fd: map.fd, name: "nodenet_backends", writable: false)
        #expect(reader[5].address == 0x0A00_010F)
        let refused = #expect(throws: BPFError.self) { try reader.store(nodenet_backend(), at: 5) }
        #expect(refused?.errno == EPERM)
        let beyond = #expect(throws: BPFError.self) { try array.store(backend, at: UInt32(array.count)) }
        #expect("\(beyond.map { "\($0)" } ?? "")".contains("it has \(array.count) entries"))
        try array.store(nodenet_backend(), at: 5)
        #expect(try map.lookup(5)?.proto == 0, "zeroed in place")
    }

    @Test func theEmbeddedObjectLoadsAndItsMapsWork() throws {
        let object = try Self.loaded()
        #expect(try object.programFD(named: "nodenet_from_container") > 0)
        let endpoints = try object.map(
            named: "nodenet_endpoints", key: nodenet_endpoint_key.self, value: nodenet_endpoint.self)
        let entry = nodenet_endpoint(
            ifindex: 7, host_mac: Self.mac(MACAddress("02:00:00:00:00:07")!),
            pod_mac: Self.mac(MACAddress("02:00:00:00:01:07")!), flags: 0)
        try endpoints.update(Self.key(IPAddress("10.0.2.32")), entry)
        let back = try #require(try endpoints.lookup(Self.key(IPAddress("10.0.2.32"))))
        #expect(back.ifindex == 7 && back.pod_mac.5 == 7 && back.host_mac.0 == 2)
        #expect(try endpoints.keys().map { UInt32(bigEndian: $0.ip) } == [IPAddress("10.0.2.32").ipv4Value!])
        #expect(try endpoints.delete(Self.key(IPAddress("10.0.2.32"))))
        #expect(try endpoints.lookup(Self.key(IPAddress("10.0.2.32"))) == nil)
        #expect(throws: BPFError.self) {
            try object.map(named: "nodenet_endpoints", key: UInt64.self, value: nodenet_endpoint.self)
        }
        #expect(
            !FileManager.default.fileExists(atPath: "/sys/fs/bpf/nodenet_endpoints"),
            "nothing pinned outside our directories")
    }

    /// A hash map past its size refuses new keys with E2BIG, which strerror words as "Argument
    /// list too long": the error says the map is full and its size instead, one update or a batch.
    @Test func aFullMapSaysSo() throws {
        let object = try BPFObject(embedded: "bpf_lxc")
        try #require(try object.setMaxEntries(4, ofMap: "nodenet_endpoints"))
        try object.load()
        let endpoints = try object.map(
            named: "nodenet_endpoints", key: nodenet_endpoint_key.self, value: nodenet_endpoint.self)
        let keys = (1...5).map { Self.key(IPAddress(ipv4: 0x0A00_0000 + UInt32($0))) }
        let entry = nodenet_endpoint()
        for key in keys.prefix(4) { try endpoints.update(key, entry) }
        try endpoints.update(keys[0], entry)  // a key it holds: replaced
        let one = #expect(throws: BPFError.self) { try endpoints.update(keys[4], entry) }
        #expect(
            one?.errno == E2BIG && one?.description.contains("the map is full (it holds at most 4 entries)") == true)
        try endpoints.delete(keys[0])
        let batch = #expect(throws: BPFError.self) {
            try endpoints.update(keys: [keys[0], keys[4]], values: [entry, entry])  // (3 held)
        }
        #expect(batch?.description.contains("the map is full (it holds at most 4 entries)") == true, "\(batch!)")
    }

    @Test func pinnedMapsAreSharedBetweenObjectsAndSurviveThem() throws {
        let root = "/sys/fs/bpf/\(TestNames.unique("pins"))"
        try BPFFS.prepare(root)  // mounts bpffs when it is not (a fresh machine)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let key = Self.key(IPAddress("10.0.2.204"))
        do {
            let lxc = try BPFObject(embedded: "bpf_lxc", pinRoot: root)
            try lxc.load()
            try lxc.map(named: "nodenet_endpoints", key: nodenet_endpoint_key.self, value: nodenet_endpoint.self)
                .update(
                    key,
                    nodenet_endpoint(
                        ifindex: 9, host_mac: Self.mac(MACAddress("02:00:00:00:00:09")!),
                        pod_mac: Self.mac(MACAddress("02:00:00:00:01:09")!), flags: 0))
        }
        // The first object is gone; a second object (the other program) reuses the pin.
        let netdev = try BPFObject(embedded: "bpf_netdev", pinRoot: root)
        try netdev.load()
        let shared = try netdev.map(
            named: "nodenet_endpoints", key: nodenet_endpoint_key.self, value: nodenet_endpoint.self)
        #expect(try shared.lookup(key)?.ifindex == 9)
        let pinned = try #require(
            try BPFMap<nodenet_endpoint_key, nodenet_endpoint>.pinned(at: "\(root)/nodenet_endpoints"))
        #expect(try pinned.keys().count == 1)
        let counters = try netdev.map(named: "nodenet_verdicts", key: UInt32.self, value: UInt64.self)
        #expect(throws: BPFError.self) { try counters.lookup(0) }
    }

    @Test func aMapIsReadBatchByBatchUntilTheReaderStops() throws {
        let object = try Self.loaded()  // (its maps close with it)
        defer { withExtendedLifetime(object) {} }
        let map = try object.map(
            named: "nodenet_endpoints", key: nodenet_endpoint_key.self, value: nodenet_endpoint.self)
        let written = (1...2_500).map { UInt32($0) }
        for i in written {
            try map.update(nodenet_endpoint_key(ip: (0x0A00_0000 | i).bigEndian), Self.endpoint(ifindex: i))
        }
        // Every entry once, in batches of at most the size asked for, each key with its value.
        var batches: [Int] = []
        var read: [UInt32: UInt32] = [:]
        try map.forEachBatch(batchSize: 1_000) { keys, values in
            batches.append(keys.count)
            for (k, v) in zip(keys, values) { read[UInt32(bigEndian: k.ip) & 0xFFFF] = v.ifindex }
            return true
        }
        #expect(batches.allSatisfy { $0 <= 1_000 } && batches.count >= 3, "\(batches)")
        #expect(batches.reduce(0, +) == written.count, "each entry read once: \(batches)")
        #expect(read == Dictionary(uniqueKeysWithValues: written.map { ($0, $0) }))
        // A reader that stops after the first batch reads no other.
        var calls = 0
        try map.forEachBatch(batchSize: 1_000) { _, _ in
            calls += 1
            return false
        }
        #expect(calls == 1)
        let (keys, values) = try map.contents(batchSize: 1_000)
        #expect(
            keys.count == written.count
                && zip(keys, values).allSatisfy { UInt32(bigEndian: $0.ip) & 0xFFFF == $1.ifindex })
    }

    static func endpoint(ifindex: UInt32) -> nodenet_endpoint {
        nodenet_endpoint(ifindex: ifindex, host_mac: (0, 0, 0, 0, 0, 0), pod_mac: (0, 0, 0, 0, 0, 0), flags: 0)
    }

    @Test func aPinnedMapIsOpenedOnlyWithItsOwnLayout() throws {
        let root = "/sys/fs/bpf/\(TestNames.unique("layout"))"
        try BPFFS.prepare(root)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let lxc = try BPFObject(embedded: "bpf_lxc", pinRoot: root)
        try lxc.load()
        // The right layouts open.
        #expect(try BPFMap<nodenet_endpoint_key, nodenet_endpoint>.pinned(at: "\(root)/nodenet_endpoints") != nil)
        #expect(try BPFMap<UInt32, nodenet_monitor_lease>.pinned(at: "\(root)/nodenet_monitor") != nil)
        #expect(try BPFMap<UInt32, UInt64>.pinned(at: "\(root)/nodenet_verdicts", perCPU: true) != nil)
        // Another value size (the monitor's old 4-byte flag), another key size, per-CPU or not: a clear error.
        let value = #expect(throws: BPFError.self) { try BPFMap<UInt32, UInt32>.pinned(at: "\(root)/nodenet_monitor") }
        #expect(value?.description.contains("value size 8 B, UInt32 has 4 B") == true, "\(value as Any)")
        let key = #expect(throws: BPFError.self) {
            try BPFMap<UInt64, nodenet_endpoint>.pinned(at: "\(root)/nodenet_endpoints")
        }
        #expect(key?.description.contains("key size 4 B") == true, "\(key as Any)")
        let perCPU = #expect(throws: BPFError.self) {
            try BPFMap<UInt32, UInt64>.pinned(at: "\(root)/nodenet_verdicts")
        }
        #expect(perCPU?.description.contains("per-CPU") == true, "\(perCPU as Any)")
        #expect(try BPFMap<UInt32, UInt32>.pinned(at: "\(root)/nothing") == nil, "nothing pinned: nil, not an error")
    }

    /// A node wired by apply (kernel mode), then the from-container program on both pods' lxc.
    func withBPFNode(_ body: (TestNode, BPFObject, BPFMap<UInt32, UInt64>) async throws -> Void) async throws {
        try await TestNode.with(pods: 2) { t in
            let spec = t.spec()
            _ = try t.controller(spec).apply()
            let object = try Self.loaded()
            let endpoints = try object.map(
                named: "nodenet_endpoints", key: nodenet_endpoint_key.self, value: nodenet_endpoint.self)
            let node = try NetlinkSocket(namespace: t.namespace)
            let fd = try object.programFD(named: "nodenet_from_container")
            for (i, pod) in spec.pods.enumerated() {
                let lxc = try #require(try node.link(named: NodeNetNames.endpointDevice(for: pod)))
                let eth0 = try #require(try NetlinkSocket(namespace: .named(t.pods[i])).link(named: "eth0"))
                try endpoints.update(
                    Self.key(pod.ip),
                    nodenet_endpoint(
                        ifindex: lxc.index.unsigned, host_mac: Self.mac(lxc.address!), pod_mac: Self.mac(eth0.address!),
                        flags: 0))
                try node.addClsact(interfaceIndex: lxc.index)
                try node.add(
                    BPFFilterConfiguration(
                        interfaceIndex: lxc.index, direction: .ingress, programFD: fd, name: "nodenet-from-container"))
            }
            try await body(t, object, try object.map(named: "nodenet_verdicts", key: UInt32.self, value: UInt64.self))
        }
    }

    @Test func sameNodeTrafficIsRedirectedPastTheRoutingStack() async throws {
        try await withBPFNode { t, _, verdicts in
            let forwardedBefore = try LabProbe.forwardedDatagrams(in: t.namespace)
            let host = try FrameTap(device: "cilium_host", in: t.namespace)
            let ping = try runTool([
                "ip", "netns", "exec", t.pods[0], "ping", "-c", "3", "-i", "0.2", "-W", "2", "-w", "10", "10.0.2.204",
            ])
            #expect(ping.output.contains("3 received"), "\(ping.output)")
            #expect(ping.output.contains("ttl=63"), "one routed hop, as in the seed")
            #expect(
                try LabProbe.forwardedDatagrams(in: t.namespace) == forwardedBefore,
                "the node's IP stack forwarded nothing")
            #expect(host.ipv4Frames() == 0, "cilium_host carried no pod traffic")
            // The tap does see IPv4 on cilium_host: an echo the node sends out of it (no answer needed).
            _ = try runTool([
                "ip", "netns", "exec", t.node, "ping", "-c", "1", "-W", "1", "-I", "cilium_host", "10.0.2.250",
            ])
            #expect(host.ipv4Frames() >= 1, "the tap counts IPv4 frames on cilium_host")
            #expect(
                try verdicts.sum(UInt32(NODENET_VERDICT_LOCAL_REDIRECT.rawValue)) >= 6,
                "3 requests and 3 replies redirected")
            // The frame that reaches the server pod carries the server's lxc MAC as source:
            // the pod's neighbour entry for 10.0.2.32 is... not needed; its default gateway's MAC is its lxc.
            let server = try NetlinkSocket(namespace: .named(t.pods[1]))
            let eth0 = try #require(try server.link(named: "eth0"))
            let lxc = try #require(
                try NetlinkSocket(namespace: t.namespace).link(
                    named: NodeNetNames.endpointDevice(for: t.spec().pods[1])))
            let neighbours = try server.neighbours(family: .inet, interfaceIndex: eth0.index)
            #expect(
                neighbours.contains { $0.address == IPAddress("10.0.2.184") && $0.linkLayerAddress == lxc.address },
                "\(neighbours)")
            // Capture in the server pod: the frame from 10.0.2.32 arrives with the server's own lxc MAC as source.
            let capture = try FrameCapture(namespace: .named(t.pods[1]), device: "eth0")
            _ = try runTool(["ip", "netns", "exec", t.pods[0], "ping", "-c", "1", "-W", "2", "10.0.2.204"])
            let frame = try #require(
                capture.next { $0.count >= 34 && $0[23] == 1 && Array($0[26..<30]) == [10, 0, 2, 32] },
                "an ICMP frame from 10.0.2.32")
            #expect(MACAddress(bytes: frame[6..<12]) == lxc.address, "source MAC is the server's lxc")
            #expect(MACAddress(bytes: frame[0..<6]) == eth0.address, "destination MAC is the pod's eth0")
        }
    }

    @Test func aForgedSourceIsDroppedAndCounted() async throws {
        try await withBPFNode { t, _, verdicts in
            let pod = try NetlinkSocket(namespace: .named(t.pods[0]))
            let eth0 = try #require(try pod.link(named: "eth0"))
            try pod.add(InterfaceAddress(interfaceIndex: eth0.index, prefix: IPPrefix("10.0.2.99/32")))
            // The node answers no ARP from a forged sender (strict reverse-path filter on the lxc):
            // the pod's router entry is made by hand, so the forged packets reach the program.
            let lxc = try #require(
                try NetlinkSocket(namespace: t.namespace).link(
                    named: NodeNetNames.endpointDevice(for: t.spec().pods[0])))
            try pod.replace(
                Neighbour(
                    interfaceIndex: eth0.index, address: "10.0.2.184", linkLayerAddress: lxc.address, state: .permanent)
            )
            let before = try verdicts.sum(UInt32(NODENET_VERDICT_DROP_SPOOFED.rawValue))
            let ping = try runTool([
                "ip", "netns", "exec", t.pods[0], "ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", "10.0.2.99",
                "10.0.2.204",
            ])
            #expect(ping.output.contains("0 received"), "\(ping.output)")
            #expect(try verdicts.sum(UInt32(NODENET_VERDICT_DROP_SPOOFED.rawValue)) >= before + 2)
            // The pod's own address still works.
            #expect(try t.ping(from: 0, "10.0.2.204"))
        }
    }
}

extension DatapathTests {
    /// An IPv4 header claiming fewer than 20 bytes (ihl < 5) is malformed: from-container
    /// never forwards it (the stack drops it), as from-netdev leaves anything but ihl 5 alone.
    @Test func aHeaderShorterThan20BytesIsNeverRedirected() async throws {
        try await withBPFNode { t, _, verdicts in
            let spec = t.spec()
            let lxc = try #require(
                try NetlinkSocket(namespace: t.namespace).link(named: NodeNetNames.endpointDevice(for: spec.pods[0])))
            let eth0 = try #require(try NetlinkSocket(namespace: .named(t.pods[0])).link(named: "eth0"))
            func frame(ihl: UInt8) -> [UInt8] { Self.echo(to: lxc.address!, from: eth0.address!, ihl: ihl) }
            func send(_ bytes: [UInt8]) throws {
                try NetworkNamespace.run(in: .named(t.pods[0])) {
                    let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue), 0)
                    guard fd >= 0 else { throw BPFError(errno, "AF_PACKET socket") }
                    defer { close(fd) }
                    var addr = LinkLayerAddress()
                    addr.ifindex = eth0.index.rawValue
                    addr.halen = 6
                    let n = withUnsafePointer(to: &addr) { a in
                        a.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            sendto(fd, bytes, bytes.count, 0, $0, socklen_t(MemoryLayout<LinkLayerAddress>.size))
                        }
                    }
                    guard n == bytes.count else { throw BPFError(errno, "sending a frame") }
                }
            }
            let local = UInt32(NODENET_VERDICT_LOCAL_REDIRECT.rawValue)
            let stack = UInt32(NODENET_VERDICT_TO_STACK.rawValue)
            // A well-formed one first: the same frame with ihl 5 is redirected (the probe works).
            // Counted when the veth's receive side runs, which a loaded machine may defer to
            // ksoftirqd: poll (bounded) rather than sleep a fixed time.
            var before = try verdicts.sum(local)
            try send(frame(ihl: 5))
            try poll { try verdicts.sum(local) >= before + 1 }
            #expect(try verdicts.sum(local) == before + 1)
            before = try verdicts.sum(local)
            let toStack = try verdicts.sum(stack)
            for ihl in [UInt8(0), 4] { try send(frame(ihl: ihl)) }
            try poll { try verdicts.sum(stack) >= toStack + 2 || verdicts.sum(local) > before }
            #expect(try verdicts.sum(local) == before, "never redirected")
            #expect(try verdicts.sum(stack) == toStack + 2, "left to the stack, which drops it")
        }
    }
}

extension DatapathTests {
    /// The kernel's test harness runs a loaded program once on a packet as if it arrived on a
    /// device of the caller's namespace (what `datapath-bench --loop` times): the verdict, the
    /// packet as the program left it, the maps as for a packet on the wire.
    @Test func aProgramRunsOnAPacketThroughTheTestHarness() async throws {
        try await withBPFNode { t, object, verdicts in
            let spec = t.spec()
            let lxc = try #require(
                try NetlinkSocket(namespace: t.namespace).link(named: NodeNetNames.endpointDevice(for: spec.pods[0])))
            let eth0 = try #require(try NetlinkSocket(namespace: .named(t.pods[0])).link(named: "eth0"))
            let server = try #require(try NetlinkSocket(namespace: .named(t.pods[1])).link(named: "eth0"))
            let program = try BPFProgramHandle(
                id: try BPFProgramInfo(fd: try object.programFD(named: "nodenet_from_container")).id)
            func frame(from source: [UInt8]) -> [UInt8] {
                Self.echo(to: lxc.address!, from: eth0.address!, source: source)
            }
            func run(_ packet: [UInt8]) throws -> BPFTestRun {
                try NetworkNamespace.run(in: t.namespace) {
                    try program.testRun(packet: packet, interfaceIndex: lxc.index.rawValue)
                }
            }
            let local = UInt32(NODENET_VERDICT_LOCAL_REDIRECT.rawValue)
            let before = try verdicts.sum(local)
            let delivered = try run(frame(from: [10, 0, 2, 32]))
            #expect(delivered.verdict == 7, "TC_ACT_REDIRECT: into the server pod")
            #expect(Array(delivered.packet[0..<6]) == server.address!.bytes, "to the server pod's eth0")
            #expect(delivered.packet[22] == 63, "its TTL decremented")
            #expect(delivered.nanoseconds > 0)
            #expect(try verdicts.sum(local) == before + 1, "counted as a packet on the wire is")
            let spoofed = UInt32(NODENET_VERDICT_DROP_SPOOFED.rawValue)
            let dropped = try verdicts.sum(spoofed)
            #expect(try run(frame(from: [10, 0, 2, 99])).verdict == 2, "TC_ACT_SHOT: a forged source")
            #expect(try verdicts.sum(spoofed) == dropped + 1)
            let refused = #expect(throws: BPFError.self) { try run([1, 2, 3]) }
            #expect(refused?.errno == EINVAL, "shorter than an Ethernet header: \(refused.map { "\($0)" } ?? "")")
        }
    }
}
