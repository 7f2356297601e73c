import BPF
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// What nodenet last applied on a node, persisted in the node's state directory
/// (`ledger.json`), so that state which left the spec while nodenetd was not running is
/// still removed at the next apply, and teardown can restore what was there before.
public struct Ledger: Codable, Sendable, Equatable {
    public struct Endpoint: Codable, Sendable, Equatable, Hashable {
        public var pod: String
        public var hostDevice: String
        public var netns: String
        public var ip: String
        /// `true` for a pod a container runtime made (CNI): what a lost endpoint store is
        /// rebuilt from. Absent for spec pods (and in ledgers older than the field).
        public var runtime: Bool?

        /// What the ledger records of `pod`'s endpoint.
        init(_ pod: PodSpec, runtime: Bool = false) {
            self.init(pod: pod.id, hostDevice: NodeNetNames.endpointDevice(for: pod), netns: pod.netns, ip: "\(pod.ip)")
            self.runtime = runtime ? true : nil
        }

        /// What the ledger records of `pod`'s endpoint on the node `spec` describes (whether a
        /// container runtime made it is the spec's to say).
        init(_ pod: PodSpec, of spec: NodeSpec) { self.init(pod, runtime: spec.runtimePodIDs.contains(pod.id)) }

        init(pod: String, hostDevice: String, netns: String, ip: String) {
            self.pod = pod
            self.hostDevice = hostDevice
            self.netns = netns
            self.ip = ip
        }
    }

    public var apiVersion = NodeSpec.apiVersion
    public var node: String
    /// Endpoints that may exist on the node. Written as the union of old and new before an
    /// apply starts (so a crash leaves nothing unknown) and as the new set after it.
    public var endpoints: [Endpoint]
    /// Sysctl values found before nodenet first changed them, restored by teardown.
    public var sysctlOriginals: [String: String]
    /// False while an apply is in progress (or was killed).
    public var complete: Bool
    /// The bpffs directory of the node's pinned maps, when the BPF datapath was used.
    public var bpffsDirectory: String?
    /// Earlier bpffs directories that may still hold nodenet's pins (the spec's directory
    /// changed): cleaned by the next apply, or by teardown.
    public var formerBPFFSDirectories: [String]?
    public var updatedAt: String
    /// Set when this ledger was rebuilt from the kernel because the one on disk could not be
    /// trusted (what happened, where the old file went); cleared by the next apply.
    public var recovery: String?

    public init(node: String) {
        self.node = node
        endpoints = []
        sysctlOriginals = [:]
        complete = true
        updatedAt = ""
    }

    public static func path(in directory: String) -> String { directory + "/ledger.json" }

    /// Every bpffs directory where nodenet may have pinned something on this node.
    public var pinDirectories: [String] {
        ([bpffsDirectory].compactMap { $0 } + (formerBPFFSDirectories ?? [])).uniqued()
    }

    /// What reading a node's ledger found.
    public enum Reading: Sendable, Equatable {
        /// No ledger: a node nodenet has not applied (or that was torn down).
        case none
        case valid(Ledger)
        /// A ledger that cannot be trusted (unreadable, not JSON, another node's, or naming
        /// things nodenet never writes): why, and where it was moved (nil when left in place).
        case untrusted(reason: String, movedTo: String?)
    }

    /// The largest ledger read (a node's ledger is a few KiB; 10 000 endpoints < 2 MiB).
    static let sizeLimit = 16 << 20

    /// Reads and checks the ledger in `directory`. Never throws: a ledger that cannot be trusted
    /// is reported (and, with `moveAside`, renamed `ledger.json.corrupt-<time>` for a person
    /// to read), so a damaged file can never wedge the node.
    public static func read(from directory: String, node: String, moveAside: Bool) -> Reading {
        let path = path(in: directory)
        let data: Data
        do {
            data = try StateFile.readText(path, limit: sizeLimit)
        } catch let error where error.reason == .missing {
            return .none
        } catch {
            return untrusted("\(error)", path, moveAside)
        }
        let ledger: Ledger
        do {
            ledger = try JSONDecoder().decode(Ledger.self, from: data)
        } catch {
            return untrusted(
                "the ledger \(path) is not a ledger: \(JSONValue.describe(error, in: data))", path, moveAside)
        }
        let problems = ledger.problems(node: node)
        guard problems.isEmpty else {
            return untrusted(
                "the ledger \(path) names what nodenet never writes: \(problems.joined(separator: "; "))", path,
                moveAside)
        }
        return .valid(ledger)
    }

