#if canImport(Glibc)
import Glibc
#endif
import BPF
import Foundation

/// Executes a plan: consecutive operations in the same namespace go to the kernel as one
/// batch; every success records its inverse; the first failure rolls everything back.
struct Applier {
    /// How to undo one operation that succeeded.
    enum UndoStep {
        case request(NamespaceScope, NetlinkRequest)
        case sysctl(key: String, value: String)
        case endpointEntry(IPAddress, EndpointEntry?)
        /// Removes a pinned tcx link (detaching its program).
        case unpin(String)
        /// Puts a pinned map set aside (`PATH_old`) back at PATH.
        case restorePin(String)
        /// Puts service map entries back.
        case service(ServiceUndo)
        /// Pins an object we still hold (a dropped map) at a path again.
        case repin(String, OwnedFD)
        /// Moves a pin back (a link pin renamed after its program was replaced).
        case movePin(from: String, to: String)
        /// Gives the tcx link pinned at a path its previous program again.
        case restoreLinkProgram(String, BPFProgramHandle)
        /// Puts the previous program back into a replaced cls_bpf filter.
        case restoreFilter(BPFFilterConfiguration, BPFProgramHandle)
        /// Deletes a clsact qdisc this apply added.
        case deleteClsact(Int32)
        /// Cannot be restored (a deleted link comes back only as a new link).
        case irreversible(String)
    }

    let session: NodeSession
    let spec: NodeSpec
    private(set) var undo: [UndoStep] = []
    private(set) var applied = 0
    /// The datapath's programs and maps, loaded on first use (a plan without datapath
    /// changes loads nothing).
    private var datapath: DatapathObjects?
    private var pinnedServiceMaps: ServiceMaps?
    /// Pinned maps this apply set aside: when the endpoints map is one of them, entries go
    /// into a new map that rollback drops whole (its entries are not undone one by one, so
    /// a program still using it is never left with an emptied map).
    private var setAside: Set<String> = []

    init(session: NodeSession, spec: NodeSpec) {
        self.session = session
        self.spec = spec
    }

    /// Runs all `changes`; on failure throws `ApplyFailure` after rolling back.
    mutating func run(_ changes: [PlannedChange]) throws {
        var start = 0
        while start < changes.count {
            var end = start + 1
            let key = groupKey(changes[start].operation)
            while end < changes.count, key != nil, groupKey(changes[end].operation) == key { end += 1 }
            let group = Array(changes[start..<end])
            do {
                try execute(group)
            } catch let failure as GroupFailure {
                let rollback = rollBack()
                throw ApplyFailure(change: failure.change, error: failure.error, rollback: rollback)
            }
            start = end
        }
    }

    private enum GroupKey: Equatable {
        case netlink(NamespaceScope)
        case sysctl
        /// Consecutive backend writes, or frontend writes: batched map updates.
        case serviceBackends, serviceFrontends, serviceFrontendRemovals, serviceRevNatRemovals, serviceBackendRemovals
    }

    private func groupKey(_ op: Operation) -> GroupKey? {
        if case .service(.putBackend) = op { return .serviceBackends }
        if case .service(.putFrontend) = op { return .serviceFrontends }
        if case .service(.deleteFrontend) = op { return .serviceFrontendRemovals }
        if case .service(.deleteRevNat) = op { return .serviceRevNatRemovals }
        if case .service(.deleteBackend) = op { return .serviceBackendRemovals }
        if op.isDatapath { return nil }
        switch op {
        case .createHostPair:
            return nil
        case .setSysctl: return .sysctl
        default: return .netlink(op.scope)
        }
    }

    struct GroupFailure: Error {
        let change: PlannedChange
        let error: any Error
    }

