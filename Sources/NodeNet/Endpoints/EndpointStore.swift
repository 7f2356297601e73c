import BPF
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The node's CNI endpoints, owned here alone: `<stateDirectory>/endpoints.json` (written
/// atomically after every change, so a restart or kill -9 adopts exactly what was answered),
/// the address each got, and the deletions `nodenet-cni DEL` recorded in
/// `<stateDirectory>/cni-deletions/` while no agent answered.
///
/// Every change is checked against the spec: an endpoint never takes a spec pod's name,
/// address, network namespace or device.
public struct EndpointStore: Sendable, Equatable {
    public static let fileName = "endpoints.json"
    public static let deletionsDirectory = "cni-deletions"
    static let fileSizeLimit = 16 << 20

    public let stateDirectory: String
    public let node: String
    /// Sorted by attachment.
    public internal(set) var endpoints: [Endpoint]
    /// The address IPAM gave last (the next one is sought after it).
    public private(set) var lastAllocated: IPAddress?

    public var path: String { Self.path(stateDirectory: stateDirectory) }
    public static func path(stateDirectory: String) -> String { stateDirectory + "/" + fileName }
    public static func deletionsPath(stateDirectory: String) -> String {
        stateDirectory + "/" + deletionsDirectory
    }

    public init(stateDirectory: String, node: String, endpoints: [Endpoint] = [], lastAllocated: IPAddress? = nil) {
        self.stateDirectory = stateDirectory
        self.node = node
        self.endpoints = endpoints.sorted { $0.attachment < $1.attachment }
        self.lastAllocated = lastAllocated
    }

    public func endpoint(_ attachment: Endpoint.Attachment) -> Endpoint? {
        endpoints.first { $0.attachment == attachment }
    }

    // MARK: Changes (in memory; `save()` writes them)

    /// Adds the endpoint for `attachment`, or returns the one it already has (a repeated ADD
    /// gets the same answer). `created` tells which.
    public mutating func add(
        _ attachment: Endpoint.Attachment, netns: String, podNamespace: String, podName: String, spec: NodeSpec
    ) throws(EndpointError) -> (endpoint: Endpoint, created: Bool) {
        try Endpoint.validateRequest(attachment, netns: netns, podNamespace: podNamespace, podName: podName)
        if let existing = endpoint(attachment) {
            guard existing.netns == netns else {
                throw EndpointError(
                    .conflict,
                    "container \(attachment.containerID) already has \(attachment.interface) in \(existing.netns), not in \(netns)"
                )
            }
            return (existing, false)
        }
        let id = "\(podNamespace)/\(podName)"
        let candidate = Endpoint(
            attachment: attachment, netns: netns, podNamespace: podNamespace, podName: podName, ip: "0.0.0.0")
        for pod in spec.pods {
            if pod.id == id {
                throw EndpointError(
                    .conflict, "pod \(id) is in the node spec (pods[]); a spec pod is not created through CNI")
            }
            if pod.netnsReference.path == netns || pod.netns == netns {
                throw EndpointError(.conflict, "network namespace \(netns) belongs to the spec's pod \(pod.id)")
            }
            if NodeNetNames.endpointDevice(for: pod) == candidate.hostDevice {
                throw EndpointError(
                    .conflict, "pod \(id) would share the device \(candidate.hostDevice) with the spec's pod \(pod.id)")
            }
        }
        for other in endpoints {
            if other.pod.id == id {
                throw EndpointError(
                    .conflict,
                    "pod \(id) already has an endpoint from container \(other.attachment.containerID); delete it first")
            }
            if other.netns == netns {
                throw EndpointError(
                    .conflict,
                    "network namespace \(netns) already has an endpoint (container \(other.attachment.containerID))")
            }
            if other.hostDevice == candidate.hostDevice {
                throw EndpointError(
                    .conflict, "pod \(id) would share the device \(candidate.hostDevice) with pod \(other.pod.id)")
            }
        }
        let taken = Set(spec.pods.map(\.ip) + endpoints.map(\.ip))
        guard
            let ip = IPAM.next(
                in: spec.node.podCIDR, routerIP: spec.node.routerIP, taken: taken, after: lastAllocated)
        else {
            throw EndpointError(
                .exhausted,
                "no address left in podCIDR \(spec.node.podCIDR) (\(spec.pods.count) spec pods, \(endpoints.count) endpoints)"
            )
        }
        var endpoint = candidate
        endpoint.ip = ip
        endpoints.append(endpoint)
        endpoints.sort { $0.attachment < $1.attachment }
        lastAllocated = ip
        return (endpoint, true)
    }

