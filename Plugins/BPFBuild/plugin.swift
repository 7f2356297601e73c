import Foundation
import PackagePlugin

/// Compiles bpf/*.c (the package's BPF programs) with the toolchain's clang and embeds the
/// objects into the target, so `swift build` alone produces a daemon that needs no clang.
@main
struct BPFBuild: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let bpf = context.package.directoryURL.appending(path: "bpf")
        let files = try FileManager.default.contentsOfDirectory(atPath: bpf.path)
        let sources = files.filter { $0.hasSuffix(".c") }.sorted().map { bpf.appending(path: $0) }
        let headers = try FileManager.default.contentsOfDirectory(atPath: bpf.appending(path: "lib").path)
            .filter { $0.hasSuffix(".h") }.map { bpf.appending(path: "lib").appending(path: $0) }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedBPFObjects.swift")
        let clang = (try? context.tool(named: "clang").url.path) ?? Self.findClang()
        return [
            .buildCommand(
                displayName: "Compiling BPF programs (\(sources.count)) with \(clang)",
                executable: try context.tool(named: "bpf-embed").url,
                arguments: [
                    clang, output.path, context.pluginWorkDirectoryURL.appending(path: "objects").path, bpf.path,
                ] + sources.map(\.path),
                inputFiles: sources + headers,
                outputFiles: [output])
        ]
    }

    /// The clang next to the Swift compiler (the toolchain's, which targets BPF), else PATH.
    static func findClang() -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin"
        for dir in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(dir)/swiftc") {
            if FileManager.default.isExecutableFile(atPath: "\(dir)/clang") { return "\(dir)/clang" }
        }
        for dir in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(dir)/clang") {
            return "\(dir)/clang"
        }
        return "/opt/swift/usr/bin/clang"
    }
}
