import BPF
import Foundation
import Netlink
import NodeNet

/// The seed walkthrough as checks against a running lab (`nodenetd lab demo`): each observation
/// of shared/design/SEED-WALKTHROUGH.md is run and written out as PASS / FAIL / NOT YET with its
/// evidence. `runClusterChecks` adds those of a lab whose control plane is etcd.
public final class LabWalkthrough {
    public let cluster: LabCluster
    public private(set) var passed = 0, failed = 0, pending = 0
    private let print: (String) -> Void

    /// `output` receives every line (the CLI prints them).
    public init(cluster: LabCluster, output: @escaping (String) -> Void) {
        self.cluster = cluster
        self.print = output
    }

    enum Outcome { case pass, fail, notYet(String) }

    func report(_ title: String, _ outcome: Outcome, _ evidence: [String]) {
        switch outcome {
        case .pass:
            passed += 1
            print("PASS     \(title)")
        case .fail:
            failed += 1
            print("FAIL     \(title)")
        case .notYet(let why):
            pending += 1
            print("NOT YET  \(title) — \(why)")
        }
        for line in evidence { print("           \(line)") }
    }

    func check(_ title: String, _ body: () throws -> (Bool, [String])) {
        do {
            let (ok, evidence) = try body()
            report(title, ok ? .pass : .fail, evidence)
        } catch {
            report(title, .fail, ["\(error)"])
        }
    }

    func ns(_ node: String) -> NamespaceReference { .named(cluster.namespace(ofNode: node)) }
    func podNS(_ pod: String) -> NamespaceReference { .named(cluster.namespace(ofPod: pod)) }

    func routes(_ ns: NamespaceReference) throws -> [String] {
        let s = try NetlinkSocket(namespace: ns)
        let names = Dictionary(uniqueKeysWithValues: try s.links().map { ($0.index, $0.name) })
        return try s.routes(RouteFilter()).map { r in
            var line =
                r.isDefault
                ? "default"
                : (r.destination.length == 32 ? r.destination.address.description : r.destination.description)
            if let g = r.gateway { line += " via \(g)" }
            if let o = r.interfaceIndex { line += " dev \(names[o] ?? "?")" }
            if r.protocol == .kernel { line += " proto kernel" }
            if r.scope != .universe { line += " scope \(r.scope)" }
            if let src = r.preferredSource { line += " src \(src)" }
            if let mtu = r.mtu { line += " mtu \(mtu)" }
            return line
        }
    }

    /// ping from a pod via `lab exec`: (received, ttl, output).
    func ping(from pod: String, _ address: String) throws -> (Int, Int?, String) {
        let (_, out) = try LabRuntime.capture(
            lab: cluster.name, pod, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "-w", "10", address])
        let received =
            out.range(of: #"(\d+) received"#, options: .regularExpression).map {
                Int(out[$0].split(separator: " ")[0]) ?? 0
            } ?? 0
        let ttl = out.range(of: #"ttl=(\d+)"#, options: .regularExpression).map { Int(out[$0].dropFirst(4)) } ?? nil
        return (received, ttl, out)
    }

