import BPF
import Foundation

/// Sockets for one node: its own namespace and the pods' namespaces (opened together on
/// one helper thread, cached for the session).
public final class NodeSession: @unchecked Sendable {
    public let namespace: NamespaceReference
    public let node: NetlinkSocket
    private var podSockets: [String: NetlinkSocket] = [:]
    /// Why a pod namespace could not be opened, by `netns`.
    private(set) var podErrors: [String: String] = [:]

    public init(namespace: NamespaceReference = .current) throws {
        self.namespace = namespace
        node = try NetlinkSocket(namespace: namespace)
    }

    /// Sockets for the given pod namespaces; namespaces that cannot be entered are left out.
    func podSockets(_ netnsNames: [String]) -> [String: NetlinkSocket] {
        let missing = netnsNames.filter { podSockets[$0] == nil }
        if !missing.isEmpty {
            for (name, result) in zip(missing, NetlinkSocket.open(in: missing.map(NamespaceReference.init))) {
                switch result {
                case .success(let socket): podSockets[name] = socket
                case .failure(let error): podErrors[name] = "\(error)"
                }
            }
        }
        return podSockets.filter { netnsNames.contains($0.key) }
    }

    func podSocket(_ netns: String) throws -> NetlinkSocket {
        if let s = podSockets(Array([netns]))[netns] { return s }
        throw NodeNetError.missing("network namespace \(netns) cannot be entered")
    }

    func socket(for scope: NamespaceScope) throws -> NetlinkSocket {
        switch scope {
        case .node: return node
        case .pod(let netns): return try podSocket(netns)
        }
    }

    /// The MTU of `device` in the node's namespace.
    public func mtu(of device: String) throws -> UInt32? { try node.link(named: device)?.mtu }

    /// Reads everything the plan compares: node links/addresses/owned routes, the sysctls the
    /// desired state names, and each pod namespace's links/addresses/owned routes.
    public func observe(_ desired: DesiredState, spec: NodeSpec? = nil, formerBPFFSDirectories: [String] = []) throws -> ObservedState {
        // Sockets pin their namespaces: a cached one would keep reading a pod namespace the
        // runtime has deleted and recreated under the same name. Open them afresh.
        podSockets = [:]
        podErrors = [:]
        let nodeState = try ObservedNamespace.read(node)
        let sysctls = try Sysctl.read(desired.sysctls.map(\.key), in: namespace)
        let netnsNames = desired.endpoints.map(\.pod.netns)
        var pods: [String: ObservedNamespace] = [:]
        for (netns, socket) in podSockets(netnsNames) {
            // A pod namespace can disappear between opening and reading: treat it as gone.
            do { pods[netns] = try ObservedNamespace.read(socket) } catch { podErrors[netns] = "\(error)" }
        }
        var observed = ObservedState(node: nodeState, sysctls: sysctls, pods: pods, podErrors: podErrors.filter { pods[$0.key] == nil })
        if let spec {
            // tc filters on the devices the datapath attaches to (ours or left over).
            for device in desired.endpoints.map(\.hostDevice) + [spec.node.device] {
                guard let link = nodeState.links[device] else { continue }
                observed.ingressFilters[device] = (try? node.filters(interfaceIndex: link.index, direction: .ingress)) ?? []
            }
            if spec.datapath.mode == .bpf {
                observed.incompatibleMaps = try DatapathObjects.incompatiblePins(spec)
                observed.oldPins = ((try? FileManager.default.contentsOfDirectory(atPath: spec.bpffsDirectory)) ?? [])
                    .filter { $0.hasSuffix("_old") }.map { String($0.dropLast(4)) }.sorted()
                // An incompatible endpoints map cannot be read with this build's layout.
                if observed.incompatibleMaps["nodenet_endpoints"] == nil { observed.endpointEntries = try DatapathObjects.pinnedEntries(spec) }
                // The service maps go together: ids in one refer to entries of the others, so
                // one of another layout sets all of them aside (new, consistent maps are filled).
                let incompatibleServiceMaps = ServiceMaps.names.intersection(observed.incompatibleMaps.keys)
                if let first = incompatibleServiceMaps.sorted().first {
                    for name in ServiceMaps.names where observed.incompatibleMaps[name] == nil && FileManager.default.fileExists(atPath: "\(spec.bpffsDirectory)/\(name)") {
                        observed.incompatibleMaps[name] = "replaced together with \(first)"
                    }
                }
                if incompatibleServiceMaps.isEmpty {
                    observed.services = try ObservedServices.read(bpffsDirectory: spec.bpffsDirectory)
                }
            }
            observed.socketLinks = Set(((try? FileManager.default.contentsOfDirectory(atPath: spec.socketLinkDirectory)) ?? []).filter(CgroupLink.Hook.parsePin))
            observed.socketCgroupID = spec.socketLB.cgroup.flatMap { CgroupLink.id(of: $0) }
            for directory in formerBPFFSDirectories where directory != spec.bpffsDirectory {
                let pins = DatapathObjects.ownedPins(in: directory)
                if !pins.isEmpty { observed.formerPins[directory] = pins }
            }
            // Only pins named like ours: the directory may hold others' (never pruned).
            observed.tcxLinks = Set(((try? FileManager.default.contentsOfDirectory(atPath: spec.linkDirectory)) ?? [])
                .filter { DatapathProgram.parseLinkPin($0) != nil })
            // A pin is not proof: the link may be detached, elsewhere, or run another program.
            for name in observed.tcxLinks {
                if let problem = TCXLinkProblem.check(directory: spec.linkDirectory, name: name) { observed.tcxLinkProblems[name] = problem }
            }
        }
        return observed
    }
}
