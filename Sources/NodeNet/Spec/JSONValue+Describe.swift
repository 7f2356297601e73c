import Foundation
import NodeNetJSON

extension JSONValue {
    /// A decoding failure in words: what is wrong and where (line and column), never
    /// `DecodingError` or "The given data was not valid JSON".
    package static func describe(_ error: any Error, in data: Data) -> String {
        if let syntax = error as? JSONSyntaxError {
            if syntax.truncated { return "not valid JSON: it ends in the middle of a value" }
            let (line, column) = position(of: syntax.offset, in: data)
            return "not valid JSON: unexpected text at line \(line), column \(column) (\(syntax.problem))"
        }
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
}
