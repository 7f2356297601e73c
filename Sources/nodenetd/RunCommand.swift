import ArgumentParser
import Dispatch
import Foundation
import Logging
import NodeNet
import NodeNetAgent

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Apply the spec, then keep the node converged until stopped.",
        discussion: """
            Level-triggered: netlink events on objects nodenet owns (a deleted route or lxc veth, an rp_filter flip),
            a periodic full re-plan, and spec changes (the file edited or atomically replaced, or SIGHUP) each re-plan
            against a fresh read of the kernel and repair what differs. An invalid new spec is rejected with its
            problems and the running one is kept. SIGTERM/SIGINT stop the agent without tearing anything down;
            started again, it adopts what is there and changes nothing that is already right. The endpoint API
            (--api-socket) is where nodenet-cni asks for pods: see docs/cni.md.
            """)

    @Option(help: "The node spec (JSON); watched for changes.") var spec: String
    @Option(help: "Work on the node that is this network namespace instead of the current one.") var netns: String?
    @Option(help: "Seconds between full re-plans.") var resyncInterval: Double = 30
    @Option(
        help:
            "Seconds between audits of the BPF datapath (links, filters, maps against the last verified apply; a difference starts a reconcile); 0 turns them off. An audit is followed by at least 50 times its own duration (at most 2 % of a core: a node with 100 000 services is audited every few seconds)."
    )
    var bpfAuditInterval: Double = 1
    @Option(help: "Log format: logfmt or json.") var logFormat: String = "logfmt"
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel: String = "info"
    @Option(
        help: "Serve /healthz and /metrics on HOST:PORT (loopback, e.g. 127.0.0.1:9962) or unix:PATH. Off by default.")
    var healthAddress: String?
    @Option(
        help: ArgumentHelp(
            "The endpoint API's unix socket (nodenet-cni talks to it), or 'off'.",
            discussion: "Default /run/nodenet/<node>/nodenet.sock; mode 0600, root peers only.", valueName: "path"))
    var apiSocket: String?

    func validate() throws {
        guard StructuredLogHandler.Format(rawValue: logFormat) != nil else {
            throw ValidationError("--log-format must be logfmt or json")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        guard bpfAuditInterval == 0 || (bpfAuditInterval >= 0.1 && bpfAuditInterval <= 3600) else {
            throw ValidationError("--bpf-audit-interval must be 0 (off) or between 0.1 and 3600 seconds")
        }
        guard resyncInterval >= 0.1 && resyncInterval <= 86400 else {
            throw ValidationError("--resync-interval must be between 0.1 and 86400 seconds")
        }
        if let apiSocket, apiSocket != "off" {
            guard apiSocket.hasPrefix("/"), apiSocket.utf8.count < 100 else {
                throw ValidationError("--api-socket must be an absolute path shorter than 100 bytes, or 'off'")
            }
        }
        if let healthAddress {
            guard let a = StatusServer.Address(healthAddress) else {
                throw ValidationError("--health-address must be HOST:PORT or unix:/path")
            }
            if case .tcp(let ip, _) = a, !IPPrefix("127.0.0.0/8").contains(ip) {
                throw ValidationError("--health-address must be on loopback (127.0.0.0/8) or a unix socket")
            }
        }
    }

    func run() throws {
        let format = StructuredLogHandler.Format(rawValue: logFormat)!
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in StructuredLogHandler(subsystem: label, format: format, level: level) }
        let agent = NodeAgent(
            options: NodeAgent.Options(
                specPath: spec, namespace: netns.map(NamespaceReference.init) ?? .current,
                resyncInterval: .milliseconds(Int64(resyncInterval * 1000)),
                bpfAuditInterval: bpfAuditInterval == 0 ? nil : .milliseconds(Int64(bpfAuditInterval * 1000)),
                apiSocket: apiSocket == "off" ? .off : apiSocket.map { .path($0) } ?? .standard),
            logger: { Logger(label: $0) })

        var server: StatusServer?
        if let healthAddress {
            server = try StatusServer(address: StatusServer.Address(healthAddress)!) { [agent] path in
                agent.httpResponse(path: path)
            }
            Logger(label: "agent").info("serving /healthz and /metrics", metadata: ["address": "\(healthAddress)"])
        }
        defer { server?.stop() }

        var sources: [DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { if sig == SIGHUP { agent.reload(reason: "SIGHUP") } else { agent.stop() } }
            source.resume()
            sources.append(source)
        }

        let done = DispatchSemaphore(value: 0)
        let outcome = OutcomeBox()
        Task {
            do { try await agent.run() } catch { outcome.error = error }
            done.signal()
        }
        done.wait()
        if let error = outcome.error { throw error }
    }
}

final class OutcomeBox: @unchecked Sendable {
    var error: (any Error)?
}
