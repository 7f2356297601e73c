import Foundation
import NodeNetJSON

/// A node's registration in etcd. Anything read from etcd is checked before it is used: a
/// record that fails is skipped and reported, never applied.
public struct ClusterNodeRecord: Sendable, Hashable {
    public var name: String
    public var address: IPAddress
    public var podCIDR: IPPrefix
    /// The node's boot id (`/proc/sys/kernel/random/boot_id`): a changed one means a reboot.
    public var bootID: String
    /// The nodenet version that registered it.
    public var version: String

    public init(name: String, address: IPAddress, podCIDR: IPPrefix, bootID: String, version: String) {
        self.name = name
        self.address = address
        self.podCIDR = podCIDR
        self.bootID = bootID
        self.version = version
    }

    public var remoteNode: RemoteNode { RemoteNode(name: name, address: address, podCIDR: podCIDR) }

    public func encoded() -> [UInt8] {
        ClusterJSON.encode([
            "name": name, "address": address.description, "podCIDR": podCIDR.description, "bootID": bootID,
            "version": version,
        ])
    }

    /// Decodes a record, or says why it is not one.
    public static func decode(_ bytes: [UInt8]) -> Result<ClusterNodeRecord, ClusterRecordError> {
        var reader = SpecReader()
        guard let root = ClusterJSON.parse(bytes, &reader),
            let fields = reader.object(root, "", allowed: ["name", "address", "podCIDR", "bootID", "version"])
        else { return .failure(ClusterRecordError(reader.problems)) }
        let name = reader.string(fields, "name", "", required: true)
        let address = reader.address(fields, "address", "", required: true)
        let podCIDR = reader.cidr(fields, "podCIDR", "", required: true)
        let bootID = reader.string(fields, "bootID", "", required: false) ?? ""
        let version = reader.string(fields, "version", "", required: false) ?? ""
        if let name, let why = LocalNode.nameProblem(name) { reader.problem("name", why) }
        guard reader.problems.isEmpty, let name, let address, let podCIDR else {
            return .failure(ClusterRecordError(reader.problems))
        }
        return .success(
            ClusterNodeRecord(name: name, address: address, podCIDR: podCIDR, bootID: bootID, version: version))
    }
}

/// A pod as its node publishes it.
public struct ClusterEndpointRecord: Sendable, Hashable {
    /// `namespace/name`.
    public var pod: String
    public var ip: IPAddress
    public var node: String

    public init(pod: String, ip: IPAddress, node: String) {
        self.pod = pod
        self.ip = ip
        self.node = node
    }

    public func encoded() -> [UInt8] { ClusterJSON.encode(["pod": pod, "ip": ip.description, "node": node]) }

    public static func decode(_ bytes: [UInt8]) -> Result<ClusterEndpointRecord, ClusterRecordError> {
        var reader = SpecReader()
        guard let root = ClusterJSON.parse(bytes, &reader),
            let fields = reader.object(root, "", allowed: ["pod", "ip", "node"])
        else { return .failure(ClusterRecordError(reader.problems)) }
        let pod = reader.string(fields, "pod", "", required: true)
        let ip = reader.address(fields, "ip", "", required: true)
        let node = reader.string(fields, "node", "", required: true)
        if let pod, let why = PodBackend.problem(pod) { reader.problem("pod", why) }
        guard reader.problems.isEmpty, let pod, let ip, let node else {
            return .failure(ClusterRecordError(reader.problems))
        }
        return .success(ClusterEndpointRecord(pod: pod, ip: ip, node: node))
    }
}

/// A cluster service: the node spec's service object, whose backends may also name pods.
public enum ClusterServiceRecord {
    public static func encoded(_ service: ServiceSpec) -> [UInt8] {
        ClusterJSON.encode(service.jsonObject)
    }

