import BPF
import CNodeNetBPF
import Foundation
import Testing

@testable import NodeNet

/// Services in the spec, the desired frontends, id assignment and the services part of a
/// plan (no kernel needed).
@Suite struct ServicePlanTests {
    static var spec: NodeSpec {
        var s = PlannerTests.spec
        s.datapath = DatapathSettings(mode: .bpf, attachMode: .clsact)
        s.nativeRoutingCIDR = IPPrefix("10.0.0.0/8")
        s.services = [
            ServiceSpec(
                name: "default/serversvc", type: .nodePort, clusterIP: IPAddress("10.96.18.68"),
                ports: [ServicePort(name: "http", port: 80, targetPort: 8080, nodePort: 32000)],
                backends: [
                    ServiceBackend(ip: IPAddress("10.0.1.15")),
                    ServiceBackend(ip: IPAddress("10.0.2.204"), port: 9090),
                ]),
            ServiceSpec(
                name: "kube-system/dns", type: .clusterIP, clusterIP: IPAddress("10.96.0.10"),
                ports: [ServicePort(protocol: .udp, port: 53), ServicePort(protocol: .tcp, port: 53)],
                backends: [ServiceBackend(ip: IPAddress("10.0.1.15"))]),
        ]
        return s
    }

    static func key(_ s: String) -> FrontendKey {
        let parts = s.split(separator: "/")
        let hostPort = parts[0].split(separator: ":")
        return FrontendKey(
            address: IPAddress(String(hostPort[0]))!, port: UInt16(hostPort[1])!,
            protocol: TransportProtocol(rawValue: String(parts[1]))!)
    }

