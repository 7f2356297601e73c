import ArgumentParser
import Foundation
import NodeNet
import NodeNetLab

/// `nodenetd lab demo`: builds the seed's cluster and replays the seed walkthrough, printing
/// each observation with PASS / FAIL and its evidence. Exit status 1 if any check fails.
struct LabDemo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo", abstract: "Build the seed's cluster, replay the seed walkthrough as checks, tear down.")

    @Option(help: "The lab's name.") var name = "demo"
    @Flag(help: "Leave the lab up afterwards (remove it with `nodenetd lab down --name demo`).") var keep = false
    @Option(
        help: ArgumentHelp(
            "etcd: the same checks with nodes and services from a 3-member etcd, plus a node joining, an agent killed (its routes go everywhere after the grace) and back, an etcd member killed, and a service applied to the cluster.",
            valueName: "spec|etcd"))
    var controlPlane: LabCluster.ControlPlane = .spec

    func run() throws {
        var c = LabCluster.seed(name: name)
        c.controlPlane = controlPlane
        let interrupt = LabInterrupt()
        let start = Date()
        print(
            "== nodenet lab demo: the seed's kind cluster (3 nodes, native routing) in network namespaces"
                + (controlPlane == .etcd ? ", nodes and services from etcd (3 members)" : ""))
        try LabRuntime.up(c, interrupt: interrupt)
        let demo = LabWalkthrough(cluster: c) { print($0) }
        defer {
            if !keep { Lab.down(name: c.name) }
        }
        demo.runAll(interrupted: { interrupt.fired })
        if controlPlane == .etcd, !interrupt.fired { demo.runClusterChecks() }
        print(
            String(
                format: "\n%d passed, %d failed, %d not yet (%.1f s)%@", demo.passed, demo.failed, demo.pending,
                Date().timeIntervalSince(start), keep ? "; lab left up: nodenetd lab down --name \(c.name)" : ""))
        if demo.failed > 0 || interrupt.fired { throw ExitCode.failure }
    }
}