    private static func untrusted(_ reason: String, _ path: String, _ moveAside: Bool) -> Reading {
        .untrusted(reason: reason, movedTo: moveAside ? StateFile.moveAside(path) : nil)
    }

    /// Everything in the ledger nodenet itself would never have written: such a ledger was
    /// damaged or planted, and acting on it could delete a device or write a sysctl that is
    /// not ours.
    func problems(node expected: String) -> [String] {
        var problems: [String] = []
        if apiVersion != NodeSpec.apiVersion { problems.append("apiVersion \"\(apiVersion)\"") }
        if node != expected { problems.append("node \"\(node)\" (this node is \"\(expected)\")") }
        for endpoint in endpoints where !NodeNetNames.isEndpointDevice(endpoint.hostDevice) {
            problems.append("endpoint device \"\(endpoint.hostDevice)\" (not lxc + 12 hex digits)")
        }
        for (key, value) in sysctlOriginals.sorted(by: { $0.key < $1.key }) {
            if !NodeNetNames.globalSysctls.contains(key) {
                problems.append(
                    "sysctl \"\(key)\" (nodenet only records \(NodeNetNames.globalSysctls.sorted().joined(separator: ", ")))"
                )
            } else if value.isEmpty || value.count > 16 || !value.allSatisfy(\.isNumber) {
                problems.append("sysctl \(key) value \"\(value)\"")
            }
        }
        for directory in pinDirectories where !Paths.isStrictlyBelow(directory, BPFFS.root) {
            problems.append("bpffs directory \"\(directory)\" (not below \(BPFFS.root))")
        }
        return problems
    }

    /// Ownership rebuilt from the kernel when the ledger is lost: every device with an
    /// endpoint's name (`lxc` + 12 hex digits) and the spec's bpffs directory. Routes need no
    /// ledger (nodenet's route protocol marks them). What was there before nodenet's first
    /// apply (the sysctl originals) cannot be rebuilt.
    public static func rebuilt(node: String, links: [Link], bpffsDirectory: String?, reason: String) -> Ledger {
        var ledger = Ledger(node: node)
        ledger.endpoints = links.map(\.name).filter(NodeNetNames.isEndpointDevice).sorted().map {
            Endpoint(pod: "(unknown: rebuilt from the kernel)", hostDevice: $0, netns: "", ip: "")
        }
        ledger.bpffsDirectory = bpffsDirectory
        ledger.complete = false
        ledger.recovery = reason
        return ledger
    }

    /// Writes the ledger atomically (`StateFile.writeAtomically`: temporary file, rename).
    public func save(to directory: String) throws {
        var copy = self
        copy.updatedAt = Date().formatted(.iso8601)
        try Paths.createPrivateDirectory(directory, what: "state directory")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try StateFile.writeAtomically(try encoder.encode(copy), to: Self.path(in: directory), what: "the ledger")
    }

    /// The ledger file's exact bytes (to put back after a rollback), nil when there is none.
    static func snapshot(in directory: String) -> Data? { FileManager.default.contents(atPath: path(in: directory)) }

    /// Puts back a snapshot taken with `snapshot(in:)` (removes the ledger when it was nil).
    static func restore(_ snapshot: Data?, in directory: String) {
        guard let snapshot else { return remove(from: directory) }
        try? StateFile.writeAtomically(snapshot, to: path(in: directory), what: "the ledger")
    }

    public static func remove(from directory: String) {
        unlink(path(in: directory))
        rmdir(directory)
    }
}

extension Array where Element: Hashable {
    func uniqued() -> [Element] {
        var seen: Set<Element> = []
        return filter { seen.insert($0).inserted }
    }
}
