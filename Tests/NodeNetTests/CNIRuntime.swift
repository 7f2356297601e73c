import Foundation
import TestSupport

/// A container runtime for the CNI tests: Debian's libcni (through `Tests/CNIClient`, built by
/// scripts/build-cni-client.sh) executing `nodenet-cni` and containernetworking-plugins from
/// `/usr/lib/cni`, inside the test node's network namespace as a runtime on that node would.
struct CNIRuntime: Sendable {
    /// The package's root (this file is Tests/NodeNetTests/CNIRuntime.swift).
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    /// The built client, or why there is none (the suite is then skipped with that reason).
    static let client: (path: String?, reason: String) = {
        let path = packageRoot + "/.build/cni-client/cni-client"
        guard FileManager.default.fileExists(atPath: "/usr/share/gocode/src/github.com/containernetworking/cni/libcni"),
            FileManager.default.isExecutableFile(atPath: "/usr/bin/go")
        else { return (nil, "golang-go and golang-github-appc-cni-dev are not installed (scripts/install-deps.sh)") }
        guard let built = try? runTool([packageRoot + "/scripts/build-cni-client.sh"]), built.status == 0 else {
            return (nil, "the CNI client does not build (scripts/build-cni-client.sh)")
        }
        return (path, "")
    }()

    /// With `NODENET_REQUIRE_ROOT=1` the suite runs (and fails) without the client too.
    static var available: Bool { Privileges.runsNamespaceTests && (client.path != nil || Privileges.required) }
    static var skipReason: String { Privileges.canManageNamespaces ? client.reason : Privileges.skipReason }

    /// The directory the runtime finds plugins in: nodenet-cni (beside the test binary) and
    /// the Debian plugins.
    let pluginDirectory: String
    let directory: String
    let node: String

    /// A runtime on `node` (a network namespace name) in a fresh directory under /tmp.
    init(node: String, directory: String) throws {
        self.node = node
        self.directory = directory
        pluginDirectory = directory + "/bin"
        try FileManager.default.createDirectory(atPath: pluginDirectory, withIntermediateDirectories: true)
        let plugin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("nodenet-cni").path
        guard FileManager.default.isExecutableFile(atPath: plugin) else {
            throw CNIFailure(code: -1, msg: "build nodenet-cni first (swift build)")
        }
        try FileManager.default.createSymbolicLink(
            atPath: pluginDirectory + "/nodenet-cni", withDestinationPath: plugin)
    }

    /// A configuration list for nodenet-cni on `socket`, optionally followed by `portmap`.
    func conflist(
        socket: String, version: String = "1.0.0", portmap: Bool = false, name: String = "list"
    )
        throws -> String
    {
        var plugins: [[String: Any]] = [
            ["type": "nodenet-cni", "socket": socket, "dns": ["nameservers": ["10.96.0.10"]]]
        ]
        if portmap {
            plugins.append(["type": "portmap", "capabilities": ["portMappings": true], "snat": true])
        }
        let list: [String: Any] = ["cniVersion": version, "name": "nodenet", "plugins": plugins]
        let path = "\(directory)/\(name).conflist"
        try JSONSerialization.data(withJSONObject: list, options: [.sortedKeys]).write(
            to: URL(fileURLWithPath: path))
        return path
    }

    struct CNIFailure: Error, CustomStringConvertible {
        var code: Int
        var msg: String
        var description: String { "CNI error \(code): \(msg)" }
    }

    /// Runs `command` through libcni; the result (ADD) or nil; a CNI error is thrown. The client
    /// runs on a thread of its own: it waits for the in-process agent, which needs the test
    /// process's concurrency threads (a blocked one of two, with another suite blocking the
    /// other, would leave the agent no thread to answer on).
    @discardableResult
    func run(
        _ command: String, conflist: String, id: String = "", netns: String = "", args: String = "",
        valid: [String] = [], capabilityArgs: String? = nil
    ) async throws -> [String: Any]? {
        let answer = try await withCheckedThrowingContinuation { (done: CheckedContinuation<JSONBox, any Error>) in
            Thread.detachNewThread {
                done.resume(
                    with: Result {
                        JSONBox(
                            try self.runBlocking(
                                command, conflist: conflist, id: id, netns: netns, args: args, valid: valid,
                                capabilityArgs: capabilityArgs))
                    })
            }
        }
        return answer.value
    }

    /// `runTool` on a thread of its own (for tools that talk to the in-process agent).
    static func tool(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await withCheckedThrowingContinuation { done in
            Thread.detachNewThread { done.resume(with: Result { try runTool(arguments) }) }
        }
    }

    final class JSONBox: @unchecked Sendable {
        let value: [String: Any]?
        init(_ value: [String: Any]?) { self.value = value }
    }

    private func runBlocking(
        _ command: String, conflist: String, id: String, netns: String, args: String, valid: [String],
        capabilityArgs: String?
    ) throws -> [String: Any]? {
        guard let client = CNIRuntime.client.path else { throw CNIFailure(code: -1, msg: CNIRuntime.client.reason) }
        var arguments = [
            "ip", "netns", "exec", node, client, command, "-conflist", conflist, "-path",
            pluginDirectory + ":/usr/lib/cni", "-cache", directory + "/cache", "-id", id, "-netns", netns, "-args",
            args,
            "-valid", valid.joined(separator: ","),
        ]
        if let capabilityArgs { arguments += ["-portmap", capabilityArgs] }
        let out = try runTool(arguments)
        guard let data = out.output.split(separator: "\n").last.map({ Data($0.utf8) }),
            let json = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { throw CNIFailure(code: -1, msg: "the client printed no JSON: \(out.output)") }
        guard json["ok"] as? Bool == true else {
            throw CNIFailure(code: json["code"] as? Int ?? -1, msg: json["msg"] as? String ?? "\(json)")
        }
        return json["result"] as? [String: Any]
    }
}
