import Testing

@testable import NodeNet

/// The planner, from hand-built observed states to the expected operations and order.
@Suite struct PlannerTests {
    static let spec = NodeSpec(
        node: LocalNode(
            name: "worker2", device: "eth0", address: IPAddress("172.18.0.2"), podCIDR: IPPrefix("10.0.2.0/24"),
            routerIP: IPAddress("10.0.2.184")),
        pods: [PodSpec(name: "net", netns: "pod-net", ip: IPAddress("10.0.2.32"))],
        nodes: [RemoteNode(name: "worker", address: IPAddress("172.18.0.3"), podCIDR: IPPrefix("10.0.1.0/24"))])
    static let desired = DesiredState(spec: spec, deviceMTU: 1500)
    static let lxc = "lxc5fa86a0801be"

    static let up: InterfaceFlags = [.up]
    static let eth0 = Link(index: 2, name: "eth0", kind: "veth", flags: up)
    static let lo = Link(index: 1, name: "lo", flags: [.up, .loopback], mtu: 65536)

    /// A node with only lo and eth0, and an empty pod namespace.
    static var empty: ObservedState {
        ObservedState(
            node: ObservedNamespace(links: [lo, eth0], addresses: [], ownedRoutes: []),
            sysctls: ["net.ipv4.ip_forward": "0"],
            pods: [
                "pod-net": ObservedNamespace(
                    links: [Link(index: 1, name: "lo", flags: [.loopback], mtu: 65536)], addresses: [], ownedRoutes: [])
            ])
    }

    /// The same node after a successful apply, written out by hand (what Cilium's native-routing
    /// node has): the router /32 on cilium_host, the pod CIDR through it, the other node's CIDR
    /// via its address, the pod's /32 on its lxc; in the pod, the router on-link and the default
    /// route through it; forwarding on, source checks off on the host pair and strict on the lxc.
    static var converged: ObservedState {
        let host = Link(index: 5, name: "cilium_host", kind: "veth", flags: [.up, .noARP], peerIndex: 4)
        let net = Link(index: 4, name: "cilium_net", kind: "veth", flags: [.up, .noARP], peerIndex: 5)
        let hostEnd = Link(index: 6, name: "lxc5fa86a0801be", kind: "veth", flags: up, peerIndex: 2)
        let podEnd = Link(index: 2, name: "eth0", kind: "veth", flags: up, peerIndex: 6)
        let ours = RouteProtocol(rawValue: 207)
        let routes = [
            Route(destination: IPPrefix("10.0.2.184/32"), interfaceIndex: 5, scope: .link, protocol: ours),
            Route(
                destination: IPPrefix("10.0.2.0/24"), gateway: IPAddress("10.0.2.184"), interfaceIndex: 5,
                preferredSource: IPAddress("10.0.2.184"), protocol: ours),
            Route(
                destination: IPPrefix("10.0.1.0/24"), gateway: IPAddress("172.18.0.3"), interfaceIndex: 2,
                protocol: ours),
            Route(destination: IPPrefix("10.0.2.32/32"), interfaceIndex: 6, scope: .link, protocol: ours),
        ]
        let podRoutes = [
            Route(destination: IPPrefix("10.0.2.184/32"), interfaceIndex: 2, scope: .link, protocol: ours),
            Route(
                destination: IPPrefix("0.0.0.0/0"), gateway: IPAddress("10.0.2.184"), interfaceIndex: 2, protocol: ours,
                mtu: 1500),
        ]
        let sysctls = [
            "net.ipv4.ip_forward": "1",
            "net/ipv4/conf/cilium_host/accept_local": "1", "net/ipv4/conf/cilium_host/forwarding": "1",
            "net/ipv4/conf/cilium_host/rp_filter": "0", "net/ipv4/conf/cilium_host/send_redirects": "0",
            "net/ipv4/conf/cilium_net/accept_local": "1", "net/ipv4/conf/cilium_net/forwarding": "1",
            "net/ipv4/conf/cilium_net/rp_filter": "0", "net/ipv4/conf/cilium_net/send_redirects": "0",
            "net/ipv4/conf/lxc5fa86a0801be/accept_local": "1", "net/ipv4/conf/lxc5fa86a0801be/forwarding": "1",
            "net/ipv4/conf/lxc5fa86a0801be/rp_filter": "1", "net/ipv4/conf/lxc5fa86a0801be/send_redirects": "0",
            "net/ipv6/conf/lxc5fa86a0801be/disable_ipv6": "1",
        ]
        return ObservedState(
            node: ObservedNamespace(
                links: [lo, eth0, host, net, hostEnd],
                addresses: [InterfaceAddress(interfaceIndex: 5, prefix: IPPrefix("10.0.2.184/32"), scope: .link)],
                ownedRoutes: routes),
            sysctls: sysctls,
            pods: [
                "pod-net": ObservedNamespace(
                    links: [Link(index: 1, name: "lo", flags: [.up, .loopback], mtu: 65536), podEnd],
                    addresses: [InterfaceAddress(interfaceIndex: 2, prefix: IPPrefix("10.0.2.32/32"))],
                    ownedRoutes: podRoutes)
            ])
    }