    @Test func frontendsAreBuiltAsCiliumDoes() {
        let frontends = Self.spec.serviceFrontends
        #expect(
            frontends.map { "\($0.type.rawValue) \($0.key)" } == [
                "ClusterIP 10.96.18.68:80/TCP", "NodePort 172.18.0.2:32000/TCP", "NodePort 0.0.0.0:32000/TCP",
                "ClusterIP 10.96.0.10:53/UDP", "ClusterIP 10.96.0.10:53/TCP",
            ])
        #expect(
            frontends[0].backends.map(\.description) == ["10.0.1.15:8080/TCP", "10.0.2.204:9090/TCP"],
            "targetPort, or the backend's own port")
        #expect(frontends[3].backends.map(\.description) == ["10.0.1.15:53/UDP"])
    }

    @Test func idsAreReusedFromTheMapsAndNewOnesTakeTheLowestFree() {
        var observed = ObservedServices()
        observed.masters[Self.key("10.96.0.10:53/UDP")] = FrontendMaster(count: 1, id: 7, flags: [])
        observed.revnat[7] = Self.key("10.96.0.10:53/UDP")
        observed.revnat[1] = Self.key("10.96.18.68:80/TCP")  // a revnat entry without slot 0 (interrupted apply)
        observed.revnat[2] = Self.key("10.9.9.9:1/TCP")  // stale, but its id is not reused
        observed.backends[3] = BackendAddress(address: IPAddress("10.0.1.15"), port: 53, protocol: .udp)
        let ids = ServiceIDs.assign(Self.spec.serviceFrontends, observed: observed, capacity: .default)
        #expect(ids.frontends[Self.key("10.96.0.10:53/UDP")] == 7)
        #expect(ids.frontends[Self.key("10.96.18.68:80/TCP")] == 1)
        #expect(Set(ids.frontends.values).count == 5 && !ids.frontends.values.contains(2))
        #expect(ids.frontends[Self.key("172.18.0.2:32000/TCP")] == 3, "lowest free")
        #expect(ids.backends[BackendAddress(address: IPAddress("10.0.1.15"), port: 53, protocol: .udp)] == 3)
        #expect(ids.backends[BackendAddress(address: IPAddress("10.0.1.15"), port: 8080, protocol: .tcp)] == 1)
    }

    /// At a small size (ids 1 ..< 1 024): new frontends take the free ids lowest first, then
    /// those only stale frontends have (pruned by the plan); a key given twice has one id, and
    /// the id tried for its second place goes to the next frontend.
    @Test func idsRunOutToStaleOnesAndAKeyGivenTwiceHasOne() {
        let capacity = ServiceMapCapacity(entries: 4096)
        #expect(capacity.frontendIDs == 1..<1024)
        var observed = ObservedServices()
        for id: FrontendID in 1...10 { observed.revnat[id] = Self.key("10.9.0.\(id):1/TCP") }  // stale
        func frontend(_ i: Int) -> DesiredFrontend {
            DesiredFrontend(
                key: FrontendKey(address: IPAddress(ipv4: 0x0A60_0000 + UInt32(i)), port: 80, protocol: .tcp),
                type: .clusterIP, service: "s/\(i)",
                backends: [BackendAddress(address: IPAddress(ipv4: 0x0A01_0000 + UInt32(i)), port: 80, protocol: .tcp)])
        }
        // 1 015 distinct frontends, the first given again where the free ids run out (after
        // 1 013 of them) and again at the very end.
        var wanted = (0..<1013).map(frontend)
        wanted.append(frontend(0))
        wanted += (1013..<1015).map(frontend)
        wanted.append(frontend(0))
        let ids = ServiceIDs.assign(wanted, observed: observed, capacity: capacity)
        #expect(ids.frontends.count == 1015 && Set(ids.frontends.values).count == 1015, "one id a key")
        #expect(ids.ordered.count == wanted.count && !ids.ordered.contains(0))
        #expect(ids.ordered[0] == 11 && ids.ordered[1012] == 1023, "the free ids, lowest first")
        #expect(ids.ordered[1013] == 11 && ids.ordered[1016] == 11, "a key given twice has its first place's id")
        #expect(ids.ordered[1014] == 1 && ids.ordered[1015] == 2, "then the stale ids, lowest first")
        #expect(
            ids.slotStarts.count == wanted.count + 1 && ids.slots(1013) == [ids.backends[wanted[0].backends[0]]!]
                && ids.backends.count == 1015)
        // While free ids remain: the id tried for the second place goes to the next frontend.
        let early = ServiceIDs.assign(
            [frontend(0), frontend(1), frontend(0), frontend(2)], observed: ObservedServices(), capacity: capacity)
        #expect(early.ordered == [1, 2, 1, 3] && early.frontends.count == 3, "\(early.ordered)")
    }

    /// Backend ids index the backends array, twice the size's entries: a node holding the most
    /// backends a spec may have (4 095 at the smallest size) that replaces every one of them
    /// gives the new ones ids beside the old ones (no old backend's id is taken while a frontend
    /// may still name it), 4 096 ... 8 190 of the array's 0 ..< 8 192.
    @Test func backendIDsOfAWholeNewSetStayWithinTheArray() {
        let capacity = ServiceMapCapacity(entries: 4096)
        #expect(capacity.backendIDs == 1..<8192 && capacity.maxBackends == 4095)
        var observed = ObservedServices()
        func backend(_ i: Int) -> BackendAddress {
            BackendAddress(address: IPAddress(ipv4: 0x0A01_0000 + UInt32(i)), port: 80, protocol: .tcp)
        }
        for i in 1...4095 { observed.backends[UInt32(i)] = backend(i) }
        let new = (5000..<9095).map(backend)
        let wanted = (0..<45).map { (f: Int) -> DesiredFrontend in
            let backends = Array(new[(f * 91)..<(f * 91 + 91)])
            return DesiredFrontend(
                key: FrontendKey(address: IPAddress(ipv4: 0x0A60_0000 + UInt32(f)), port: 80, protocol: .tcp),
                type: .clusterIP, service: "s/\(f)", backends: backends)
        }
        let ids = ServiceIDs.assign(wanted, observed: observed, capacity: capacity)
        #expect(ids.backends.count == 4095 && Set(ids.backends.values).count == 4095, "one id a backend")
        #expect(ids.backends.values.min() == 4096 && ids.backends.values.max() == 8190, "beside the old ones")
        #expect(ids.backends.values.allSatisfy { capacity.backendIDs.contains($0) }, "within the array")
    }

    /// Applies a plan's service changes to maps that hold at most `capacity` backends and
    /// service entries, as the kernel would: false when a write would overfill one, a backend's
    /// id is beyond the backends array (twice `capacity`), or a frontend names a backend that
    /// is not there.
    static func fits(_ plan: Planner.Plan, _ observed: inout ObservedServices, capacity: Int) -> Bool {
        var entries = observed.masters.count + observed.slots.values.reduce(0) { $0 + $1.count }
        for change in plan.changes {
            guard let service = change.change.service else { continue }
            switch service {
            case .putBackend(let id, let backend, _):
                if observed.backends[id] == nil && observed.backends.count == capacity { return false }
                if id == 0 || Int(id) >= 2 * capacity { return false }
                observed.backends[id] = backend
                observed.malformed.removeAll { $0.array == .backends && $0.id == id }
            case .deleteBackend(let id, _):
                observed.backends[id] = nil
            case .putFrontend(let key, let entry, _, _):
                guard entry.backendIDs.allSatisfy({ observed.backends[$0] != nil }) else { return false }
                entries -= (observed.masters[key] == nil ? 0 : 1) + (observed.slots[key]?.count ?? 0)
                entries += 1 + entry.backendIDs.count
                if entries > capacity { return false }
                observed.masters[key] = entry.master
                observed.slots[key] = Dictionary(
                    uniqueKeysWithValues: entry.backendIDs.enumerated().map { (UInt16($0.offset + 1), $0.element) })
                observed.revnat[entry.id] = key
                observed.malformed.removeAll { $0.array == .revnat && $0.id == entry.id }
            case .deleteFrontend(let key, _):
                entries -= (observed.masters[key] == nil ? 0 : 1) + (observed.slots[key]?.count ?? 0)
                (observed.masters[key], observed.slots[key]) = (nil, nil)
            case .deleteRevNat(let id, _):
                observed.revnat[id] = nil
            case .clearMalformed(let entry):
                observed.malformed.removeAll { $0 == entry }
            default:
                continue
            }
        }
        return true
    }

    /// Specs that replace every service, then every backend, on maps sized for one set: the
    /// plans never hold more than the maps' size (the lab test does it in the kernel), and they
    /// converge.
    @Test func replacingEveryServiceOrBackendNeverOverfillsTheMaps() {
        func spec(clusterIPs: UInt32, backends: UInt32) -> NodeSpec {
            var s = Self.spec
            s.loadBalancer.mapCapacity = ServiceMapCapacity(entries: 4096)
            s.services = (0..<800).map { (i: UInt32) in
                ServiceSpec(
                    name: "fill/svc\(i)", type: .clusterIP, clusterIP: IPAddress(ipv4: clusterIPs + i + 1),
                    ports: [ServicePort(protocol: .tcp, port: 80)],
                    backends: (1...3).map { ServiceBackend(ip: IPAddress(ipv4: backends + 3 * i + $0)) })
            }
            return s
        }
        var observed = PlannerTests.converged
        for (step, s) in [
            spec(clusterIPs: 0x0A64_0000, backends: 0x0AC8_0000), spec(clusterIPs: 0x0A65_0000, backends: 0x0AC9_0000),
            spec(clusterIPs: 0x0A65_0000, backends: 0x0ACA_0000),
        ].enumerated() {
            let desired = DesiredState(spec: s, deviceMTU: 1500)
            let plan = Planner.plan(
                desired: desired, observed: observed, ledger: nil, nativeDevice: "eth0", datapath: .bpf,
                attachModes: .clsact)
            #expect(Self.fits(plan, &observed.services, capacity: 4096), "step \(step)")
            #expect(observed.services.backends.count == 2400 && observed.services.masters.count == 800, "step \(step)")
            let again = Planner.plan(
                desired: desired, observed: observed, ledger: nil, nativeDevice: "eth0", datapath: .bpf,
                attachModes: .clsact)
            #expect(!again.changes.contains { $0.kind == .service && $0.subject.hasPrefix("backend") }, "step \(step)")
        }
    }

    /// Backends moving from one service to another on maps with room for only some of them:
    /// the service that only gives backends up is written first, so the other one's fit.
    @Test func aFrontendThatOnlyFreesBackendsIsWrittenFirst() {
        func spec(_ a: [UInt32], _ b: [UInt32]) -> NodeSpec {
            var s = Self.spec
            s.loadBalancer.mapCapacity = ServiceMapCapacity(entries: 4096)
            s.services = [("a", a, 0x0A64_0001 as UInt32), ("b", b, 0x0A64_0002)].map { name, backends, address in
                ServiceSpec(
                    name: "fill/\(name)", type: .clusterIP, clusterIP: IPAddress(ipv4: address),
                    ports: [ServicePort(protocol: .tcp, port: 80)],
                    backends: backends.map { ServiceBackend(ip: IPAddress(ipv4: 0x0AC8_0000 + $0)) })
            }
            return s
        }
        var observed = PlannerTests.converged
        // a: 1 backend, b: 3 000 (3 001 of 4 096 held); then a takes 2 000 new ones, b keeps 1 000.
        for (step, s) in [spec([5000], Array(1...3000)), spec(Array(6001...8000), Array(1...1000))].enumerated() {
            let desired = DesiredState(spec: s, deviceMTU: 1500)
            let plan = Planner.plan(
                desired: desired, observed: observed, ledger: nil, nativeDevice: "eth0", datapath: .bpf,
                attachModes: .clsact)
            #expect(Self.fits(plan, &observed.services, capacity: 4096), "step \(step)")
        }
        #expect(observed.services.backends.count == 3000)
    }

    /// A service whose new backends cannot sit next to its old ones (3 000 replaced on maps of
    /// 4 096) has no make-before-break order: the plan says so, with what to do, instead of an
    /// apply that fails halfway (the kernel refusing an insert) and rolls back.
    @Test func aServiceWhoseNewBackendsCannotFitBesideItsOldOnesIsAConflict() {
        // `big` at 10.100.0.1 and ten small services, each with one backend of its own.
        func spec(_ backends: ClosedRange<UInt32>, small: UInt32 = 20_000) -> NodeSpec {
            var s = Self.spec
            s.loadBalancer.mapCapacity = ServiceMapCapacity(entries: 4096)
            s.services =
                [Self.service("big", 0x0A64_0001, Array(backends))]
                + (0..<10).map { Self.service("small\($0)", 0x0A64_0100 + $0, [small + $0]) }
            return s
        }
        var observed = PlannerTests.converged
        func plan(_ s: NodeSpec) -> Planner.Plan {
            Planner.plan(
                desired: DesiredState(spec: s, deviceMTU: 1500), observed: observed, ledger: nil, nativeDevice: "eth0",
                datapath: .bpf, attachModes: .clsact)
        }
        let first = plan(spec(1...3000))
        #expect(first.conflicts.isEmpty && Self.fits(first, &observed.services, capacity: 4096))
        // A third of them replaced fits (1 000 new next to 3 000), all of them does not.
        let third = plan(spec(1001...4000))
        #expect(third.conflicts.isEmpty)
        #expect(Self.fits(third, &observed.services, capacity: 4096))
        // The small services' new backends fit (they are written first); big's is the one
        // conflict, said once.
        let all = plan(spec(10_001...13_000, small: 30_000))
        #expect(
            all.conflicts == [
                "ClusterIP 10.100.0.1:80/TCP needs 3000 new backends and the backends map has room for 1086 while the old ones are still in use; replace its backends over two applies, or raise loadBalancer.mapEntries (4096)"
            ])
    }

    /// Services map full and backends map short at once: one service grows (taking a backend
    /// another has) while two replace backends, one of them shrinking. The plan writes the
    /// shrinking one first, whose freed entry the growing one then takes: no conflict (the
    /// growing one first, the map would overfill), and the writes fit the maps in plan order.
    @Test func aServiceGrowsIntoTheEntryAnotherFreesWhenBothMapsAreFull() {
        // filler: 4 081 backends; a: 1; b and c: 5 each. 4 096 services map entries, 4 092
        // backends.
        func spec(a: [UInt32], b: [UInt32], c: [UInt32]) -> NodeSpec {
            var s = Self.spec
            s.loadBalancer.mapCapacity = ServiceMapCapacity(entries: 4096)
            s.services = [
                Self.service("a", 0x0A64_0001, a), Self.service("b", 0x0A64_0002, b),
                Self.service("c", 0x0A64_0003, c), Self.service("filler", 0x0A64_0004, Array(1...4081)),
            ]
            return s
        }
        let observed = Self.planInSteps(
            [
                spec(a: [5001], b: Array(6001...6005), c: Array(7001...7005)),
                // a takes filler's backend 1 (one entry more); b keeps 6001 and gets three new (one
                // entry less); c replaces three of five: six new backends, room for four.
                spec(a: [5001, 1], b: [6001, 6101, 6102, 6103], c: [7001, 7101, 7102, 7103, 7005]),
            ], capacity: 4096)
        #expect(observed.services.masters.count == 4 && observed.services.backends.count == 4091)
    }

    /// Services map full, backends map with room: a service that grows is listed before one
    /// that shrinks. The plan writes the shrinking one first, as the batch does, so that its
    /// writes one at a time (how a failed batch is tried again) fit the map too.
    @Test func aShrinkingServiceIsWrittenBeforeAGrowingOneWhenTheServicesMapIsFull() {
        // filler: 4 087 backends; a: 1; b: 5. 4 096 services map entries, 4 093 backends.
        func spec(a: [UInt32], b: [UInt32]) -> NodeSpec {
            var s = Self.spec
            s.loadBalancer.mapCapacity = ServiceMapCapacity(entries: 4096)
            s.services = [
                Self.service("a", 0x0A64_0001, a), Self.service("b", 0x0A64_0002, b),
                Self.service("filler", 0x0A64_0004, Array(1...4087)),
            ]
            return s
        }
        let observed = Self.planInSteps(
            [
                spec(a: [5001], b: Array(6001...6005)),
                // a: one new backend (room for it), one entry more; b: one entry less.
                spec(a: [5001, 5002], b: Array(6001...6004)),
            ], capacity: 4096)
        #expect(observed.services.slots[Self.key("10.100.0.1:80/TCP")]?.count == 2)
        #expect(observed.services.slots[Self.key("10.100.0.2:80/TCP")]?.count == 4)
    }

    /// Plans each spec in turn over what the plans before it wrote (from a converged node): each
    /// without a conflict, its writes fitting maps of `capacity` entries in plan order.
    static func planInSteps(_ specs: [NodeSpec], capacity: Int) -> ObservedState {
        var observed = PlannerTests.converged
        for (step, s) in specs.enumerated() {
            let plan = Planner.plan(
                desired: DesiredState(spec: s, deviceMTU: 1500), observed: observed, ledger: nil, nativeDevice: "eth0",
                datapath: .bpf, attachModes: .clsact)
            #expect(plan.conflicts.isEmpty, "step \(step): \(plan.conflicts)")
            #expect(Self.fits(plan, &observed.services, capacity: capacity), "step \(step)")
        }
        return observed
    }

    static func service(_ name: String, _ address: UInt32, _ backends: [UInt32]) -> ServiceSpec {
        ServiceSpec(
            name: "fill/\(name)", type: .clusterIP, clusterIP: IPAddress(ipv4: address),
            ports: [ServicePort(protocol: .tcp, port: 80)],
            backends: backends.map { ServiceBackend(ip: IPAddress(ipv4: 0x0AC8_0000 + $0)) })
    }

    @Test func aLiveFrontendKeepsItsIdOverAStaleReverseEntry() {
        var observed = ObservedServices()
        // Inconsistent maps: 10.96.18.68:80 has only a revnat entry at 7; the UDP DNS frontend
        // is live with id 7 in slot 0. Spec order lists the former first.
        observed.revnat[7] = Self.key("10.96.18.68:80/TCP")
        observed.masters[Self.key("10.96.0.10:53/UDP")] = FrontendMaster(count: 1, id: 7, flags: [])
        let ids = ServiceIDs.assign(Self.spec.serviceFrontends, observed: observed, capacity: .default)
        #expect(ids.frontends[Self.key("10.96.0.10:53/UDP")] == 7)
        #expect(ids.frontends[Self.key("10.96.18.68:80/TCP")] != 7)
        #expect(Set(ids.frontends.values).count == ids.frontends.count, "ids are unique")
    }

    /// Services changes' words, made from the change when read (one shared source per plan, no
    /// object per change): what goes, what comes, and what a frontend was and becomes, with
    /// backend addresses where the maps or the spec have them.
    @Test func servicesChangesSayWhatTheyChange() {
        let desired = DesiredState(spec: Self.spec, deviceMTU: 1500)
        var observed = PlannerTests.converged
        let (stale, dns) = (Self.key("10.1.1.1:1/TCP"), Self.key("10.96.0.10:53/UDP"))
        observed.services.masters[stale] = FrontendMaster(count: 1, id: 40, flags: [])
        observed.services.slots[stale] = [1: 9]
        observed.services.revnat[40] = stale
        observed.services.backends[9] = BackendAddress(address: IPAddress("10.0.9.9"), port: 1, protocol: .tcp)
        observed.services.masters[dns] = FrontendMaster(count: 2, id: 3, flags: [])
        observed.services.slots[dns] = [1: 9, 2: 77]  // (77: no backend under that id)
        let plan = Planner.plan(
            desired: desired, observed: observed, ledger: nil, nativeDevice: "eth0", datapath: .bpf,
            attachModes: .clsact)
        let lines = plan.changes.filter { $0.kind == .service }.map(\.description)
        for line in [
            "- ClusterIP 10.1.1.1:1/TCP: id 40, 10.0.9.9:1  [node]",
            "+ backend 1: 10.0.1.15:8080/TCP  [node]",
            "+ NodePort 172.18.0.2:32000/TCP: id 2, 10.0.1.15:8080, 10.0.2.204:9090  [node]",
            "~ ClusterIP 10.96.0.10:53/UDP: id 3, 10.0.9.9:1, backend 77 -> id 3, 10.0.1.15:53  [node]",
            "- frontend id 40: 10.1.1.1:1/TCP  [node]",
            "- backend 9: 10.0.9.9:1/TCP  [node]",
        ] {
            #expect(lines.contains(line), "\(line) in \(lines)")
        }
        let update = plan.changes.first { $0.subject == "ClusterIP 10.96.0.10:53/UDP" }
        #expect(
            update?.mismatch
                == "ClusterIP 10.96.0.10:53/UDP [node]: wanted id 3, 10.0.1.15:53, found id 3, 10.0.9.9:1, backend 77")
        let again = Planner.plan(
            desired: desired, observed: observed, ledger: nil, nativeDevice: "eth0", datapath: .bpf,
            attachModes: .clsact)
        #expect(again.changes == plan.changes, "words and all")
    }

    @Test func staleFrontendsGoFirstThenBackendsThenFrontends() {
        let desired = DesiredState(spec: Self.spec, deviceMTU: 1500)
        var observed = PlannerTests.converged
        observed.services.masters[Self.key("10.1.1.1:1/TCP")] = FrontendMaster(count: 1, id: 40, flags: [])
        observed.services.slots[Self.key("10.1.1.1:1/TCP")] = [1: 9]
        observed.services.revnat[40] = Self.key("10.1.1.1:1/TCP")
        observed.services.backends[9] = BackendAddress(address: IPAddress("10.0.9.9"), port: 1, protocol: .tcp)
        let plan = Planner.plan(
            desired: desired, observed: observed, ledger: nil, nativeDevice: "eth0", datapath: .bpf,
            attachModes: .clsact
        )
        let subjects = plan.changes.filter { $0.kind == .service }.map(\.subject)
        let firstFrontend = subjects.firstIndex { $0.hasPrefix("ClusterIP 10.96") }!
        #expect(subjects.first == "datapath settings")
        #expect(subjects.prefix(firstFrontend).filter { $0.hasPrefix("backend ") }.count == 5, "\(subjects)")
        #expect(
            Array(subjects[3..<5]) == ["ClusterIP 10.1.1.1:1/TCP", "backend 9"],
            "the stale frontend, then its backend, before anything is written: \(subjects)")
        #expect(subjects.last == "frontend id 40", "its id goes last")
        #expect(subjects.contains("node address 172.18.0.2") && subjects.contains("node address 172.18.0.3"))
        #expect(!subjects.contains { $0.hasPrefix("socket LB") }, "a spec built in Swift has socket LB off")
    }

    /// The order a batch of frontend writes goes out in, written out by hand: a frontend growing
    /// 2 → 3 gets its id and new slot before its slot 0 says 3; one shrinking 3 → 2 says 2 before
    /// its third slot goes; a frontend going away loses slot 0 (no new choices) before its slots.
    /// A packet reading slot 0 at any step finds every slot it may choose. The shrinking one goes
    /// first, though planned second: the map never holds the grown one and the surplus at once.
    /// One left without slot 0 (an interrupted write) adds that entry, though it frees a slot: it
    /// goes with those that add, after the others have freed theirs.
    @Test func batchedFrontendWritesAreMakeBeforeBreak() {
        func previous(_ id: FrontendID, _ slots: [UInt16: UInt32]) -> FrontendSnapshot {
            FrontendSnapshot(master: FrontendMaster(count: UInt16(slots.count), id: id, flags: []), slots: slots)
        }
        var grow = ServiceMaps.Batch()
        grow.putFrontend(
            Self.key("10.96.0.10:80/TCP"), FrontendEntry(id: 1, flags: [], backendIDs: [11, 12, 13]),
            previous: previous(1, [1: 11, 2: 12]))
        grow.putFrontend(
            Self.key("10.96.0.10:53/UDP"), FrontendEntry(id: 2, flags: [], backendIDs: [21, 22]),
            previous: previous(2, [1: 21, 2: 22, 3: 23]))
        grow.putFrontend(
            Self.key("10.96.0.10:443/TCP"), FrontendEntry(id: 3, flags: [], backendIDs: [31]),
            previous: FrontendSnapshot(master: nil, slots: [1: 31, 2: 32]))
        #expect(
            grow.steps.map(\.description) == [
                "put revnat 1 2 3",
                "put services 10.96.0.10:53/UDP#0", "delete services 10.96.0.10:53/UDP#3",
                "put services 10.96.0.10:80/TCP#3", "put services 10.96.0.10:80/TCP#0 10.96.0.10:443/TCP#0",
                "delete services 10.96.0.10:443/TCP#2",
            ])
        var removal = ServiceMaps.Batch()
        removal.removeFrontend(Self.key("10.96.0.99:443/TCP"), slots: [2: 32, 1: 31])
        #expect(
            removal.steps.map(\.description) == [
                "delete services 10.96.0.99:443/TCP#0", "delete services 10.96.0.99:443/TCP#1 10.96.0.99:443/TCP#2",
            ])
        var backends = ServiceMaps.Batch()
        backends.putBackend(13, BackendAddress(address: IPAddress("10.0.2.7"), port: 8080, protocol: .tcp))
        backends.removeBackend(23)
        #expect(backends.steps.map(\.description) == ["delete backends 23", "put backends 13"])
    }

    /// A node whose service maps hold exactly what `spec` wants, written out by hand: settings,
    /// both nodes, four backends, five frontends (ids in spec order; any ids the maps hold are
    /// kept) with their slots and reverse entries.
    static var converged: ObservedState {
        var observed = PlannerTests.converged
        // Every field set here (the value only starts from the spec's to have one to fill in).
        var settings = NodeSettings(spec: Self.spec)
        settings.routerIP = IPAddress("10.0.2.184")
        settings.nodeIP = IPAddress("172.18.0.2")
        settings.nativeCIDR = IPPrefix("10.0.0.0/8")
        settings.podCIDR = IPPrefix("10.0.2.0/24")
        (settings.services, settings.packetLB, settings.masquerade, settings.externalFrontends) = (
            true, true, true, false
        )
        (settings.nativeIfindex, settings.maglevSize, settings.outsideClientMax) = (2, 0, 0)
        observed.services.settings = settings
        observed.services.nodes = [IPAddress("172.18.0.2"): .local, IPAddress("172.18.0.3"): .remote]
        observed.services.backends = [
            1: BackendAddress(address: IPAddress("10.0.1.15"), port: 8080, protocol: .tcp),
            2: BackendAddress(address: IPAddress("10.0.2.204"), port: 9090, protocol: .tcp),
            3: BackendAddress(address: IPAddress("10.0.1.15"), port: 53, protocol: .udp),
            4: BackendAddress(address: IPAddress("10.0.1.15"), port: 53, protocol: .tcp),
        ]
        let frontends: [(String, FrontendID, FrontendFlags, [UInt32])] = [
            ("10.96.18.68:80/TCP", 1, [], [1, 2]), ("172.18.0.2:32000/TCP", 2, .nodePort, [1, 2]),
            ("0.0.0.0:32000/TCP", 3, .nodePort, [1, 2]), ("10.96.0.10:53/UDP", 4, [], [3]),
            ("10.96.0.10:53/TCP", 5, [], [4]),
        ]
        for (frontend, id, flags, backends) in frontends {
            let key = Self.key(frontend)
            observed.services.masters[key] = FrontendMaster(count: UInt16(backends.count), id: id, flags: flags)
            observed.services.slots[key] = Dictionary(
                uniqueKeysWithValues: backends.enumerated().map { (UInt16($0.offset + 1), $0.element) })
            observed.services.revnat[id] = key
        }
        return observed
    }

    @Test func aConvergedServiceTableNeedsNothingAndDriftIsRepaired() {
        let desired = DesiredState(spec: Self.spec, deviceMTU: 1500)
        let observed = Self.converged
        func serviceChanges(_ o: ObservedState) -> [String] {
            Planner.plan(
                desired: desired, observed: o, ledger: nil, nativeDevice: "eth0", datapath: .bpf, attachModes: .clsact
            )
            .changes.filter { $0.kind == .service }.map { "\($0.action.rawValue) \($0.subject)" }
        }
        #expect(serviceChanges(observed) == [])
        // A slot beyond the count (an interrupted shrink) makes the frontend incomplete: rewritten.
        var drifted = observed
        drifted.services.slots[Self.key("10.96.18.68:80/TCP")]![3] = 99
        #expect(serviceChanges(drifted) == ["update ClusterIP 10.96.18.68:80/TCP"])
    }

    /// Entries of the backends and reverse-NAT arrays that are not zeros yet decode to nothing
    /// (a protocol of 0 or one nodenet never writes: tampering) are cleared, unless the plan
    /// writes a backend or a frontend's id there anyway; the plan shows the bytes it found.
    @Test func malformedArrayEntriesAreCleared() {
        let desired = DesiredState(spec: Self.spec, deviceMTU: 1500)
        var observed = Self.converged
        // Backend 3 and frontend id 4's reverse entry are wanted: found malformed, rewritten.
        observed.services.backends[3] = nil
        observed.services.revnat[4] = nil
        observed.services.malformed = [
            MalformedArrayEntry(.backends, id: 3, nodenet_backend(address: 7, port: 0, proto: 0, flags: 0)),
            MalformedArrayEntry(.backends, id: 900, nodenet_backend(address: 0, port: 0, proto: 0, flags: 9)),
            MalformedArrayEntry(.revnat, id: 4, nodenet_revnat(address: 7, port: 0, proto: 99, pad: 0)),
            MalformedArrayEntry(.revnat, id: 901, nodenet_revnat(address: 0, port: 0x5000, proto: 0, pad: 0)),
        ]
        let plan = Planner.plan(
            desired: desired, observed: observed, ledger: nil, nativeDevice: "eth0", datapath: .bpf,
            attachModes: .clsact)
        let lines = plan.changes.filter { $0.kind == .service }.map(\.description)
        #expect(
            lines.filter { $0.contains("bytes") } == [
                "- backend 900: bytes 00 00 00 00 00 00 00 09  [node]",
                "- frontend id 901: bytes 00 00 00 00 00 50 00 00  [node]",
            ], "\(lines)")
        #expect(lines.contains("+ backend 3: 10.0.1.15:53/UDP  [node]"), "\(lines)")
        #expect(lines.contains { $0.hasPrefix("~ ClusterIP 10.96.0.10:53/UDP: ") }, "its reverse entry: \(lines)")
        let cleared = plan.changes.compactMap {
            if case .clearMalformed(let e)? = $0.change.service { e } else { nil }
        }
        #expect(cleared.map(\.id) == [900, 901])
        // The plan carried out (as the kernel would): no malformed entry is left, and nothing
        // is left to do.
        var after = observed
        #expect(Self.fits(plan, &after.services, capacity: Int(ServiceMapCapacity.default.entries)))
        #expect(after.services.malformed.isEmpty, "cleared, or written over: \(after.services.malformed)")
        let again = Planner.plan(
            desired: desired, observed: after, ledger: nil, nativeDevice: "eth0", datapath: .bpf, attachModes: .clsact)
        #expect(again.changes.filter { $0.kind == .service }.map(\.description) == [])
    }

    @Test func anOlderBuildsSocketLinkBesideTheCurrentOneIsRemoved() {
        var spec = Self.spec
        spec.socketLB = SocketLBSettings(cgroup: "/sys/fs/cgroup/unified/nodenet-test")
        let desired = DesiredState(spec: spec, deviceMTU: 1500)
        var observed = Self.converged
        observed.services.settings = desired.settings  // socket LB's settings: not what this test is about
        observed.services.settings?.nativeIfindex = 2
        observed.socketCgroupID = 4242
        observed.pins.socketLinks = Set(CgroupLink.Hook.allCases.map { BPFFSLayout.socketLinkName($0, cgroupID: 4242) })
        // Left by an interrupted upgrade: an older build's link on the same hook, still attached.
        let stale = "connect4@4242@0000000000000000"
        observed.pins.socketLinks.insert(stale)
        let changes = Planner.plan(
            desired: desired, observed: observed, ledger: nil, nativeDevice: "eth0", datapath: .bpf,
            attachModes: .clsact
        )
        .changes.filter { $0.kind == .service }.map { "\($0.action.rawValue) \($0.subject)" }
        #expect(changes == ["delete socket LB link \(stale)"], "the current links stay, the older one goes: \(changes)")
    }

    @Test func socketLBAndMasqueradeInTheSpecFile() throws {
        var base = Self.spec
        base.pods = []  // loading checks that pod namespaces exist
        var json = try JSONSerialization.jsonObject(with: base.jsonData()) as! [String: Any]
        json["socketLB"] = ["cgroup": "/sys/fs/cgroup/unified/kubepods"]
        json["masquerade"] = false
        let spec = try NodeSpec.load(JSONSerialization.data(withJSONObject: json))
        #expect(spec.socketLB.cgroup == "/sys/fs/cgroup/unified/kubepods" && !spec.masquerade)
        json.removeValue(forKey: "socketLB")
        #expect(
            try NodeSpec.load(JSONSerialization.data(withJSONObject: json)).socketLB.cgroup == CgroupV2.root,
            "a spec file defaults to the cgroup v2 root")
        json["socketLB"] = ["enabled": false]
        #expect(try NodeSpec.load(JSONSerialization.data(withJSONObject: json)).socketLB.enabled == false)
        json["socketLB"] = ["cgroup": "relative/../x"]
        #expect(throws: SpecError.self) { try NodeSpec.load(JSONSerialization.data(withJSONObject: json)) }
        #expect(try NodeSpec.load(base.jsonData()) == base, "round trip (socket LB off stays off)")
    }

    @Test func settingsFollowTheSpec() {
        var spec = Self.spec
        var s = NodeSettings(spec: spec)
        #expect(s.services && s.packetLB && s.masquerade && s.nativeCIDR == IPPrefix("10.0.0.0/8"))
        #expect(NodeSettings(s.mapValue) == s, "C layout round trip")
        spec.socketLB = SocketLBSettings(cgroup: "/sys/fs/cgroup/x")
        spec.masquerade = false
        s = NodeSettings(spec: spec)
        #expect(s.services && !s.packetLB && !s.masquerade)
        spec.datapath.mode = .kernel
        #expect(
            DesiredState(spec: spec, deviceMTU: 1500).settings == nil
                && DesiredState(spec: spec, deviceMTU: 1500).frontends.isEmpty)
    }

    @Test func conntrackPartnersPairBothDirections() throws {
        /// The tuple as (saddr, daddr, sport, dport, kind).
        func fields(_ t: nodenet_tuple) -> [UInt32] {
            [t.saddr, t.daddr, UInt32(t.sport), UInt32(t.dport), UInt32(t.kind)]
        }
        func entry(_ address: UInt32, _ port: UInt16) -> nodenet_ct_entry {
            var e = nodenet_ct_entry()
            (e.address, e.port) = (address, port)
            return e
        }
        var k = nodenet_tuple()
        (k.saddr, k.daddr, k.sport, k.dport, k.proto, k.kind) = (1, 2, 10, 20, 6, UInt8(NODENET_CT_SERVICE.rawValue))
        // A service flow 1:10 -> 2:20 sent to backend 3:30: the reply comes from 3:30 to 1:10.
        let reply = try #require(Conntrack.partner(k, entry(3, 30)))
        #expect(fields(reply) == [3, 1, 30, 10, NODENET_CT_REPLY.rawValue])
        #expect(Conntrack.TupleKey(try #require(Conntrack.partner(reply, entry(2, 20)))) == Conntrack.TupleKey(k))
        // Masqueraded 1:10 -> 2:20 as 3:30: what comes back is 2:20 -> 3:30.
        k.kind = UInt8(NODENET_CT_NAT_OUT.rawValue)
        let natIn = try #require(Conntrack.partner(k, entry(3, 30)))
        #expect(fields(natIn) == [2, 3, 20, 30, NODENET_CT_NAT_IN.rawValue])
        #expect(Conntrack.TupleKey(try #require(Conntrack.partner(natIn, entry(1, 10)))) == Conntrack.TupleKey(k))
    }
}

