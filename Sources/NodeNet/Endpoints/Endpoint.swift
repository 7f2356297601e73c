import Foundation

/// A pod a container runtime created through CNI (`nodenet-cni ADD`): one more source of the
/// node's pods beside the spec's `pods[]`, and treated exactly like them (same lxc naming, /32,
/// routes, endpoint entry, programs, services, masquerade). Everything in it came from outside
/// (the runtime's environment, a state file): `validate` runs before it is trusted.
public struct Endpoint: Sendable, Hashable, Codable {
    /// The attachment's identity in CNI: `CNI_CONTAINERID` and `CNI_IFNAME`.
    public struct Attachment: Sendable, Hashable, Codable, CustomStringConvertible, Comparable {
        public var containerID: String
        public var interface: String

        public init(containerID: String, interface: String) {
            self.containerID = containerID
            self.interface = interface
        }

        public var description: String { "\(containerID)/\(interface)" }
        public static func < (a: Self, b: Self) -> Bool { (a.containerID, a.interface) < (b.containerID, b.interface) }
    }

    public var attachment: Attachment
    /// `CNI_NETNS`: an absolute path to the pod's network namespace.
    public var netns: String
    /// `K8S_POD_NAMESPACE` / `K8S_POD_NAME` from `CNI_ARGS`; without them the pod is
    /// `cni/<first 12 characters of the container id>`.
    public var podNamespace: String
    public var podName: String
    /// Given by the agent's IPAM from `podCIDR`.
    public var ip: IPAddress
    public var created: Date

    public init(
        attachment: Attachment, netns: String, podNamespace: String, podName: String, ip: IPAddress,
        created: Date = Date()
    ) {
        self.attachment = attachment
        self.netns = netns
        self.podNamespace = podNamespace
        self.podName = podName
        self.ip = ip
        self.created = created
    }

    enum CodingKeys: String, CodingKey {
        case containerID, interface, netns, podNamespace, podName, ip, created
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        attachment = Attachment(
            containerID: try c.decode(String.self, forKey: .containerID),
            interface: try c.decode(String.self, forKey: .interface))
        netns = try c.decode(String.self, forKey: .netns)
        podNamespace = try c.decode(String.self, forKey: .podNamespace)
        podName = try c.decode(String.self, forKey: .podName)
        let text = try c.decode(String.self, forKey: .ip)
        guard let ip = IPAddress(text) else {
            throw DecodingError.dataCorruptedError(forKey: .ip, in: c, debugDescription: "\(text) is not an IP address")
        }
        self.ip = ip
        created = try c.decode(Date.self, forKey: .created)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(attachment.containerID, forKey: .containerID)
        try c.encode(attachment.interface, forKey: .interface)
        try c.encode(netns, forKey: .netns)
        try c.encode(podNamespace, forKey: .podNamespace)
        try c.encode(podName, forKey: .podName)
        try c.encode(ip.description, forKey: .ip)
        try c.encode(created, forKey: .created)
    }

    /// The pod it is, as the planner sees every pod.
    public var pod: PodSpec { PodSpec(name: podName, namespace: podNamespace, netns: netns, ip: ip) }

    /// The node-side device, named as every pod's is.
    public var hostDevice: String { NodeNetNames.endpointDevice(for: pod) }
}

/// Why an endpoint request or record is refused, in a sentence for the person who reads the
/// runtime's error; `kind` tells a client what to do about it.
public struct EndpointError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Codable {
        /// The request itself is wrong (a bad container id, netns path, interface name).
        case invalid
        /// It clashes with a spec pod or another endpoint.
        case conflict
        /// No address left in `podCIDR`.
        case exhausted
        /// No such endpoint.
        case notFound
        /// The kernel did not end up as asked (the reconcile's own words follow).
        case failed
        /// The agent cannot take requests now (starting, stopping).
        case unavailable
    }
    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}

extension Endpoint {
    /// The interface name nodenet gives a pod (the planner's pod device).
    public static let supportedInterface = NodeNetNames.podDevice

    /// Checks what came from the runtime: container id, interface, netns path, pod names.
    public static func validateRequest(
        _ attachment: Attachment, netns: String, podNamespace: String, podName: String
    ) throws(EndpointError) {
        try validateAttachment(attachment)
        guard attachment.interface == supportedInterface else {
            throw EndpointError(
                .invalid,
                "interface name \(quoted(attachment.interface)) is not supported: nodenet names the pod's interface \(supportedInterface)"
            )
        }
        guard netns.hasPrefix("/"), netns.utf8.count < 4096, !netns.split(separator: "/").contains(".."),
            !netns.utf8.contains(0)
        else {
            throw EndpointError(.invalid, "network namespace \(quoted(netns)) is not an absolute path")
        }
        for (what, value) in [("pod namespace", podNamespace), ("pod name", podName)] {
            guard isDNSName(value) else {
                throw EndpointError(
                    .invalid,
                    "\(what) \(quoted(value)) is not a valid name (lowercase letters, digits, '-' and '.', at most 253)"
                )
            }
        }
    }

    /// Checks a container id and interface name (they also name files).
    public static func validateAttachment(_ attachment: Attachment) throws(EndpointError) {
        let id = attachment.containerID
        guard !id.isEmpty, id.utf8.count <= 256,
            id.utf8.allSatisfy({
                isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".")
            }),
            isAlphanumeric(id.utf8.first!)
        else {
            throw EndpointError(
                .invalid,
                "container id \(quoted(id)) is not valid (1-256 letters, digits, '-', '_' or '.', starting with a letter or digit)"
            )
        }
        let name = attachment.interface
        guard !name.isEmpty, name.utf8.count <= 15, name != ".", name != "..",
            name.utf8.allSatisfy({
                isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".")
            })
        else {
            throw EndpointError(
                .invalid, "interface name \(quoted(name)) is not valid (1-15 letters, digits, '-', '_' or '.')")
        }
    }

    /// Checks a record read back from the state directory (which nobody else should write).
    func validateRecord(podCIDR: IPPrefix) throws(EndpointError) {
        try Self.validateRequest(attachment, netns: netns, podNamespace: podNamespace, podName: podName)
        guard ip.isIPv4, podCIDR.contains(ip) else {
            throw EndpointError(.invalid, "address \(ip) of \(attachment) is outside podCIDR \(podCIDR)")
        }
    }

    /// The pod name used when the runtime gives no Kubernetes names.
    public static func defaultPodName(containerID: String) -> String {
        String(containerID.lowercased().prefix(12))
    }

    private static func isAlphanumeric(_ b: UInt8) -> Bool {
        (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
            || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
    }

    private static func isDNSName(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 253 else { return false }
        let ok = s.utf8.allSatisfy {
            ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9"))
                || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".")
        }
        return ok && s.first!.isLetterOrDigit && s.last!.isLetterOrDigit
    }

    /// At most 80 characters of untrusted text, quoted, control characters escaped.
    static func quoted(_ s: String) -> String {
        let cut = s.count > 80 ? String(s.prefix(80)) + "…" : s
        return "\""
            + cut.unicodeScalars.map {
                $0.value < 0x20 || $0.value == 0x7f ? "\\u{\(String($0.value, radix: 16))}" : String($0)
            }.joined() + "\""
    }
}

extension Character {
    fileprivate var isLetterOrDigit: Bool { isLetter || isNumber }
}