    private mutating func execute(_ group: [PlannedChange]) throws {
        if group.count > 1, case .service = group[0].operation {
            // One batch for the group; any failure is found (and undone) change by change.
            if (try? executeServiceBatch(group.map(\.operation))) != nil {
                applied += group.count
                return
            }
            // The batch's undo steps stay: part of it may have been written. Each restores a
            // value the plan knew, so running one twice (with the steps below) is harmless.
            for change in group { try execute([change]) }
            return
        }
        if case .service(let op) = group[0].operation {
            do { try executeService(op) } catch { throw GroupFailure(change: group[0], error: error) }
            applied += 1
            return
        }
        switch group[0].operation {
        case .putEndpointEntry, .deleteEndpointEntry, .attachProgram, .detachProgram, .unpinLink, .setAsidePinnedMaps, .dropOldPinnedMaps,
            .dropFormerPins:
            do { try executeDatapath(group[0].operation) } catch { throw GroupFailure(change: group[0], error: error) }
            applied += 1
        case .setSysctl:
            let settings = group.compactMap { c -> (key: String, value: String)? in
                if case .setSysctl(let s, _) = c.operation { return (s.key, s.value) }
                return nil
            }
            let (written, error) = Sysctl.write(settings, in: session.namespace)
            for change in group.prefix(written) {
                if case .setSysctl(let s, let previous?) = change.operation { undo.append(.sysctl(key: s.key, value: previous)) }
                applied += 1
            }
            if let error { throw GroupFailure(change: group[written], error: error) }
        default:
            try executeNetlink(group)
        }
    }

    private mutating func executeNetlink(_ group: [PlannedChange]) throws {
        let scope = group[0].operation.scope
        let socket: NetlinkSocket
        do { socket = try session.socket(for: scope) } catch { throw GroupFailure(change: group[0], error: error) }
        // Device names → ifindex as the namespace is now (earlier groups may have created them).
        var indices: [String: Int32] = [:]
        if group.contains(where: \.needsIndices) {
            do {
                indices = Dictionary(try socket.links().map { ($0.name, $0.index) }, uniquingKeysWith: { a, _ in a })
            } catch { throw GroupFailure(change: group[0], error: error) }
        }
        var namespaceFDs: [String: Int32] = [:]
        defer { for fd in namespaceFDs.values { close(fd) } }
        var requests: [NetlinkRequest] = []
        var inverses: [UndoStep] = []
        for change in group {
            do {
                let (request, inverse) = try build(change.operation, indices: indices, namespaceFDs: &namespaceFDs)
                requests.append(request)
                inverses.append(inverse)
            } catch {
                // Nothing of this group was sent yet; send what came before it first.
                let sent = requests.count
                try send(Array(group.prefix(sent)), requests, inverses, on: socket)
                throw GroupFailure(change: change, error: error)
            }
        }
        try send(group, requests, inverses, on: socket)
    }

    private mutating func send(_ group: [PlannedChange], _ requests: [NetlinkRequest], _ inverses: [UndoStep], on socket: NetlinkSocket) throws {
        guard !requests.isEmpty else { return }
        let results = requests.count == 1
            ? [Result { try socket.execute(requests[0]) }.map { _ in () }.mapError { $0 as? NetlinkError ?? NetlinkError(.protocolError) }]
            : socket.batch(requests)
        var firstFailure: (PlannedChange, NetlinkError)?
        for (i, result) in results.enumerated() {
            switch result {
            case .success:
                undo.append(inverses[i])
                applied += 1
            case .failure(let error):
                if firstFailure == nil { firstFailure = (group[i], error) }
            }
        }
        if let (change, error) = firstFailure { throw GroupFailure(change: change, error: error) }
    }

