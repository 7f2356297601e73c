import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The BPF drift the running agent met, for `status` (`<stateDirectory>/audit.json`): found by
/// its audit, or met first by a reconcile for another reason (an event, the resync). Written when
/// auditing starts, when drift is met, and every `lastAuditSaveInterval` (not on every audit).
public struct AuditRecord: Sendable, Codable, Equatable {
    /// The agent that audits (its record is current only while it holds the node's lock).
    public var pid: Int32 = getpid()
    public var intervalSeconds: Double?
    public var since: Date = Date()
    /// The last audit (in the file: as of the last write, at most `lastAuditSaveInterval` old).
    public var lastAudit: Date?
    /// How often the time of the last audit reaches the file.
    public static let lastAuditSaveInterval: TimeInterval = 10
    public var lastDriftAt: Date?
    public var lastDrift: [String]?
    /// Whether the reconcile the drift started verified.
    public var repaired: Bool?

    public init() {}

    public static func path(stateDirectory: String) -> String { stateDirectory + "/audit.json" }

    /// Writes the record (best effort: an audit record is never worth failing for).
    public func save(stateDirectory: String, interval: Duration?) {
        var copy = self
        copy.intervalSeconds = interval.map { Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18 }
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? encoder.encode(copy) else { return }
        try? StateFile.writeAtomically(data, to: Self.path(stateDirectory: stateDirectory), what: "the audit record")
    }

    /// The record of the agent holding the node's lock now; nil when none audits.
    public static func current(stateDirectory: String) -> AuditRecord? {
        guard let holder = NodeLock.holder(stateDirectory: stateDirectory),
            let data = try? StateFile.readText(path(stateDirectory: stateDirectory), limit: 1 << 20)
        else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        guard let record = try? decoder.decode(AuditRecord.self, from: data), record.pid == holder.pid else {
            return nil
        }
        return record
    }

    /// One line for `status`.
    public var summary: String {
        let format = ISO8601DateFormatter()
        let every = intervalSeconds.map { "every \($0 < 1 ? String(format: "%.1f", $0) : String(Int($0))) s" } ?? "off"
        let last = lastAudit.map { ", last audit at \(format.string(from: $0))" } ?? ""
        guard let at = lastDriftAt, let drift = lastDrift else {
            return "\(every)\(last), no drift since \(format.string(from: since))"
        }
        return "\(every)\(last); last drift at \(format.string(from: at)): \(drift.first ?? "?")"
            + (drift.count > 1 ? " (+\(drift.count - 1) more)" : "")
            + ((repaired ?? false) ? ", repaired" : ", NOT repaired")
    }
}
