import Foundation
import Testing

@testable import NodeNet

/// CNI endpoints without a kernel: IPAM, the store's rules and its file. No root needed.
struct EndpointStoreTests {
    static func spec(
        podCIDR: IPPrefix = "10.0.2.0/24", router: IPAddress = "10.0.2.184", pods: [PodSpec] = []
    )
        -> NodeSpec
    {
        NodeSpec(
            node: LocalNode(name: "w2", device: "eth0", address: "172.18.0.2", podCIDR: podCIDR, routerIP: router),
            pods: pods, stateDirectory: "/nonexistent")
    }

    static func attachment(_ id: String) -> Endpoint.Attachment {
        Endpoint.Attachment(containerID: id, interface: "eth0")
    }

    @Test func ipamSkipsNetworkBroadcastRouterAndTakenAndWraps() {
        let cidr: IPPrefix = "10.0.2.0/29"  // hosts .1 to .6
        #expect(IPAM.next(in: cidr, routerIP: "10.0.2.1", taken: [], after: nil) == "10.0.2.2")
        #expect(IPAM.next(in: cidr, routerIP: "10.0.2.1", taken: ["10.0.2.2", "10.0.2.3"], after: nil) == "10.0.2.4")
        // After the last one given, wrapping past the broadcast address to the first host.
        #expect(IPAM.next(in: cidr, routerIP: "10.0.2.1", taken: [], after: "10.0.2.6") == "10.0.2.2")
        #expect(IPAM.next(in: cidr, routerIP: "10.0.2.1", taken: [], after: "10.0.2.4") == "10.0.2.5")
        let all: Set<IPAddress> = ["10.0.2.2", "10.0.2.3", "10.0.2.4", "10.0.2.5", "10.0.2.6"]
        #expect(IPAM.next(in: cidr, routerIP: "10.0.2.1", taken: all, after: nil) == nil)
        #expect(IPAM.free(in: cidr, routerIP: "10.0.2.1", taken: ["10.0.2.2"]) == 4)
    }

    @Test func addIsIdempotentAndAddressesAreNotReusedAtOnce() throws {
        var store = EndpointStore(stateDirectory: "/nonexistent", node: "w2")
        let spec = Self.spec(pods: [PodSpec(name: "net", netns: "p0", ip: "10.0.2.1")])
        let a = try store.add(
            Self.attachment("a"), netns: "/run/netns/a", podNamespace: "default", podName: "a", spec: spec)
        #expect(a.created && a.endpoint.ip == "10.0.2.2", "the spec pod's address is skipped")
        let again = try store.add(
            Self.attachment("a"), netns: "/run/netns/a", podNamespace: "default", podName: "a", spec: spec)
        #expect(!again.created && again.endpoint == a.endpoint)
        store.remove(Self.attachment("a"))
        let b = try store.add(
            Self.attachment("b"), netns: "/run/netns/b", podNamespace: "default", podName: "b", spec: spec)
        #expect(b.endpoint.ip == "10.0.2.3", "a released address is not handed out again at once")
    }

