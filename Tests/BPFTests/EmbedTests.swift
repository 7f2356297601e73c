import Foundation
import TestSupport
import Testing

/// The build step that compiles bpf/*.c (Tools/bpf-embed): the embedded objects must not
/// depend on where the package is checked out (their digest names the build in filter and
/// link names), and the multiarch include directory is found, not assumed.
@Suite struct EmbedTests {
    static let binaries = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    static var tool: String { binaries.appendingPathComponent("bpf-embed").path }
    static var clang: String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let dirs = path.split(separator: ":").map(String.init) + ["/opt/swift/usr/bin", "/usr/bin"]
        return dirs.map { "\($0)/clang" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
    /// The package's bpf/ directory (this file is Tests/BPFTests/EmbedTests.swift).
    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
        .appendingPathComponent("bpf")

    @Test func theEmbeddedObjectsDoNotDependOnTheCheckoutPath() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.tool), "bpf-embed is built with the package")
        let clang = try #require(Self.clang)
        let base = FileManager.default.temporaryDirectory.appendingPathComponent(TestNames.unique("embed")).path
        defer { try? FileManager.default.removeItem(atPath: base) }
        var outputs: [String] = []
        for checkout in ["\(base)/a", "\(base)/somewhere/much/deeper/checkout"] {
            try FileManager.default.createDirectory(atPath: checkout, withIntermediateDirectories: true)
            try Self.copyContents(of: Self.sources.path, to: "\(checkout)/bpf")
            let sources = try FileManager.default.contentsOfDirectory(atPath: "\(checkout)/bpf").filter {
                $0.hasSuffix(".c")
            }.sorted().map { "\(checkout)/bpf/\($0)" }
            let run = try runTool(
                [
                    "BPF_EMBED_PRINT_ARGS=1", Self.tool, clang, "\(checkout)/out.swift", "\(checkout)/work",
                    "\(checkout)/bpf",
                ] + sources)
            #expect(run.status == 0, "\(run.output)")
            #expect(run.output.contains("-ffile-prefix-map=\(checkout)=."), "\(run.output)")
            if let triple = ["x86_64-linux-gnu", "aarch64-linux-gnu"].first(where: {
                FileManager.default.fileExists(atPath: "/usr/include/\($0)/asm/types.h")
            }) {
                #expect(run.output.contains("-I/usr/include/\(triple)"), "the multiarch directory that has asm/types.h")
            }
            outputs.append(try String(contentsOfFile: "\(checkout)/out.swift", encoding: .utf8))
        }
        #expect(outputs[0] == outputs[1], "same sources, two checkout paths: the same embedded objects (and digests)")
    }

    /// Copies a directory's files by content (copyItem would also copy ownership, which an
    /// unprivileged run may not).
    static func copyContents(of source: String, to destination: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: destination, withIntermediateDirectories: true)
        for name in try fm.contentsOfDirectory(atPath: source) {
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: "\(source)/\(name)", isDirectory: &isDirectory) else { continue }
            if isDirectory.boolValue {
                try copyContents(of: "\(source)/\(name)", to: "\(destination)/\(name)")
            } else {
                try Data(contentsOf: URL(fileURLWithPath: "\(source)/\(name)")).write(
                    to: URL(fileURLWithPath: "\(destination)/\(name)"))
            }
        }
    }
}