    /// The request for one operation and the step that undoes it.
    private func build(_ op: Operation, indices: [String: Int32], namespaceFDs: inout [String: Int32]) throws -> (NetlinkRequest, UndoStep) {
        func index(_ device: String) throws -> Int32 {
            guard let i = indices[device] else { throw NodeNetError.missing("device \(device) does not exist in \(op.scope)") }
            return i
        }
        switch op {
        case .createHostPair(let mtu):
            let config = LinkConfiguration(
                name: NodeNetNames.hostDevice,
                kind: .veth(peer: VethPeer(name: NodeNetNames.netDevice, mtu: mtu, noARP: true)),
                mtu: mtu, up: true, noARP: true)
            return (config.createRequest(), .request(.node, Link.deleteRequest(named: NodeNetNames.hostDevice)))
        case .setLink(let scope, let device, let change, let undoChange):
            return (change.request(named: device), .request(scope, undoChange.request(named: device)))
        case .addAddress(let scope, let device, let prefix, let addressScope):
            let address = InterfaceAddress(interfaceIndex: try index(device), prefix: prefix, scope: addressScope)
            return (address.addRequest, .request(scope, address.deleteRequest))
        case .deleteAddress(let scope, _, let address):
            return (address.deleteRequest, .request(scope, address.addRequest))
        case .putRoute(let scope, let intent, let previous):
            var route = intent.route(interfaceIndex: try index(intent.device))
            if let previous {
                // Replace matches on destination, TOS and metric: keep ours, so a foreign route
                // at another metric is never the one replaced.
                route.priority = previous.priority
                return (route.replaceRequest, .request(scope, previous.replaceRequest))
            }
            return (route.addRequest, .request(scope, route.deleteRequest))
        case .deleteRoute(let scope, let route):
            return (route.deleteRequest, .request(scope, route.addRequest))
        case .setSysctl, .putEndpointEntry, .deleteEndpointEntry, .attachProgram, .detachProgram, .unpinLink, .setAsidePinnedMaps,
            .dropOldPinnedMaps, .dropFormerPins, .service:
            fatalError("applied outside netlink groups")
        case .createEndpoint(let device, let netns, let mtu):
            let fd: Int32
            if let open = namespaceFDs[netns] { fd = open } else {
                fd = try NetworkNamespace.open(NamespaceReference(netns))
                namespaceFDs[netns] = fd
            }
            let config = LinkConfiguration(
                name: device, kind: .veth(peer: VethPeer(name: NodeNetNames.podDevice, namespace: NamespaceReference(netns), mtu: mtu)),
                mtu: mtu, up: true)
            return (config.createRequest(peerNamespaceFD: fd), .request(.node, Link.deleteRequest(named: device)))
        case .deleteLink(let scope, let device):
            return (Link.deleteRequest(named: device), .irreversible("\(device) in \(scope) was deleted and cannot be restored"))
        }
    }

    /// Records how to undo a step that succeeded (extensions of the applier use it).
    mutating func recordUndo(_ step: UndoStep) { undo.append(step) }

    /// Gives the link pinned at `oldPath` (tcx or cgroup) the program `fd`, pinned as `path`
    /// from now on; undone by giving the link its previous program and name back.
    mutating func replaceLinkProgram(pinnedAt oldPath: String, with fd: Int32, renamingTo path: String) throws {
        // Hold the program the link runs now, to give it back on rollback.
        let previous = try BPFLink.currentProgram(pinnedAt: oldPath)
        try BPFLink.replaceProgram(pinnedAt: oldPath, with: fd)
        undo.append(.restoreLinkProgram(oldPath, previous))
        if oldPath != path {
            try BPFPin.move(from: oldPath, to: path)
            undo.append(.movePin(from: path, to: oldPath))
        }
    }

    /// The service maps: the node's pinned ones when they all exist (no program needs
    /// loading for a services-only change), else those of the loaded objects.
    mutating func serviceMaps() throws -> ServiceMaps {
        if let datapath { return datapath.services }
        if let pinnedServiceMaps { return pinnedServiceMaps }
        if let pinned = try ServiceMaps(pinnedIn: spec.bpffsDirectory) {
            pinnedServiceMaps = pinned
            return pinned
        }
        return try loadedDatapath().services
    }

    mutating func loadedDatapath() throws -> DatapathObjects {
        if let datapath { return datapath }
        let loaded = try DatapathObjects(spec: spec)
        datapath = loaded
        return loaded
    }

