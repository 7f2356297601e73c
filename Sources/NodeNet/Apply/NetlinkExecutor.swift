import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Links, addresses and routes: consecutive changes in one namespace go to the kernel as one
/// batch (few `sendmsg` calls); each success records its inverse request.
struct NetlinkExecutor: ChangeExecutor {
    let session: NodeSession

    func run(_ changes: DomainChanges<NetlinkChange>, undo: inout [UndoStep]) throws {
        var start = 0
        while start < changes.count {
            let deletions = Self.nodeLinkDeletions(changes[start...])
            if !deletions.isEmpty {
                try deleteTogether(deletions, firstIndex: start, undo: &undo)
                start += deletions.count
                continue
            }
            var end = start + 1
            while end < changes.count, Self.sameBatch(changes[start], changes[end]) { end += 1 }
            do {
                try runBatch(Array(changes[start..<end]), undo: &undo)
            } catch let failure as ChangeFailure {
                throw ChangeFailure(index: start + failure.index, error: failure.error)
            }
            start = end
        }
    }

    /// The leading run of node-side link deletions (endpoints removed together).
    private static func nodeLinkDeletions(_ changes: Slice<DomainChanges<NetlinkChange>>) -> [String] {
        var devices: [String] = []
        for change in changes {
            guard case .deleteLink(.node, let device) = change else { break }
            devices.append(device)
        }
        return devices
    }

    /// Deletes the node's links in a row of deletions together: done when the kernel has
    /// unregistered them (gone from the node, their routes with them), while threads of
    /// their own sit out the kernel's release of each (`NetlinkSocket.deleteLinks`), which
    /// would otherwise hold up a CNI DEL for 10–30 ms, and pods deleted together for that
    /// once each when their requests went one after another.
    private func deleteTogether(_ devices: [String], firstIndex: Int, undo: inout [UndoStep]) throws {
        let results = NetlinkSocket.deleteLinks(devices, in: session.namespace)
        var failure: ChangeFailure?
        for (i, device) in devices.enumerated() {
            switch results[i] {
            case .success: undo.append(.irreversible("\(device) in node was deleted and cannot be restored"))
            case .failure(let error): failure = failure ?? ChangeFailure(index: firstIndex + i, error: error)
            }
        }
        if let failure { throw failure }
    }

    /// One namespace per batch. The host pair goes alone: the changes after it name its
    /// devices by ifindex, which the next batch looks up.
    private static func sameBatch(_ first: NetlinkChange, _ next: NetlinkChange) -> Bool {
        if case .createHostPair = first { return false }
        if case .createHostPair = next { return false }
        return first.scope == next.scope
    }

    private func runBatch(_ batch: [NetlinkChange], undo: inout [UndoStep]) throws {
        let scope = batch[0].scope
        let socket: NetlinkSocket
        do { socket = try session.socket(for: scope) } catch { throw ChangeFailure(index: 0, error: error) }
        // Device names → ifindex as the namespace is now (earlier batches may have created them).
        var indices: [String: InterfaceIndex] = [:]
        if batch.contains(where: \.needsIndices) {
            do {
                indices = Dictionary(try socket.links().map { ($0.name, $0.index) }, uniquingKeysWith: { a, _ in a })
            } catch { throw ChangeFailure(index: 0, error: error) }
        }
        // Pod namespace files stay open until the batch has been sent (the requests name them).
        var namespaces: [String: FileDescriptor] = [:]
        defer { withExtendedLifetime(namespaces) {} }
        var requests: [NetlinkRequest] = []
        var inverses: [UndoStep] = []
        for (i, change) in batch.enumerated() {
            do {
                let (request, inverse) = try build(change, indices: indices, namespaces: &namespaces)
                requests.append(request)
                inverses.append(inverse)
            } catch {
                // Nothing of this batch was sent yet; send what came before it first.
                try send(requests, inverses, on: socket, undo: &undo)
                throw ChangeFailure(index: i, error: error)
            }
        }
        try send(requests, inverses, on: socket, undo: &undo)
    }

