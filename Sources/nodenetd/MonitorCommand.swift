import ArgumentParser
import Foundation
import NodeNet

struct MonitorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "monitor", abstract: "Print datapath events live, like `cilium monitor` (BPF datapath).",
        discussion: """
            One line per verdict of the node's BPF programs: local-redirect (into a pod on this node),
            remote-redirect (to the next hop of another node), to-stack, arp-reply, and drop with its reason.
            Events are emitted only while a monitor runs. Stops after --count events, after --duration seconds,
            or on Ctrl-C.
            """)

    @OptionGroup var options: SpecOptions
    @Option(help: "Stop after this many events.") var count: Int?
    @Option(help: "Stop after this many seconds.") var duration: Double?
    @Flag(help: "One JSON object per event.") var json = false

    func run() throws {
        let controller = try options.controller()
        guard controller.spec.datapath.mode == .bpf else {
            throw InvalidInput(
                message:
                    "monitor: node \(controller.spec.node.name) uses datapath.mode \(controller.spec.datapath.mode.rawValue); events come from the BPF datapath"
            )
        }
        let names = Dictionary(
            try controller.session.node.links().map { ($0.index, $0.name) }, uniquingKeysWith: { a, _ in a })
        let monitor = try DatapathMonitor(bpffsDirectory: controller.spec.bpffsDirectory)
        let interrupt = StopFlag()
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler { interrupt.stop() }
        source.resume()
        if !json { printError("listening for datapath events on \(controller.spec.node.name) (Ctrl-C to stop)") }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let deadline = duration.map { Date().addingTimeInterval($0) }
        var seen = 0
        while !interrupt.isStopped {
            if let deadline, Date() >= deadline { break }
            for event in try monitor.poll(milliseconds: 100, names: names) {
                if json { print(String(decoding: try encoder.encode(event), as: UTF8.self)) } else { print(event) }
                fflush(nil)  // every stream: each event is seen at once, also through a pipe
                seen += 1
                if let count, seen >= count { return }
            }
        }
    }
}
