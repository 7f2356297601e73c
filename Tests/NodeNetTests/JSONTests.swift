import Foundation
import Testing

@testable import NodeNetJSON

/// `JSONValue`'s own parser and writer (the CNI plugin, the spec reader and etcd records read
/// through them): the same values as Foundation's JSONSerialization for valid text, and
/// strict, located errors for the rest.
@Suite struct JSONTests {
    /// Foundation's reading of the same text, as a JSONValue, to compare with.
    static func foundation(_ text: String) throws -> JSONValue {
        func convert(_ any: Any) -> JSONValue {
            switch any {
            case is NSNull: return .null
            case let n as NSNumber where String(cString: n.objCType) == "c": return .bool(n.boolValue)
            case let n as NSNumber: return .number(n.doubleValue)
            case let s as String: return .string(s)
            case let a as [Any]: return .array(a.map(convert))
            case let o as [String: Any]: return .object(o.mapValues(convert))
            default: return .null
            }
        }
        return convert(try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]))
    }

    @Test(arguments: [
        #"{"cniVersion":"1.0.0","name":"nodenet","type":"nodenet-cni","socket":"/run/nodenet/w/nodenet.sock"}"#,
        #"[1, -2, 3.5, -0.25, 1e3, 2E-2, 0, -0, 12345678901234]"#,
        #"{"a": [true, false, null, {"b": {}}, []], "c": "", " d ": "x y"}"#,
        #""esc \" \\ \/ \b \f \n \r \t \u00e9 \u20ac \ud83d\ude00 é €""#,
        "  \n\t {\"nested\": [[[[1]]]]} \r\n ",
        "true", "null", "-1.5e-7", #""""#,
    ])
    func validTextReadsAsFoundationReadsIt(_ text: String) throws {
        #expect(try JSONValue.parse(Data(text.utf8)) == (try Self.foundation(text)))
    }

    @Test(arguments: [
        ("{\"a\": 1,}", "expected a string as an object's key", 8),
        ("[1 2]", "expected ',' or ']' in an array", 3),
        ("{\"a\" 1}", "expected ':' after the key \"a\"", 5),
        ("{\"a\": 1, \"a\": 2}", "duplicate key \"a\" in an object", 9),
        ("01", "unexpected text after the JSON value", 1),
        ("[1] x", "unexpected text after the JSON value", 4),
        ("\"tab\there\"", "a control character (0x9) inside a string must be escaped", 4),
        ("\"\\x\"", "invalid escape '\\x' in a string", 3),
        ("\"\\ud800\"", "a \\u escape is half of a surrogate pair", 7),
        ("-", "a number ends after '-'", 1),
        ("1.", "a number needs digits after '.'", 2),
        ("1e", "a number needs digits in its exponent", 2),
        ("1e999", "a number is out of range", 0),
        ("tru", "invalid literal (expected true)", 0),
        ("nodenet", "invalid literal (expected null)", 0),
        ("@", "unexpected character '@' where a value was expected", 0),
    ])
    func invalidTextIsRefusedWithWhereAndWhy(_ text: String, _ problem: String, _ offset: Int) {
        #expect(throws: JSONSyntaxError(offset: offset, problem: problem, truncated: offset >= text.utf8.count)) {
            try JSONValue.parse(Data(text.utf8))
        }
    }

    @Test func truncatedTextTooDeepNestingAndBadUTF8AreRefused() throws {
        for cut in ["{\"a\": [1, 2", "\"abc", "[", "{\"a\"", "{\"a\":"] {
            let error = #expect(throws: JSONSyntaxError.self) { try JSONValue.parse(Data(cut.utf8)) }
            #expect(error?.truncated == true, "\(cut)")
        }
        let deep = String(repeating: "[", count: 600) + String(repeating: "]", count: 600)
        let tooDeep = #expect(throws: JSONSyntaxError.self) { try JSONValue.parse(Data(deep.utf8)) }
        #expect(tooDeep?.problem == "nested deeper than 512 levels")
        let ok = String(repeating: "[", count: 500) + String(repeating: "]", count: 500)
        #expect((try? JSONValue.parse(Data(ok.utf8))) != nil)
        let latin1 = #expect(throws: JSONSyntaxError.self) { try JSONValue.parse(Data([0x22, 0xE9, 0x22])) }
        #expect(latin1?.problem == "a string is not valid UTF-8")
        let shortEscape = #expect(throws: JSONSyntaxError.self) { try JSONValue.parse(Data(#""\u12"#.utf8)) }
        #expect(shortEscape?.truncated == true)
        // A byte order mark before the text is skipped.
        #expect(try JSONValue.parse(Data([0xEF, 0xBB, 0xBF] + Array(#"{"a": 1}"#.utf8))) == .object(["a": .number(1)]))
    }

    /// The writer: compact, keys sorted, whole numbers as integers, escapes only where JSON
    /// needs them; what it writes reads back the same.
    @Test func textIsCompactSortedAndReadsBack() throws {
        let value: JSONValue = .object([
            "b": .array([.number(1), .number(1.5), .number(-3), .number(1e20), .bool(true), .null]),
            "a": .string("q\"b\\s/n\n\u{01}é😀"), "c": .object([:]),
        ])
        #expect(
            value.text == #"{"a":"q\"b\\s/n\n\u0001é😀","b":[1,1.5,-3,1e+20,true,null],"c":{}}"#)
        #expect(try JSONValue.parse(Data(value.text.utf8)) == value)
        #expect(try Self.foundation(value.text) == value)
        // JSON has no NaN or infinity: written as null (parsing never makes them).
        #expect(JSONValue.array([.number(.nan), .number(.infinity)]).text == "[null,null]")
    }
}