    @Test func clashesAreRefusedWithTheirReason() throws {
        var store = EndpointStore(stateDirectory: "/nonexistent", node: "w2")
        let spec = Self.spec(pods: [PodSpec(name: "net", netns: "/run/netns/spec", ip: "10.0.2.1")])
        func refusal(_ id: String, _ netns: String, _ name: String, namespace: String = "default") -> EndpointError? {
            do {
                _ = try store.add(Self.attachment(id), netns: netns, podNamespace: namespace, podName: name, spec: spec)
                return nil
            } catch { return error }
        }
        #expect(refusal("x", "/run/netns/x", "net")?.kind == .conflict, "a spec pod's name")
        #expect(refusal("x", "/run/netns/spec", "x")?.kind == .conflict, "a spec pod's namespace")
        _ = try store.add(
            Self.attachment("a"), netns: "/run/netns/a", podNamespace: "default", podName: "a", spec: spec)
        #expect(refusal("b", "/run/netns/b", "a")?.message.contains("already has an endpoint from container a") == true)
        #expect(refusal("b", "/run/netns/a", "b")?.kind == .conflict, "another endpoint's namespace")
        #expect(refusal("a", "/run/netns/other", "a")?.kind == .conflict, "the same attachment in another namespace")
        #expect(refusal("../../etc", "/run/netns/b", "b")?.kind == .invalid)
        #expect(refusal("b", "/run/netns/../../etc/passwd", "b")?.kind == .invalid)
        #expect(refusal("b", "relative", "b")?.kind == .invalid)
        #expect(refusal("b", "/run/netns/b", "B_AD")?.kind == .invalid)
        do {
            _ = try store.add(
                Endpoint.Attachment(containerID: "b", interface: "net1"), netns: "/run/netns/b", podNamespace: "d",
                podName: "b", spec: spec)
            Issue.record("another interface name was accepted")
        } catch { #expect(error.message.contains("not supported")) }
    }

    /// Before: a spec pod whose namespace had gone failed the merged validation, and with it
    /// every CNI ADD on the node; the planner leaves such a pod out instead.
    @Test func aVanishedSpecPodDoesNotBlockEndpoints() throws {
        var store = EndpointStore(stateDirectory: "/nonexistent", node: "w2")
        let spec = Self.spec(pods: [PodSpec(name: "net", netns: "/var/run/netns/gone-\(getpid())", ip: "10.0.2.1")])
        _ = try store.add(Self.attachment("a"), netns: "/run/netns/a", podNamespace: "d", podName: "a", spec: spec)
        let merged = try spec.including(store)
        #expect(merged.pods.map(\.id) == ["default/net", "d/a"])
        #expect(merged.isValidated)
        // The clash rules still hold (an endpoint on the spec pod's address).
        let clashing = EndpointStore(
            stateDirectory: "/nonexistent", node: "w2",
            endpoints: [
                Endpoint(
                    attachment: Self.attachment("b"), netns: "/run/netns/b", podNamespace: "d", podName: "b",
                    ip: "10.0.2.1")
            ])
        #expect(throws: SpecError.self) { try spec.including(clashing) }
    }

    @Test func anExhaustedPoolIsAClearError() throws {
        var store = EndpointStore(stateDirectory: "/nonexistent", node: "w2")
        let spec = Self.spec(podCIDR: "10.0.2.0/30", router: "10.0.2.1")  // one address for pods
        _ = try store.add(Self.attachment("a"), netns: "/run/netns/a", podNamespace: "d", podName: "a", spec: spec)
        do {
            _ = try store.add(Self.attachment("b"), netns: "/run/netns/b", podNamespace: "d", podName: "b", spec: spec)
            Issue.record("a second address from a /30")
        } catch {
            #expect(error.kind == .exhausted && error.message.hasPrefix("no address left in podCIDR 10.0.2.0/30"))
        }
        #expect(store.freeAddresses(spec: spec) == 0)
    }

    @Test func theFileRoundTripsAndAForeignOrPlantedOneIsNotTrusted() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("eps-\(getpid())-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var store = EndpointStore(stateDirectory: directory, node: "w2")
        let spec = Self.spec()
        _ = try store.add(Self.attachment("a"), netns: "/run/netns/a", podNamespace: "d", podName: "a", spec: spec)
        try store.save()
        let loaded = try EndpointStore.load(stateDirectory: directory, node: "w2", podCIDR: "10.0.2.0/24")
        #expect(loaded.endpoints.map(\.attachment) == store.endpoints.map(\.attachment))
        #expect(loaded.lastAllocated == store.lastAllocated)
        #expect(throws: NodeNetError.self) {
            try EndpointStore.load(stateDirectory: directory, node: "other", podCIDR: "10.0.2.0/24")
        }
        // A record planted with a path out of the namespace directory, or an address elsewhere.
        let path = EndpointStore.path(stateDirectory: directory)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        for (from, to) in [("/run/netns/a", "/run/netns/../../proc/1/ns/net"), ("10.0.2.1", "192.168.0.1")] {
            try text.replacingOccurrences(of: from, with: to).write(toFile: path, atomically: true, encoding: .utf8)
            let error = #expect(throws: NodeNetError.self) {
                try EndpointStore.load(stateDirectory: directory, node: "w2", podCIDR: "10.0.2.0/24")
            }
            #expect("\(error!)".contains("cannot be trusted"), "\(error!)")
        }
        #expect(
            try EndpointStore.load(stateDirectory: directory + "/none", node: "w2", podCIDR: "10.0.2.0/24").endpoints
                .isEmpty, "no file: no endpoints")
    }

    @Test func recordedDeletionsIgnoreWhatIsNotOne() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("del-\(getpid())-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let deletions = EndpointStore.deletionsPath(stateDirectory: directory)
        try FileManager.default.createDirectory(atPath: deletions, withIntermediateDirectories: true)
        for name in ["abc.eth0", ".hidden", "noDot", "-bad.eth0"] {
            FileManager.default.createFile(atPath: "\(deletions)/\(name)", contents: Data())
        }
        let recorded = EndpointStore.recordedDeletions(stateDirectory: directory)
        #expect(recorded.attachments == [Self.attachment("abc")])
        #expect(recorded.ignored.sorted() == ["-bad.eth0", ".hidden", "noDot"])
    }
}