    /// Removes the endpoint (its address is free again); nil when there was none.
    @discardableResult
    public mutating func remove(_ attachment: Endpoint.Attachment) -> Endpoint? {
        guard let index = endpoints.firstIndex(where: { $0.attachment == attachment }) else { return nil }
        return endpoints.remove(at: index)
    }

    /// Removes every endpoint whose attachment is not in `valid` (CNI GC); returns them.
    public mutating func collect(keeping valid: Set<Endpoint.Attachment>) -> [Endpoint] {
        let gone = endpoints.filter { !valid.contains($0.attachment) }
        endpoints.removeAll { !valid.contains($0.attachment) }
        return gone
    }

    /// Addresses still free for endpoints.
    public func freeAddresses(spec: NodeSpec) -> Int {
        IPAM.free(
            in: spec.node.podCIDR, routerIP: spec.node.routerIP, taken: Set(spec.pods.map(\.ip) + endpoints.map(\.ip)))
    }

    // MARK: The file

    struct File: Codable {
        var version = 1
        var node: String
        var lastAllocated: String?
        var endpoints: [Endpoint]
    }

    /// Writes the store atomically (mode 0600).
    public func save() throws {
        try Paths.createPrivateDirectory(stateDirectory, what: "state directory")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        let data = try encoder.encode(File(node: node, lastAllocated: lastAllocated?.description, endpoints: endpoints))
        try StateFile.writeAtomically(data, to: path, what: "the endpoint store")
    }

    /// Reads the store; a missing file is an empty store. A file that cannot be trusted (not
    /// ours, another node's, a record that fails validation) is an error that says what to do:
    /// dropping it would take the network from running pods, so nothing is guessed.
    public static func load(stateDirectory: String, node: String, podCIDR: IPPrefix) throws -> EndpointStore {
        let path = path(stateDirectory: stateDirectory)
        let data: Data
        do {
            data = try StateFile.readText(path, limit: fileSizeLimit)
        } catch {
            if error.reason == .missing { return EndpointStore(stateDirectory: stateDirectory, node: node) }
            throw NodeNetError.state("the endpoint store cannot be read: \(error)")
        }
        func untrusted(_ why: String) -> NodeNetError {
            NodeNetError.state(
                "the endpoint store \(path) cannot be trusted: \(why). Its pods keep running as they are; fix or move the file aside (its endpoints are then forgotten and their pods lose networking at the next apply)"
            )
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let file: File
        do { file = try decoder.decode(File.self, from: data) } catch {
            throw untrusted("it is not an endpoint store (\(JSONValue.describe(error, in: data)))")
        }
        guard file.version == 1 else { throw untrusted("version \(file.version) is not 1") }
        guard file.node == node else {
            throw untrusted("it belongs to node \(Endpoint.quoted(file.node)), not \(node)")
        }
        var seen: Set<Endpoint.Attachment> = []
        var ips: Set<IPAddress> = []
        for endpoint in file.endpoints {
            do { try endpoint.validateRecord(podCIDR: podCIDR) } catch { throw untrusted(error.message) }
            guard seen.insert(endpoint.attachment).inserted, ips.insert(endpoint.ip).inserted else {
                throw untrusted("\(endpoint.attachment) or its address \(endpoint.ip) appears twice")
            }
        }
        let last = file.lastAllocated.flatMap { IPAddress($0) }
        return EndpointStore(stateDirectory: stateDirectory, node: node, endpoints: file.endpoints, lastAllocated: last)
    }

    // MARK: Deletions recorded while no agent answered

    /// The attachments `nodenet-cni DEL` recorded for the agent to delete (file names
    /// `<containerID>.<ifname>`; anything else in the directory is ignored and reported).
    public static func recordedDeletions(
        stateDirectory: String
    ) -> (attachments: [Endpoint.Attachment], ignored: [String]) {
        let directory = deletionsPath(stateDirectory: stateDirectory)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return ([], []) }
        var attachments: [Endpoint.Attachment] = []
        var ignored: [String] = []
        for name in names.sorted() {
            guard let dot = name.lastIndex(of: "."), !name.hasPrefix(".") else {
                ignored.append(name)
                continue
            }
            let attachment = Endpoint.Attachment(
                containerID: String(name[..<dot]), interface: String(name[name.index(after: dot)...]))
            guard (try? Endpoint.validateAttachment(attachment)) != nil else {
                ignored.append(name)
                continue
            }
            attachments.append(attachment)
        }
        return (attachments, ignored)
    }

    /// Forgets a recorded deletion once it is done.
    public static func clearRecordedDeletion(_ attachment: Endpoint.Attachment, stateDirectory: String) {
        unlink(deletionsPath(stateDirectory: stateDirectory) + "/\(attachment.containerID).\(attachment.interface)")
    }
}