    /// One datapath operation (map entries, attached programs), with its undo step.
    private mutating func executeDatapath(_ op: Operation) throws {
        let node = session.node
        switch op {
        case .putEndpointEntry(let ip, let hostDevice, let netns, let previous):
            guard let host = try node.link(named: hostDevice), let mac = host.address else {
                throw NodeNetError.missing("\(hostDevice) does not exist")
            }
            guard let pod = try session.podSocket(netns).link(named: NodeNetNames.podDevice), let podMAC = pod.address else {
                throw NodeNetError.missing("eth0 does not exist in \(netns)")
            }
            let entry = EndpointEntry(ifindex: UInt32(host.index), hostMAC: mac, podMAC: podMAC)
            try loadedDatapath().endpoints.update(EndpointEntry.key(ip), entry.c)
            if !setAside.contains("nodenet_endpoints") { undo.append(.endpointEntry(ip, previous)) }
        case .deleteEndpointEntry(let ip, let previous):
            try loadedDatapath().endpoints.delete(EndpointEntry.key(ip))
            undo.append(.endpointEntry(ip, previous))
        case .attachProgram(let device, let program, let replacing) where spec.effectiveAttachMode == .tcx:
            guard let link = try node.link(named: device) else { throw NodeNetError.missing("\(device) does not exist") }
            try BPFFS.prepare(spec.linkDirectory)
            let path = "\(spec.linkDirectory)/\(program.linkPinName(device: device, ifindex: link.index))"
            let fd = try loadedDatapath().programFD(program)
            let prefix = program.linkPinPrefix(device: device) + "\(link.index)@"
            if replacing, let old = try FileManager.default.contentsOfDirectory(atPath: spec.linkDirectory).first(where: { $0.hasPrefix(prefix) }) {
                try replaceLinkProgram(pinnedAt: "\(spec.linkDirectory)/\(old)", with: fd, renamingTo: path)
            } else {
                try NetworkNamespace.run(in: session.namespace) { try TCXLink.attachIngress(programFD: fd, ifindex: link.index, pinAt: path) }
                undo.append(.unpin(path))
            }
        case .setAsidePinnedMaps(let names):
            for name in names {
                let path = "\(spec.bpffsDirectory)/\(name)"
                try BPFPin.move(from: path, to: path + "_old")
                undo.append(.restorePin(path))
                setAside.insert(name)
            }
        case .dropOldPinnedMaps(let names):
            for name in names {
                let path = "\(spec.bpffsDirectory)/\(name)_old"
                // Keep the map (the previous programs' fds reference it anyway) to pin it back on rollback.
                let held = try BPFPin.open(path).map(OwnedFD.init)
                guard unlink(path) == 0 || errno == ENOENT else { throw NodeNetError.state("removing \(path): \(String(cString: strerror(errno)))") }
                if let held { undo.append(.repin(path, held)) }
            }
        case .dropFormerPins(let directory):
            DatapathObjects.removeOwnedPins(in: directory)
            undo.append(.irreversible("nodenet's pins in the former bpffs directory \(directory) were removed"))
        case .unpinLink(let name):
            let path = "\(spec.linkDirectory)/\(name)"
            guard unlink(path) == 0 || errno == ENOENT else { throw NodeNetError.state("removing \(path): \(String(cString: strerror(errno)))") }
            undo.append(.irreversible("tcx link \(name) was removed"))
        case .attachProgram(let device, let program, let replacing):
            guard let link = try node.link(named: device) else { throw NodeNetError.missing("\(device) does not exist") }
            do {
                try node.addClsact(interfaceIndex: link.index)
                undo.append(.deleteClsact(link.index))  // only when this apply added it (EEXIST: it was there)
            } catch let e as NetlinkError where e.errno == .exists {}
            let filter = BPFFilterConfiguration(
                interfaceIndex: link.index, direction: .ingress, programFD: try loadedDatapath().programFD(program), name: program.filterName,
                priority: program.priority, handle: program.handle)
            if replacing {
                // Hold the program the filter runs now (from the dump), to put it back on rollback.
                let current = try node.filters(interfaceIndex: link.index, direction: .ingress)
                    .first { $0.priority == program.priority && $0.handle == program.handle }?.bpf
                let previous = try current?.programID.map { try BPFProgramHandle(id: $0) }
                try node.replace(filter)
                if let previous, let current {
                    var back = filter
                    back.programFD = previous.fd
                    back.name = current.name ?? "nodenet-previous"
                    undo.append(.restoreFilter(back, previous))
                } else {
                    undo.append(.request(.node, Self.deleteFilterRequest(index: link.index, program.priority, program.handle)))
                }
            } else {
                try node.add(filter)
                undo.append(.request(.node, Self.deleteFilterRequest(index: link.index, program.priority, program.handle)))
            }
        case .detachProgram(let device, let priority, let handle):
            guard let link = try node.link(named: device) else { return }
            try node.deleteFilter(interfaceIndex: link.index, direction: .ingress, priority: priority, handle: handle)
            undo.append(.irreversible("a program was detached from \(device)"))
        default:
            fatalError("not a datapath operation")
        }
    }

    static func deleteFilterRequest(index: Int32, _ priority: UInt16, _ handle: UInt32) -> NetlinkRequest {
        TCDirection.ingress.deleteFilterRequest(interfaceIndex: index, priority: priority, handle: handle)
    }

