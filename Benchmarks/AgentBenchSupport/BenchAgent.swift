// An in-process `nodenetd run` for the benchmarks that measure the agent (not product code).
import BenchSupport
import Foundation
import Logging
import NodeNet
import NodeNetAgent

/// Starts an agent on `specPath` and waits (at most 30 s) for its first verified reconcile.
/// `NODENET_BENCH_LOG=info` shows what it does, on stderr. Stop it with `agent.stop()`.
public func startBenchAgent(
    specPath: String, namespace: NamespaceReference, configure: (inout NodeAgent.Options) -> Void = { _ in }
) throws -> (agent: NodeAgent, run: Task<Void, any Error>) {
    let level =
        ProcessInfo.processInfo.environment["NODENET_BENCH_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .error
    var options = NodeAgent.Options(specPath: specPath, namespace: namespace, resyncInterval: .seconds(3600))
    configure(&options)
    let agent = NodeAgent(
        options: options,
        logger: { label in
            var l = Logger(label: label) { _ in StructuredLogHandler(subsystem: label, format: .logfmt, level: level) }
            l.logLevel = level
            return l
        })
    let run = Task.detached { try await agent.run() }
    let start = Date()
    while agent.health != .healthy {
        guard Date().timeIntervalSince(start) < 30 else { throw BenchError("agent did not converge: \(agent.health)") }
        usleep(1000)
    }
    return (agent, run)
}
