import Testing

@testable import NodeNet

/// Plans narrowed to endpoints (CNI ADD and DEL): they create or remove exactly those endpoints
/// and touch nothing else of the node, whatever else differs. No root needed.
@Suite struct ScopedPlanTests {
    /// The planner tests' node with a second pod, `web` in `pod-web`.
    static let spec: NodeSpec = {
        var spec = PlannerTests.spec
        spec.pods.append(PodSpec(name: "web", netns: "pod-web", ip: "10.0.2.5"))
        return spec
    }()
    static let desired = DesiredState(spec: spec, deviceMTU: 1500)
    static let web = desired.endpoints.first { $0.pod.name == "web" }!

    /// The planner tests' converged node (pod `net`), with `pod-web` empty, a direct route
    /// missing and a stale route of ours: a full plan would change all of these.
    static var observed: ObservedState {
        var observed = PlannerTests.converged
        observed.pods["pod-web"] = ObservedNamespace(
            links: [Link(index: 1, name: "lo", flags: [.loopback], mtu: 65536)], addresses: [], ownedRoutes: [])
        observed.node.ownedRoutes.removeAll { $0.destination == "10.0.1.0/24" }
        observed.node.ownedRoutes.append(
            RouteIntent(destination: "10.9.0.0/16", gateway: "172.18.0.9", device: "eth0").route(interfaceIndex: 2))
        return observed
    }

    @Test func aScopedPlanMakesTheEndpointAndNothingElse() throws {
        let full = Planner.plan(desired: Self.desired, observed: Self.observed, ledger: nil, nativeDevice: "eth0")
        #expect(full.changes.contains { $0.subject == "route 10.0.1.0/24" }, "the full plan repairs the node")
        #expect(full.changes.contains { $0.subject == "route 10.9.0.0/16" })

        let scoped = try #require(Self.desired.scoped(toEndpoints: ["lxc9d2ba50824d6"]))
        let plan = Planner.plan(desired: scoped, observed: Self.observed, ledger: nil, nativeDevice: "eth0")
        #expect(plan.conflicts.isEmpty)
        let lines = plan.changes.map { "\($0.action.rawValue) \($0.subject) [\($0.namespace)]" }
        let device = "lxc9d2ba50824d6"  // default/web, written out
        #expect(
            lines == [
                "create endpoint default/web [node]", "update link eth0 [pod pod-web]",
                "create address 10.0.2.5/32 on eth0 [pod pod-web]", "create route 10.0.2.184/32 [pod pod-web]",
                "create route default [pod pod-web]",
            ]
                + ["forwarding", "rp_filter", "accept_local", "send_redirects"].map {
                    "create sysctl net/ipv4/conf/\(device)/\($0) [node]"
                } + ["create sysctl net/ipv6/conf/\(device)/disable_ipv6 [node]"] + ["create route 10.0.2.5/32 [node]"],
            "\(lines)")
        #expect(!plan.changes.contains { $0.subject.contains("10.0.1.0") || $0.subject.contains("10.9.0.0") })
        #expect(!plan.changes.contains { $0.namespace == .pod("pod-net") }, "the other pod is not touched")
    }

    @Test func aRemovalTakesAwayOnlyItsEndpoint() {
        var observed = Self.observed
        let removed = Ledger.Endpoint(
            pod: "default/old", hostDevice: "lxc0123456789ab", netns: "pod-old", ip: "10.0.2.7")
        observed.node.links[removed.hostDevice] = Link(
            index: 9, name: removed.hostDevice, kind: "veth", flags: [.up], peerIndex: 2)
        let mac = MACAddress("02:00:00:00:00:09")!
        observed.endpointEntries["10.0.2.7"] = EndpointEntry(ifindex: 9, hostMAC: mac, podMAC: mac)
        observed.endpointEntries["10.0.2.32"] = EndpointEntry(ifindex: 6, hostMAC: mac, podMAC: mac)
        observed.pins.tcxLinks = [
            "from-container@\(removed.hostDevice)@9@1234abcd", "from-container@\(PlannerTests.lxc)@6@1234abcd",
        ]
        let plan = Planner.plan(
            desired: Self.desired.removing([removed]), observed: observed, ledger: nil, nativeDevice: "eth0",
            datapath: .bpf, attachModes: .tcx)
        let lines = plan.changes.map { "\($0.action.rawValue) \($0.subject)" }
        #expect(
            lines == [
                "delete endpoint map entry 10.0.2.7", "delete endpoint default/old",
                "delete tcx link from-container@\(removed.hostDevice)@9@1234abcd",
            ], "\(lines)")
    }
}
