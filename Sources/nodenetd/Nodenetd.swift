import ArgumentParser
import Foundation
import NodeNet
import NodeNetLab

@main
struct Nodenetd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nodenetd",
        abstract: "Pod networking for one Linux node, Cilium-style native routing, driven by a declarative spec.",
        discussion: """
            A node spec (JSON, apiVersion nodenet/v1; see docs/spec.md) describes the node, its pods and the
            other nodes. `plan` shows what `apply` would change, `apply` makes the kernel match and verifies it.
            Work on another network namespace (a lab node) with --netns NAME.

            Exit status: 0 success, 1 failure (kernel error, verification mismatch, conflict),
            2 invalid input (bad spec, bad arguments).
            """,
        subcommands: [
            ApplyCommand.self, PlanCommand.self, RunCommand.self, StatusCommand.self, EndpointCommand.self,
            RouteCommand.self,
            ServiceCommand.self, ClusterCommand.self, TeardownCommand.self, MonitorCommand.self, LabCommand.self,
        ])

    /// Maps errors to the documented exit codes: 2 for invalid input, 1 for the rest.
    static func main() {
        // A client that goes away mid-response must never kill the daemon.
        signal(SIGPIPE, SIG_IGN)
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let error as SpecError {
            printError(error.description)
            Foundation.exit(2)
        } catch let error as InvalidInput {
            printError(error.message)
            Foundation.exit(2)
        } catch let error as LabError {
            printError(error.description)
            if case .interrupted = error { Foundation.exit(130) }
            Foundation.exit(2)
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }  // --help, --version
            if code == .validationFailure {
                printError(fullMessage(for: error))
                Foundation.exit(2)
            }
            printError("nodenetd: \(error)")
            Foundation.exit(1)
        }
    }
}

struct InvalidInput: Error {
    let message: String
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
}

/// Options shared by the commands that read a node spec.
struct SpecOptions: ParsableArguments {
    @Argument(help: "The node spec (JSON).")
    var spec: String

    @Option(
        name: .long,
        help:
            "Work on the node that is this network namespace (a name under /var/run/netns or a path) instead of the current one."
    )
    var netns: String?

    var namespace: NamespaceReference { netns.map(NamespaceReference.init) ?? .current }

    func controller() throws -> NodeController { try NodeController(spec: try loadSpec(), namespace: namespace) }

    /// The spec file with the cluster its agent last saw (cluster mode) and the CNI endpoints it keeps.
    func loadSpec() throws -> NodeSpec { try NodeSpec.load(path: spec).withCachedCluster().withEndpoints() }
}

/// Prints a value as pretty, key-sorted JSON.
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Left-aligned columns, like `cilium endpoint list`.
func printTable(_ header: [String], _ rows: [[String]]) {
    let widths = header.indices.map { i in ([header[i]] + rows.map { $0[i] }).map(\.count).max() ?? 0 }
    for row in [header] + rows {
        print(
            row.enumerated().map { i, cell in
                i == row.count - 1 ? cell : cell.padding(toLength: widths[i] + 3, withPad: " ", startingAt: 0)
            }.joined())
    }
}