    private func send(
        _ requests: [NetlinkRequest], _ inverses: [UndoStep], on socket: NetlinkSocket, undo: inout [UndoStep]
    ) throws {
        guard !requests.isEmpty else { return }
        let results =
            requests.count == 1
            ? [
                Result { try socket.execute(requests[0]) }.map { _ in () }.mapError {
                    $0 as? NetlinkError ?? NetlinkError(.protocolError)
                }
            ]
            : socket.batch(requests)
        var firstFailure: ChangeFailure?
        for (i, result) in results.enumerated() {
            switch result {
            case .success: undo.append(inverses[i])
            case .failure(let error): if firstFailure == nil { firstFailure = ChangeFailure(index: i, error: error) }
            }
        }
        if let firstFailure { throw firstFailure }
    }

    /// The inverse request, run in `scope`.
    private func inverse(_ scope: NamespaceScope, _ request: NetlinkRequest) -> UndoStep {
        UndoStep("\(request.context) [\(scope)]") { try session.socket(for: scope).execute(request) }
    }

    /// The request for one change and the step that undoes it.
    private func build(
        _ change: NetlinkChange, indices: [String: InterfaceIndex], namespaces: inout [String: FileDescriptor]
    ) throws -> (NetlinkRequest, UndoStep) {
        func index(_ device: String) throws -> InterfaceIndex {
            guard let i = indices[device] else {
                throw NodeNetError.missing("device \(device) does not exist in \(change.scope)")
            }
            return i
        }
        switch change {
        case .createHostPair(let mtu, let segmentSize):
            let config = LinkConfiguration(
                name: NodeNetNames.hostDevice,
                kind: .veth(peer: VethPeer(name: NodeNetNames.netDevice, mtu: mtu, noARP: true)),
                mtu: mtu, up: true, noARP: true, ipv4MaxSegmentSize: segmentSize)
            return (config.createRequest(), inverse(.node, LinkName(NodeNetNames.hostDevice).deleteRequest))
        case .setLink(let scope, let device, let change, let undoChange):
            return (change.request(named: device), inverse(scope, undoChange.request(named: device)))
        case .addAddress(let scope, let device, let prefix, let addressScope):
            let address = InterfaceAddress(interfaceIndex: try index(device), prefix: prefix, scope: addressScope)
            return (address.addRequest, inverse(scope, address.deleteRequest))
        case .deleteAddress(let scope, _, let address):
            return (address.deleteRequest, inverse(scope, address.addRequest))
        case .putRoute(let scope, let intent, let previous):
            var route = intent.route(interfaceIndex: try index(intent.device))
            if let previous {
                // Replace matches on destination, TOS and metric: keep ours, so a foreign route
                // at another metric is never the one replaced.
                route.priority = previous.priority
                return (route.replaceRequest, inverse(scope, previous.replaceRequest))
            }
            return (route.addRequest, inverse(scope, route.deleteRequest))
        case .deleteRoute(let scope, let route):
            return (route.deleteRequest, inverse(scope, route.addRequest))
        case .createEndpoint(let device, let netns, let mtu, let segmentSize):
            let namespace = try namespaces[netns] ?? NetworkNamespace.open(NamespaceReference(netns))
            namespaces[netns] = namespace
            let config = LinkConfiguration(
                name: device,
                kind: .veth(
                    peer: VethPeer(name: NodeNetNames.podDevice, namespace: NamespaceReference(netns), mtu: mtu)),
                mtu: mtu, up: true, ipv4MaxSegmentSize: segmentSize)
            return (config.createRequest(peerNamespace: namespace), inverse(.node, LinkName(device).deleteRequest))
        case .deleteLink(let scope, let device):
            return (
                LinkName(device).deleteRequest,
                .irreversible("\(device) in \(scope) was deleted and cannot be restored")
            )
        }
    }
}

extension NetlinkChange {
    /// Whether the request names a device by ifindex (looked up when the batch starts).
    fileprivate var needsIndices: Bool {
        switch self {
        case .addAddress, .putRoute: true
        default: false
        }
    }
}