    /// One service object, read with the spec's rules (paths relative to `path`).
    public static func decode(_ bytes: [UInt8], path: String = "") -> Result<ServiceSpec, ClusterRecordError> {
        var reader = SpecReader()
        guard let root = ClusterJSON.parse(bytes, &reader) else { return .failure(ClusterRecordError(reader.problems)) }
        let services = reader.readServices(["services": .array([root])], path, podBackends: true)
        guard reader.problems.isEmpty, let service = services.first else {
            return .failure(ClusterRecordError(reader.problems))
        }
        return .success(service)
    }
}

/// Why a record from etcd (or a file for it) was not taken.
public struct ClusterRecordError: Error, Sendable, CustomStringConvertible {
    public var problems: [SpecProblem]
    public init(_ problems: [SpecProblem]) { self.problems = problems }
    public var description: String { problems.map(\.description).joined(separator: "; ") }
}

enum ClusterJSON {
    static func encode(_ object: [String: Any]) -> [UInt8] {
        Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8))
    }

    /// Records are small: anything over 64 KiB is refused before parsing.
    static let recordSizeLimit = 64 << 10

    static func parse(_ bytes: [UInt8], _ reader: inout SpecReader) -> JSONValue? {
        guard bytes.count <= recordSizeLimit else {
            reader.problem("", "\(bytes.count) bytes; a record is at most \(recordSizeLimit)")
            return nil
        }
        do {
            return try JSONValue.parse(Data(bytes))
        } catch {
            reader.problem("", JSONValue.describe(error, in: Data(bytes)))
            return nil
        }
    }
}

extension LocalNode {
    /// Why `name` cannot name a node (it becomes a file and key name), nil when it can.
    public static func nameProblem(_ name: String) -> String? {
        let valid =
            (1...63).contains(name.count) && !name.hasPrefix(".") && !name.hasPrefix("-")
            && name.allSatisfy {
                ($0.isLetter && $0.isASCII) || ($0.isNumber && $0.isASCII) || $0 == "-" || $0 == "." || $0 == "_"
            }
        return valid
            ? nil
            : "\"\(name)\" must be 1-63 characters of letters, digits, '-', '_' and '.', not starting with '.' or '-'"
    }
}

extension ClusterServiceRecord {
    /// Why `name` cannot name a cluster service (`name` or `namespace/name`, each part a node
    /// name's characters: it becomes a key), nil when it can.
    public static func nameProblem(_ name: String) -> String? {
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), parts.allSatisfy({ LocalNode.nameProblem(String($0)) == nil }) else {
            return "\"\(name)\" must be name or namespace/name, each 1-63 letters, digits, '-', '_' or '.'"
        }
        return nil
    }

    /// The spec's service rules for a set of cluster services (one clusterIP and node port
    /// each, node ports in `nodePortRange`, no clusterIP inside a node's pod CIDR, and what the
    /// largest service maps hold: each node's `loadBalancer.mapEntries` says what it takes, and a
    /// node whose maps hold fewer leaves the last ones out). `paths`: each service's JSON path,
    /// for the problems.
    public static func problems(
        _ services: [ServiceSpec], paths: [String], nodes: [RemoteNode], nodePortRange: ClosedRange<Int> = 30000...32767
    ) -> [SpecProblem] {
        // The rules need a node; this one owns no address a service could use.
        var spec = NodeSpec(
            node: LocalNode(
                name: "cluster", device: "-", address: IPAddress(ipv4: 0),
                podCIDR: IPPrefix(IPAddress(ipv4: 0), length: 32)!),
            nodes: nodes, services: services, nodePortRange: nodePortRange)
        spec.services = services
        spec.loadBalancer.mapCapacity = ServiceMapCapacity(entries: ServiceMapCapacity.allowed.upperBound)
        var validator = SpecValidator(
            spec: spec, podPaths: [], nodePaths: nodes.indices.map { "nodes[\($0)]" }, servicePaths: paths,
            namespaceExists: { _ in true })
        return validator.validateServices()
    }
}
