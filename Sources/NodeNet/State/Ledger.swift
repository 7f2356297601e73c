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

    /// The ledger in `directory`, or nil when there is none.
    public static func load(from directory: String) throws -> Ledger? {
        let path = path(in: directory)
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        do {
            return try JSONDecoder().decode(Ledger.self, from: data)
        } catch {
            throw NodeNetError.state("reading the ledger \(path): \(error)")
        }
    }

    /// Writes the ledger atomically (temporary file + rename).
    public func save(to directory: String) throws {
        var copy = self
        copy.updatedAt = ISO8601DateFormatter().string(from: Date())
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(copy).write(to: URL(fileURLWithPath: Self.path(in: directory)), options: .atomic)
        } catch {
            throw NodeNetError.state("writing the ledger in \(directory): \(error)")
        }
    }

    /// The ledger file's exact bytes (to put back after a rollback), nil when there is none.
    static func snapshot(in directory: String) -> Data? { FileManager.default.contents(atPath: path(in: directory)) }

    /// Puts back a snapshot taken with `snapshot(in:)` (removes the ledger when it was nil).
    static func restore(_ snapshot: Data?, in directory: String) {
        guard let snapshot else { return remove(from: directory) }
        try? snapshot.write(to: URL(fileURLWithPath: path(in: directory)), options: .atomic)
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
