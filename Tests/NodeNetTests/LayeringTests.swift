import Foundation
import Testing

/// The structure docs/architecture.md draws, checked against the sources so the page cannot
/// drift from the tree: NodeNet's folders are layers (each uses only the folders above it), no
/// product target imports the lab, and product code starts no processes.
struct LayeringTests {
    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Sources")

    /// NodeNet's folders, top (used by everything below) first: docs/architecture.md's table.
    static let layers = [
        "Support", "Spec", "Cluster", "State", "Endpoints", "Datapath", "Desired", "Observe", "Plan", "Apply", "Node",
    ]

    static func swiftFiles(in directory: URL) -> [URL] {
        let enumerator = FileManager.default.enumerator(at: directory, includingPropertiesForKeys: nil)
        return (enumerator?.allObjects as? [URL] ?? []).filter { $0.pathExtension == "swift" }
    }

    /// Source text without comments and string contents (names there are not uses).
    static func code(_ text: String) -> String {
        text.replacingOccurrences(of: #"//[^\n]*"#, with: "", options: .regularExpression)
            .replacingOccurrences(of: #""[^"\n]*""#, with: "\"\"", options: .regularExpression)
    }

    static func declarations(_ text: String, topLevelOnly: Bool) -> Set<String> {
        let indent = topLevelOnly ? "" : #"[ \t]*"#
        let pattern =
            "(?m)^\(indent)(?:@\\w+ )*(?:(?:public|package|internal|private|fileprivate|final|indirect) )*"
            + #"(?:struct|enum|class|protocol|typealias|actor) +(\w+)"#
        let regex = try! NSRegularExpression(pattern: pattern)
        let range = NSRange(text.startIndex..., in: text)
        return Set(
            regex.matches(in: text, range: range).compactMap {
                Range($0.range(at: 1), in: text).map { String(text[$0]) }
            })
    }

    @Test func nodeNetsFoldersUseOnlyTheFoldersAboveThem() throws {
        let root = Self.sources.appendingPathComponent("NodeNet")
        var files: [(folder: String, name: String, code: String)] = []
        var owner: [String: String] = [:]
        for folder in Self.layers {
            for file in Self.swiftFiles(in: root.appendingPathComponent(folder)) {
                let text = try String(contentsOf: file, encoding: .utf8)
                files.append((folder, file.lastPathComponent, Self.code(text)))
                for name in Self.declarations(text, topLevelOnly: true) { owner[name] = owner[name] ?? folder }
            }
        }
        #expect(files.count > 50, "read NodeNet's sources from \(root.path)")
        let folders = try FileManager.default.contentsOfDirectory(atPath: root.path).filter {
            !$0.hasSuffix(".swift")
        }
        #expect(Set(folders) == Set(Self.layers), "every folder of NodeNet has its place in the order")
        var problems: [String] = []
        for file in files {
            // A name the file declares itself (a nested `Endpoint`, `Change`) is its own.
            let own = Self.declarations(file.code, topLevelOnly: false)
            let rank = Self.layers.firstIndex(of: file.folder)!
            for (name, folder) in owner where folder != file.folder && !own.contains(name) {
                guard Self.layers.firstIndex(of: folder)! > rank else { continue }
                if file.code.range(of: #"(?<![.\w])\#(name)\b"#, options: .regularExpression) != nil {
                    problems.append("\(file.folder)/\(file.name) uses \(name) of \(folder)/, a layer below it")
                }
            }
        }
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
    }

    @Test func noProductTargetImportsTheLabOrStartsAProcess() throws {
        let products = ["Netlink", "BPF", "NodeNet", "NodeNetAgent", "Etcd", "NodeNetJSON", "nodenet-cni", "nodenetd"]
        var problems: [String] = []
        for target in products {
            for file in Self.swiftFiles(in: Self.sources.appendingPathComponent(target)) {
                let code = Self.code(try String(contentsOf: file, encoding: .utf8))
                let name = "\(target)/\(file.lastPathComponent)"
                if target != "nodenetd", code.contains("import NodeNetLab") {
                    problems.append("\(name) imports the lab")
                }
                for call in ["Process()", "posix_spawn", "system(", "execv", "fork()"] where code.contains(call) {
                    problems.append("\(name) calls \(call)")
                }
            }
        }
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
    }
}