    public func runAll(interrupted: () -> Bool) {
        print("\n-- kernel state (seed: ip a / ip r in the pod `net` and on worker2)")
        check("pod net holds its IP as /32 on eth0") {
            let s = try NetlinkSocket(namespace: podNS("net"))
            let eth0 = try s.link(named: "eth0")!
            let a = try s.addresses(family: .inet, interfaceIndex: eth0.index).map {
                "inet \($0.prefix) scope \($0.scope) eth0"
            }
            return (a == ["inet 10.0.2.32/32 scope global eth0"], a)
        }
        check("pod net routes: default via the router IP, the router IP on-link") {
            let r = try routes(podNS("net"))
            return (Set(r) == ["default via 10.0.2.184 dev eth0 mtu 1500", "10.0.2.184 dev eth0 scope link"], r)
        }
        check("worker2: direct routes to the other nodes' pod CIDRs, own pod CIDR via cilium_host") {
            let r = try routes(ns("worker2"))
            let wanted: Set<String> = [
                "10.0.0.0/24 via 172.18.0.4 dev eth0", "10.0.1.0/24 via 172.18.0.3 dev eth0",
                "10.0.2.0/24 via 10.0.2.184 dev cilium_host src 10.0.2.184", "10.0.2.184 dev cilium_host scope link",
            ]
            return (wanted.isSubset(of: Set(r)), r)
        }
        check("worker2: cilium_host@cilium_net, up, holding 10.0.2.184/32 scope link; one lxc veth per pod") {
            let s = try NetlinkSocket(namespace: ns("worker2"))
            let links = try s.links()
            let host = links.first { $0.name == "cilium_host" }
            let net = links.first { $0.name == "cilium_net" }
            let a = try host.map { try s.addresses(family: .inet, interfaceIndex: $0.index) } ?? []
            let lxcs = links.filter { NodeNetNames.isEndpointDevice($0.name) }.map(\.name)
            let ok =
                host?.isUp == true && net?.isUp == true && host?.peerIndex == net?.index
                && a.map { "\($0.prefix) \($0.scope)" } == ["10.0.2.184/32 link"] && lxcs.count == 2
            return (
                ok,
                [
                    "cilium_host@cilium_net mtu \(host?.mtu ?? 0) \(a.map { "\($0.prefix) scope \($0.scope)" }.joined())",
                    "endpoints: \(lxcs.joined(separator: " "))",
                ]
            )
        }
        if interrupted() { return }

        print("\n-- same node: net 10.0.2.32 -> 10.0.2.204 (both on worker2)")
        pathCheck(from: "net", to: "10.0.2.204", nodes: ["worker2"], expectTTL: 63)
        print("\n-- cross node: net 10.0.2.32 (worker2) -> 10.0.1.15 (worker)")
        pathCheck(from: "net", to: "10.0.1.15", nodes: ["worker2", "worker"], expectTTL: 62)
        if interrupted() { return }

        print("\n-- the DaemonSet's HTTP servers, from net")
        for node in cluster.nodes {
            for pod in node.pods where pod.name != "net" {
                check("curl \(pod.ip):80 from net answers from \(pod.name) on \(node.name), source IP kept") {
                    let r = try LabProbe.httpGet(from: podNS("net"), to: pod.ip)
                    let log =
                        (try? String(contentsOfFile: "\(cluster.runDirectory)/\(node.name)/serve.log", encoding: .utf8))
                        ?? ""
                    let seen = log.split(separator: "\n").last { $0.hasPrefix("\(pod.name) http \(r.local) ") }
                    let want = "PodName: \(pod.name) | PodIP: eth0 \(pod.ip)/32"
                    return (
                        r.body.trimmingCharacters(in: .newlines) == want && seen != nil,
                        [
                            "\(r.body.trimmingCharacters(in: .newlines))",
                            "server log: \(seen.map(String.init) ?? "no request from \(r.local)")",
                        ]
                    )
                }
            }
        }

        print("\n-- services (kube-proxy replacement, socket LB on each node's cgroup)")
        check("nodenetd service list on worker2: 10.96.18.68:80, 172.18.0.2:32000 and 0.0.0.0:32000, 3 backends each") {
            let spec = cluster.spec(forNode: "worker2")!
            let rows = try NodeController(spec: spec, namespace: ns("worker2")).services()
            let wanted = ["10.96.18.68:80": "ClusterIP", "172.18.0.2:32000": "NodePort", "0.0.0.0:32000": "NodePort"]
            let ok = wanted.allSatisfy { f, type in
                rows.contains { $0.frontend == f && $0.type == type && $0.backends.count == 3 }
            }
            return (
                ok,
                rows.map { r in
                    "\(r.id)  \(r.frontend)/\(r.protocol)  \(r.type)  "
                        + r.backends.map { "\($0.index) => \($0.address):\($0.port)" }.joined(separator: ", ")
                }
            )
        }
        check(
            "curl 172.18.0.2:32000 from net: a backend answers; the connection went straight to it (translated at connect())"
        ) {
            let p = try LabRuntime.probe(lab: cluster.name, from: "net", to: "172.18.0.2:32000")
            guard let r = p.requests.first, let answer = r.answer, let local = r.local else {
                return (false, ["\(p.requests.first?.error ?? "no answer")"])
            }
            // The backend's own log names the client as the pod itself: no NAT on the way.
            let logs = cluster.nodes.map {
                (try? String(contentsOfFile: "\(cluster.runDirectory)/\($0.name)/serve.log", encoding: .utf8)) ?? ""
            }.joined(separator: "\n")
            let seen = logs.split(separator: "\n").last { $0.contains(" http \(local) ") }
            return (
                seen != nil && r.peer == "172.18.0.2:32000",
                [
                    answer, "getpeername: \(r.peer ?? "-") (the service address)",
                    "backend log: \(seen.map(String.init) ?? "no request from \(local)")",
                ]
            )
        }
        check("300 requests to the ClusterIP 10.96.18.68:80 from net spread over the 3 backends (each >= 15 %)") {
            let p = try LabRuntime.probe(lab: cluster.name, from: "net", to: "10.96.18.68:80", count: 300)
            let ok = p.failures == 0 && p.answers.count == 3 && p.answers.values.allSatisfy { $0 >= 45 }
            return (ok, p.answers.sorted { $0.key < $1.key }.map { "\($0.value)  \($0.key)" })
        }
        check("curl 10.96.18.68:80 from the node worker2 itself (a host process)") {
            let p = try LabRuntime.probe(lab: cluster.name, from: "worker2", to: "10.96.18.68:80")
            return (p.failures == 0, [p.requests.first?.answer ?? p.requests.first?.error ?? "-"])
        }
        for node in cluster.nodes {
            check(
                "NodePort from the external host: \(node.address):32000 (packet path: BPF conntrack, remote backends via the node's address)"
            ) {
                let p = try LabRuntime.probe(
                    lab: cluster.name, from: "external", to: "\(node.address):32000", count: 20)
                return (
                    p.failures == 0 && p.answers.count >= 2,
                    p.answers.sorted { $0.key < $1.key }.map { "\($0.value)  \($0.key)" }
                )
            }
        }
        check("pod traffic leaving nativeRoutingCIDR is masqueraded (net -> 172.18.0.1 arrives from 172.18.0.2)") {
            let (received, _, out) = try ping(from: "net", "172.18.0.1")
            let ct = try Conntrack.list(bpffsDirectory: cluster.bpffsDirectory(ofNode: "worker2"))
            let nat = ct.first {
                $0.kind == "nat-out" && $0.source.hasPrefix("10.0.2.32:") && $0.destination.hasPrefix("172.18.0.1:")
            }
            return (
                received == 3 && nat?.translated.hasPrefix("172.18.0.2:") == true,
                [
                    out.split(separator: "\n").first { $0.contains("packets transmitted") }.map(String.init) ?? out,
                    "conntrack: \(nat.map { "\($0.protocol) \($0.source) -> \($0.destination) as \($0.translated)" } ?? "no nat-out entry")",
                ]
            )
        }
    }