    /// Undoes every recorded step, newest first. Returns what could not be undone.
    mutating func rollBack() -> RollbackOutcome {
        var failures: [String] = []
        var undone = 0
        for step in undo.reversed() {
            switch step {
            case .request(let scope, let request):
                do {
                    try session.socket(for: scope).execute(request)
                    undone += 1
                } catch {
                    failures.append("\(request.context) [\(scope)]: \(error)")
                }
            case .sysctl(let key, let value):
                do {
                    try Sysctl.write(key, value, in: session.namespace)
                    undone += 1
                } catch {
                    failures.append("restoring sysctl \(key)=\(value): \(error)")
                }
            case .endpointEntry(let ip, let entry):
                do {
                    let map = try loadedDatapath().endpoints
                    if let entry { try map.update(EndpointEntry.key(ip), entry.c) } else { try map.delete(EndpointEntry.key(ip)) }
                    undone += 1
                } catch {
                    failures.append("restoring endpoint map entry \(ip): \(error)")
                }
            case .restorePin(let path):
                unlink(path)
                do {
                    try BPFPin.move(from: path + "_old", to: path)
                    undone += 1
                } catch {
                    failures.append("restoring \(path): \(error)")
                }
            case .repin(let path, let object):
                unlink(path)
                do {
                    try BPFPin.pin(fd: object.fd, at: path)
                    undone += 1
                } catch {
                    failures.append("pinning \(path) again: \(error)")
                }
            case .movePin(let from, let to):
                do {
                    try BPFPin.move(from: from, to: to)
                    undone += 1
                } catch {
                    failures.append("moving \(from) back to \(to): \(error)")
                }
            case .restoreLinkProgram(let path, let previous):
                do {
                    try BPFLink.replaceProgram(pinnedAt: path, with: previous.fd)
                    undone += 1
                } catch {
                    failures.append("giving \(path) its previous program: \(error)")
                }
            case .restoreFilter(let filter, _):
                do {
                    try session.node.replace(filter)
                    undone += 1
                } catch {
                    failures.append("putting the previous program \(filter.name) back on link \(filter.interfaceIndex): \(error)")
                }
            case .deleteClsact(let index):
                do {
                    try session.node.deleteClsact(interfaceIndex: index)
                    undone += 1
                } catch let e as NetlinkError where e.errno == .noSuchDevice || e.errno == .invalidArgument || e.errno == .noSuchFileOrDirectory {
                    undone += 1  // the device (or the qdisc) is gone already
                } catch {
                    failures.append("deleting the clsact qdisc added to link \(index): \(error)")
                }
            case .unpin(let path):
                if unlink(path) == 0 || errno == ENOENT { undone += 1 } else { failures.append("removing \(path): \(String(cString: strerror(errno)))") }
            case .service(let step):
                do {
                    try undoService(step)
                    undone += 1
                } catch {
                    failures.append("\(step): \(error)")
                }
            case .irreversible(let what):
                failures.append(what)
            }
        }
        undo.removeAll()
        return RollbackOutcome(undone: undone, failures: failures)
    }
}

/// A file descriptor closed when the last reference goes (kept by undo steps).
final class OwnedFD: @unchecked Sendable {
    let fd: Int32
    init(_ fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}

extension PlannedChange {
    var needsIndices: Bool {
        switch operation {
        case .addAddress, .putRoute: return true
        default: return false
        }
    }
}

public struct RollbackOutcome: Sendable, CustomStringConvertible {
    public var undone: Int
    public var failures: [String]
    public var complete: Bool { failures.isEmpty }

    public var description: String {
        complete
            ? "rolled back: \(undone) change\(undone == 1 ? "" : "s") undone, the node is as it was before the apply"
            : "rollback incomplete: \(undone) changes undone; not restored:\n" + failures.map { "  \($0)" }.joined(separator: "\n")
    }
}

/// An apply that failed midway: what failed, the kernel's error, and the rollback's outcome.
public struct ApplyFailure: Error, Sendable, CustomStringConvertible {
    public var change: PlannedChange
    public var error: any Error & Sendable
    public var rollback: RollbackOutcome

    init(change: PlannedChange, error: any Error, rollback: RollbackOutcome) {
        self.change = change
        self.error = (error as? NetlinkError).map { $0 as any Error & Sendable } ?? NodeNetError.state("\(error)")
        self.rollback = rollback
    }

    public var description: String {
        "apply failed at \(change.subject) [\(change.namespace)]: \(error)\n\(rollback)"
    }
}
