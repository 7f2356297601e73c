import ArgumentParser
import Foundation
import NodeNet

struct ConntrackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ct",
        abstract:
            "The BPF connection-tracking table of packet-level translation (NodePort from outside, masquerading).",
        discussion: """
            Socket-level load balancing needs no connection tracking: only flows translated per packet are here.
            `nodenetd run` collects idle entries every resync; `gc` does it once.
            """,
        subcommands: [List.self, Collect.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list", abstract: "Every entry: kind, protocol, tuple, translation, idle time.")
        @OptionGroup var options: SpecOptions
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let spec = try options.loadSpec()
            let rows = try Conntrack.list(bpffsDirectory: spec.bpffsDirectory)
            if json { return try printJSON(rows) }
            printTable(
                ["KIND", "PROTO", "SOURCE", "DESTINATION", "TRANSLATED", "IDLE"],
                rows.map {
                    [
                        $0.kind, $0.protocol, $0.source, $0.destination, $0.translated,
                        String(
                            format: "%.0fs%@%@", $0.idleSeconds, $0.closing ? " closing" : "",
                            $0.established ? " established" : ""),
                    ]
                })
        }
    }

    struct Collect: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gc",
            abstract:
                "Remove idle flows (TCP 6 h, closing TCP 10 s, TCP never established 15 s, UDP/ICMP 60 s; both directions judged together)."
        )
        @OptionGroup var options: SpecOptions
        @Flag(help: "Print JSON: {scanned, removed}.") var json = false

        func run() throws {
            let spec = try options.loadSpec()
            let result = try Conntrack.collect(bpffsDirectory: spec.bpffsDirectory)
            if json { return try printJSON(result) }
            print("scanned \(result.scanned) entries, removed \(result.removed)")
        }
    }
}