    /// ping, then the counters the seed read with tcpdump: cilium_host sees nothing, and (with
    /// the BPF datapath) the node's IP stack forwards nothing.
    func pathCheck(from pod: String, to address: String, nodes: [String], expectTTL: Int) {
        do {
            let taps = try nodes.map { try FrameTap(device: "cilium_host", in: ns($0)) }
            let forwardBefore = try nodes.map { try LabProbe.forwardedDatagrams(in: ns($0)) }
            let (received, ttl, out) = try ping(from: pod, address)
            let hostDelta = taps.map { $0.ipv4Frames() }
            let forwardDelta = try zip(nodes, forwardBefore).map {
                try LabProbe.forwardedDatagrams(in: ns($0.0)) - $0.1
            }
            let summary =
                out.split(separator: "\n").first { $0.contains("packets transmitted") }.map(String.init) ?? out
            report(
                "ping \(address) from \(pod): 3 replies, ttl \(expectTTL)",
                received == 3 && ttl == expectTTL ? .pass : .fail, [summary, "ttl=\(ttl.map(String.init) ?? "?")"])
            report(
                "cilium_host sees 0 IPv4 packets on \(nodes.joined(separator: " and "))",
                hostDelta.allSatisfy { $0 == 0 } ? .pass : .fail,
                zip(nodes, hostDelta).map { "\($0.0) cilium_host IPv4 frames: \($0.1)" })
            let forwarded = zip(nodes, forwardDelta).map { "\($0.0) Ip ForwDatagrams +\($0.1)" }
            if forwardDelta.allSatisfy({ $0 == 0 }) {
                report(
                    "no IP forwarding on \(nodes.joined(separator: " and ")) (BPF redirect past the routing stack)",
                    .pass, forwarded)
            } else {
                report(
                    "no IP forwarding on \(nodes.joined(separator: " and ")) (BPF redirect past the routing stack)",
                    .notYet("kernel datapath: the node's IP stack forwards pod traffic; the BPF redirect is issue 5"),
                    forwarded)
            }
        } catch {
            report("ping \(address) from \(pod)", .fail, ["\(error)"])
        }
    }
}
