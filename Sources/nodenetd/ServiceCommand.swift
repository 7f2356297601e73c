import ArgumentParser
import Foundation
import NodeNet

struct ServiceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service", abstract: "Services programmed in the node's BPF maps (kube-proxy replacement).",
        subcommands: [List.self, ConntrackCommand.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "Every frontend with its backends, read from the node's maps (like `cilium service list`).",
            discussion: """
                One row per backend: `ID  Frontend  Service Type  Backend`, e.g. `11  10.96.18.68:80/TCP  ClusterIP  1 => \
                10.0.1.15:80/TCP (active)`. A NodePort service shows its ClusterIP frontend, one per node address and the \
                wildcard 0.0.0.0:nodePort. Ids are stable across applies and restarts. A frontend from an interrupted apply is \
                marked (incomplete), one no longer in the spec (stale).
                """)
        @OptionGroup var options: SpecOptions
        @Flag(
            help:
                "Print JSON: [{id, frontend, address, port, protocol, type, flags, service, state, backends: [{index, id, address, port, protocol, state}]}]."
        )
        var json = false

        func run() throws {
            let rows = try options.controller().services()
            if json { return try printJSON(rows) }
            var table: [[String]] = []
            for row in rows {
                let mark =
                    (row.flags.isEmpty ? "" : " (\(row.flags.joined(separator: ", ")))")
                    + (row.state == "ok" ? "" : " (\(row.state))")
                let frontend = "\(row.frontend)/\(row.protocol)"
                if row.backends.isEmpty { table.append(["\(row.id)", frontend, row.type + mark, ""]) }
                for (i, b) in row.backends.enumerated() {
                    let backend = "\(b.index) => \(b.address):\(b.port)/\(b.protocol) (\(b.state))"
                    table.append(i == 0 ? ["\(row.id)", frontend, row.type + mark, backend] : ["", "", "", backend])
                }
            }
            printTable(["ID", "Frontend", "Service Type", "Backend"], table)
        }
    }
}