/// Backend conditions (KEP-1669) as the frontends carry them, without a kernel.
struct ServiceConditionTests {
    func frontend(_ backends: [ServiceBackend]) -> DesiredFrontend {
        let spec = NodeSpec(
            node: LocalNode(
                name: "n", device: "eth0", address: IPAddress("172.18.0.2"), podCIDR: IPPrefix("10.0.2.0/24")),
            services: [
                ServiceSpec(
                    name: "web", type: .clusterIP, clusterIP: IPAddress("10.96.0.1"), ports: [ServicePort(port: 80)],
                    backends: backends)
            ])
        return spec.serviceFrontends[0]
    }

    @Test func readyBackendsTakeNewFlowsAndTerminatingOnesKeepTheirs() {
        let a = ServiceBackend(ip: IPAddress("10.0.1.1"))
        let b = ServiceBackend(ip: IPAddress("10.0.1.2"), ready: false, serving: true, terminating: true)
        let c = ServiceBackend(ip: IPAddress("10.0.1.3"), ready: false)
        var f = frontend([a, b, c])
        #expect(f.backends.map(\.address) == [IPAddress("10.0.1.1")])
        #expect(f.retained.map(\.address) == [IPAddress("10.0.1.2")])
        // None ready: the serving ones take new flows, terminating included.
        f = frontend([b, c])
        #expect(f.backends.map(\.address) == [IPAddress("10.0.1.2")] && f.retained.isEmpty)
        // Nothing serving: no backend (the frontend refuses), the terminating one keeps its flows.
        let d = ServiceBackend(ip: IPAddress("10.0.1.4"), ready: false, serving: false, terminating: true)
        f = frontend([c, d])
        #expect(f.backends.isEmpty && f.retained.map(\.address) == [IPAddress("10.0.1.4")])
    }

    @Test func conditionsAreReadWrittenAndChecked() throws {
        let text = #"""
            {"apiVersion":"nodenet/v1","node":{"name":"n","device":"eth0","address":"172.18.0.2","podCIDR":"10.0.2.0/24"},
             "services":[{"name":"web","clusterIP":"10.96.0.1","ports":[{"port":80}],
               "backends":[{"ip":"10.0.1.1"},{"ip":"10.0.1.2","ready":false,"serving":true,"terminating":true}]}]}
            """#
        let spec = try NodeSpec.load(Data(text.utf8), namespaceExists: { _ in true })
        #expect(spec.services[0].backends[1].terminating && spec.services[0].backends[1].serving)
        #expect(try NodeSpec.load(spec.jsonData(), namespaceExists: { _ in true }).services == spec.services)
        let both = text.replacingOccurrences(of: #""ready":false,"serving":true,"#, with: "")
        let error = try #require(throws: SpecError.self) {
            try NodeSpec.load(Data(both.utf8), namespaceExists: { _ in true })
        }
        #expect(error.problems.map(\.path) == ["services[0].backends[1].terminating"], "\(error)")
    }
}