    func plan(
        _ observed: ObservedState, ledger: Ledger? = nil, desired: DesiredState = PlannerTests.desired
    ) -> Planner.Plan {
        Planner.plan(desired: desired, observed: observed, ledger: ledger, nativeDevice: "eth0")
    }

    @Test func fromAnEmptyNodeEverythingIsCreatedInDependencyOrder() {
        let p = plan(Self.empty)
        #expect(p.conflicts.isEmpty)
        let lines = p.changes.map { "\($0.action.rawValue) \($0.subject) [\($0.namespace)]" }
        let lxc = Self.lxc
        let sysctlsFor: (String) -> [String] = { d in
            ["forwarding", "rp_filter", "accept_local", "send_redirects"].map {
                "create sysctl net/ipv4/conf/\(d)/\($0) [node]"
            }
        }
        let expected =
            [
                "create link cilium_host [node]", "update link cilium_net [node]",
                "create address 10.0.2.184/32 on cilium_host [node]",
                "update sysctl net.ipv4.ip_forward [node]",
            ] + sysctlsFor("cilium_host") + sysctlsFor("cilium_net") + [
                "create route 10.0.2.184/32 [node]", "create route 10.0.2.0/24 [node]",
                "create endpoint default/net [node]",
                "update link eth0 [pod pod-net]", "create address 10.0.2.32/32 on eth0 [pod pod-net]",
                "create route 10.0.2.184/32 [pod pod-net]", "create route default [pod pod-net]",
            ] + sysctlsFor(lxc) + ["create sysctl net/ipv6/conf/\(lxc)/disable_ipv6 [node]"]
            + ["create route 10.0.2.32/32 [node]", "create route 10.0.1.0/24 [node]"]
        #expect(lines == expected)
        // Routes name their devices; the pod's default route carries the MTU.
        #expect(p.changes.first { $0.subject == "route default" }?.wanted == "default via 10.0.2.184 dev eth0 mtu 1500")
        #expect(
            p.changes.first { $0.subject == "route 10.0.2.0/24" }?.wanted
                == "10.0.2.0/24 via 10.0.2.184 dev cilium_host src 10.0.2.184")
    }

    @Test func aConvergedNodeNeedsNothing() {
        let p = plan(Self.converged)
        #expect(p.changes.isEmpty, "\(p.changes)")
        #expect(p.conflicts.isEmpty)
    }

    @Test func driftIsRepairedWithReplaceAndSysctlsAreReset() {
        var observed = Self.converged
        // Someone moved our direct route and flipped rp_filter.
        let i = observed.node.ownedRoutes.firstIndex { $0.destination == IPPrefix("10.0.1.0/24") }!
        observed.node.ownedRoutes[i].gateway = IPAddress("172.18.0.9")
        observed.sysctls["net/ipv4/conf/cilium_host/rp_filter"] = "1"
        let p = plan(observed)
        #expect(p.changes.count == 2)
        let route = p.changes.first { $0.kind == .route }
        #expect(route?.action == .update)
        #expect(route?.found == "10.0.1.0/24 via 172.18.0.9 dev eth0")
        if case .netlink(.putRoute(_, _, let previous))? = route?.change {
            #expect(previous?.gateway == IPAddress("172.18.0.9"))
        } else {
            Issue.record("not a route change")
        }
        #expect(
            p.changes.first { $0.kind == .sysctl }?.mismatch
                == "sysctl net/ipv4/conf/cilium_host/rp_filter [node]: wanted 0, found 1")
    }

    @Test func removalsComeLastRoutesBeforeLinks() {
        var observed = Self.converged
        // An endpoint and a remote node that left the spec.
        observed.node.links["lxc0123456789ab"] = Link(
            index: 9, name: "lxc0123456789ab", kind: "veth", flags: Self.up, peerIndex: 2)
        observed.node.ownedRoutes.append(
            RouteIntent(destination: IPPrefix("10.0.2.77/32"), device: "lxc0123456789ab", scope: .link).route(
                interfaceIndex: 9))
        observed.node.ownedRoutes.append(
            RouteIntent(destination: IPPrefix("10.0.0.0/24"), gateway: IPAddress("172.18.0.4"), device: "eth0").route(
                interfaceIndex: 2))
        var ledger = Ledger(node: "worker2")
        ledger.endpoints = [
            Ledger.Endpoint(pod: "default/old", hostDevice: "lxc0123456789ab", netns: "pod-old", ip: "10.0.2.77")
        ]
        let p = plan(observed, ledger: ledger)
        #expect(
            p.changes.map { "\($0.action.rawValue) \($0.subject)" } == [
                "delete route 10.0.2.77/32", "delete route 10.0.0.0/24", "delete endpoint default/old",
            ])
    }

    /// BIG TCP: nodenet's four devices (host pair, lxc, the pod's eth0) are set to the size the
    /// desired state names, each by one link change that says what it found; the native device
    /// is not touched; a new endpoint is created with the size.
    @Test func bigTCPSizesNodenetsDevicesOnly() {
        var desired = Self.desired
        desired.ipv4SegmentSize = 196_608
        var observed = Self.converged
        for name in ["cilium_host", "cilium_net", "lxc5fa86a0801be", "eth0"] {
            observed.node.links[name]?.gsoIPv4MaxSize = 65_536
            observed.node.links[name]?.groIPv4MaxSize = 65_536
        }
        observed.pods["pod-net"]?.links["eth0"]?.gsoIPv4MaxSize = 65_536
        observed.pods["pod-net"]?.links["eth0"]?.groIPv4MaxSize = 65_536
        let p = plan(observed, desired: desired)
        #expect(
            p.changes.map {
                "\($0.action.rawValue) \($0.subject) [\($0.namespace)] \($0.found ?? "") -> \($0.wanted ?? "")"
            }
                == [
                    "update link cilium_host [node] gso/gro ipv4 65536/65536 -> gso/gro ipv4 196608",
                    "update link cilium_net [node] gso/gro ipv4 65536/65536 -> gso/gro ipv4 196608",
                    "update link lxc5fa86a0801be [node] gso/gro ipv4 65536/65536 -> gso/gro ipv4 196608",
                    "update link eth0 [pod pod-net] gso/gro ipv4 65536/65536 -> gso/gro ipv4 196608",
                ])
        // Each change's undo restores what was there, GRO apart from GSO where they differed.
        func undos(_ p: Planner.Plan) -> [LinkChange] {
            p.changes.compactMap {
                if case .setLink(_, _, _, let undo)? = $0.change.netlink { return undo }
                return nil
            }
        }
        #expect(undos(p) == Array(repeating: LinkChange(ipv4MaxSegmentSize: 65_536), count: 4))
        observed.node.links["cilium_host"]?.groIPv4MaxSize = 131_072
        #expect(
            undos(plan(observed, desired: desired)).first
                == LinkChange(ipv4MaxSegmentSize: 65_536, ipv4GROMaxSize: 131_072))
        // Already so: nothing to do.
        for name in ["cilium_host", "cilium_net", "lxc5fa86a0801be"] {
            observed.node.links[name]?.gsoIPv4MaxSize = 196_608
            observed.node.links[name]?.groIPv4MaxSize = 196_608
        }
        observed.pods["pod-net"]?.links["eth0"]?.gsoIPv4MaxSize = 196_608
        observed.pods["pod-net"]?.links["eth0"]?.groIPv4MaxSize = 196_608
        #expect(plan(observed, desired: desired).isEmpty)
        // From an empty node: the pair and the endpoint are made with it.
        let created = plan(Self.empty, desired: desired).changes.compactMap(\.change.netlink)
        #expect(created.contains(.createHostPair(mtu: 1500, ipv4SegmentSize: 196_608)))
        #expect(
            created.contains(
                .createEndpoint(hostDevice: "lxc5fa86a0801be", netns: "pod-net", mtu: 1500, ipv4SegmentSize: 196_608)))
    }

    @Test func aLeavingPodsMapEntryGoesBeforeItsLxc() {
        var observed = Self.converged
        observed.node.links["lxc0123456789ab"] = Link(
            index: 9, name: "lxc0123456789ab", kind: "veth", flags: Self.up, peerIndex: 2)
        observed.endpointEntries[IPAddress("10.0.2.77")] = EndpointEntry(
            ifindex: 9, hostMAC: MACAddress("02:00:00:00:00:09")!, podMAC: MACAddress("02:00:00:00:01:09")!)
        var ledger = Ledger(node: "worker2")
        ledger.endpoints = [
            Ledger.Endpoint(pod: "default/old", hostDevice: "lxc0123456789ab", netns: "pod-old", ip: "10.0.2.77")
        ]
        let p = Planner.plan(
            desired: Self.desired, observed: observed, ledger: ledger, nativeDevice: "eth0", datapath: .bpf,
            attachModes: .clsact)
        let subjects = p.changes.map(\.subject)
        let entry = subjects.firstIndex(of: "endpoint map entry 10.0.2.77")
        let link = subjects.firstIndex(of: "endpoint default/old")
        #expect(entry != nil && link != nil && entry! < link!, "\(subjects)")
    }

    @Test func anLxcDeviceNotInTheLedgerIsLeftAlone() {
        var observed = Self.converged
        observed.node.links["lxc0123456789ab"] = Link(index: 9, name: "lxc0123456789ab", kind: "veth", flags: Self.up)
        #expect(plan(observed).changes.isEmpty)
    }

    @Test func aForeignEth0InThePodIsAConflict() {
        var observed = Self.empty
        observed.pods["pod-net"]!.links["eth0"] = Link(
            index: 3, name: "eth0", kind: "veth", flags: Self.up, peerIndex: 40)
        let p = plan(observed)
        #expect(p.conflicts == ["pod default/net: pod-net already has an eth0 that is not nodenet's"])
    }

    @Test func aHalfEndpointIsRebuilt() {
        var observed = Self.converged
        // The pod's namespace was recreated: our lxc is left without its peer.
        observed.pods["pod-net"] = Self.empty.pods["pod-net"]
        observed.node.links[Self.lxc]!.peerIndex = 77
        let p = plan(observed)
        let lines = p.changes.map { "\($0.action.rawValue) \($0.subject)" }
        #expect(Array(lines.prefix(2)) == ["delete link \(Self.lxc)", "create endpoint default/net"])
        // Everything on the old device went with it: route, sysctls and pod side are planned again.
        #expect(lines.contains("create route 10.0.2.32/32"))
        #expect(lines.filter { $0.hasPrefix("create sysctl net/ipv4/conf/\(Self.lxc)/") }.count == 4)
        #expect(lines.contains("create address 10.0.2.32/32 on eth0"))
    }

    @Test func aMissingDeviceIsAConflictAndAMissingPodNamespaceIsReported() {
        var observed = Self.empty
        observed.node.links["eth0"] = nil
        observed.pods = [:]
        observed.podErrors = ["pod-net": "gone"]
        let p = plan(observed)
        #expect(p.conflicts == ["native device eth0 does not exist in the node's namespace"])
        #expect(
            p.unavailable == [
                "pod default/net: network namespace pod-net cannot be read (gone); its endpoint is left out until it is back"
            ])
        #expect(!p.changes.contains { $0.subject.contains("default/net") || $0.subject.contains("10.0.2.32") })
        #expect(!p.changes.contains { $0.kind == .sysctl && $0.subject.contains("lxc") })
    }
}
