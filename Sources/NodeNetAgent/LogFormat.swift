import Foundation
import Logging
import NodeNet
import NodeNetJSON

/// Structured log lines: `logfmt` (`ts=… level=info subsystem=reconcile msg="…" key=value`)
/// or one JSON object per line. The logger's label is the subsystem.
public struct StructuredLogHandler: LogHandler {
    public enum Format: String, Sendable, CaseIterable {
        case logfmt, json
    }

    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    public var metadataProvider: Logger.MetadataProvider?
    let subsystem: String
    let format: Format
    let output: @Sendable (String) -> Void

    public init(
        subsystem: String, format: Format, level: Logger.Level = .info,
        output: @escaping @Sendable (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
    ) {
        self.subsystem = subsystem
        self.format = format
        self.logLevel = level
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [(String, String)] = [
            ("ts", Self.timestamp()), ("level", event.level.rawValue), ("subsystem", subsystem),
            ("msg", event.message.description),
        ]
        let merged = metadata.merging(metadataProvider?.get() ?? [:]) { a, _ in a }.merging(event.metadata ?? [:]) {
            _, b in b
        }
        for (k, v) in merged.sorted(by: { $0.key < $1.key }) { fields.append((k, "\(v)")) }
        if let error = event.error { fields.append(("error", "\(error)")) }
        output(Self.render(fields, format))
    }

    static func render(_ fields: [(String, String)], _ format: Format) -> String {
        switch format {
        case .logfmt:
            return fields.map { k, v in
                let needsQuotes =
                    v.isEmpty
                    || v.unicodeScalars.contains { $0 == " " || $0 == "=" || $0 == "\"" || $0 == "\\" || isControl($0) }
                return needsQuotes ? "\(k)=\(quote(v))" : "\(k)=\(v)"
            }.joined(separator: " ")
        case .json:
            return "{" + fields.map { "\(quote($0.0)):\(quote($0.1))" }.joined(separator: ",") + "}"
        }
    }

    /// `s` as a JSON string (control characters escaped: `JSONWriter`).
    static func quote(_ s: String) -> String { JSONValue.string(s).text }

    /// C0 and C1 control characters and DEL: never written raw (a line could be forged, or a
    /// terminal driven, by a value a pod chose).
    static func isControl(_ c: Unicode.Scalar) -> Bool { c.value < 0x20 || (0x7f...0x9f).contains(c.value) }

    /// Now, in UTC with milliseconds (a format style: an `ISO8601DateFormatter` made per line
    /// cost ~50 µs of every line the agent writes).
    static func timestamp() -> String {
        Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}
