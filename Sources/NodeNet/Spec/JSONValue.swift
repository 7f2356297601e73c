import Foundation

/// A parsed JSON document, so the spec reader can reject unknown fields and report every
/// problem with its path (Codable would stop at the first error and ignore unknown keys).
public enum JSONValue: Sendable, Equatable, Decodable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let n = try? c.decode(Double.self) {
            self = .number(n)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    public static func parse(_ data: Data) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: data)
    }

    /// A decoding failure in words: what is wrong and where (line and column), never
    /// `DecodingError` or "The given data was not valid JSON".
    package static func describe(_ error: any Error, in data: Data) -> String {
        // JSONSerialization says where the syntax breaks ("... around character 3.").
        if (try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])) == nil {
            var reason = "not valid JSON"
            do { _ = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) } catch {
                let detail = ((error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String) ?? ""
                if detail.hasPrefix("Unexpected end of file") {
                    reason += ": it ends in the middle of a value"
                } else if let range = detail.range(of: #"character (\d+)"#, options: .regularExpression),
                    let offset = Int(detail[range].dropFirst("character ".count))
                {
                    let (line, column) = position(of: offset, in: data)
                    reason += ": unexpected text at line \(line), column \(column)"
                } else if !detail.isEmpty {
                    reason += ": \(detail)"
                }
            }
            return reason
        }
        switch error {
        case DecodingError.keyNotFound(let key, let context):
            return "field \(path(context.codingPath + [key])) is missing"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            return "field \(path(context.codingPath)) has the wrong type"
        case DecodingError.dataCorrupted(let context):
            return "field \(path(context.codingPath)) is malformed"
        default:
            return "\(error)"
        }
    }

    private static func path(_ keys: [any CodingKey]) -> String {
        keys.isEmpty
            ? "(top level)"
            : keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingCharacters(in: ["."])
    }

    /// 1-based line and column of a byte offset.
    private static func position(of offset: Int, in data: Data) -> (Int, Int) {
        var line = 1
        var column = 1
        for byte in data.prefix(offset) {
            if byte == 0x0A {
                line += 1
                column = 1
            } else {
                column += 1
            }
        }
        return (line, column)
    }

    var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}
