import ArgumentParser
import Foundation
import NodeNet

/// JSON form of a planned change.
struct ChangeJSON: Encodable {
    let action: String, kind: String, namespace: String, subject: String
    let wanted: String?, found: String?
    init(_ c: PlannedChange) {
        action = c.action.rawValue
        kind = c.kind.rawValue
        namespace = c.namespace.description
        (subject, wanted, found) = c.words
    }
}

struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan", abstract: "Show what apply would change on the node; change nothing.",
        discussion:
            "Compares the spec with a fresh read of the kernel (only objects nodenet owns). '+' creates, '~' updates, '-' deletes."
    )

    @OptionGroup var options: SpecOptions
    @Flag(
        help: "Print JSON: {node, converged, changes: [{action, kind, namespace, subject, wanted, found}], conflicts}.")
    var json = false

    func run() throws {
        let controller = try options.controller()
        let plan = try controller.plan()
        if json {
            struct Out: Encodable { let node: String, converged: Bool, changes: [ChangeJSON], conflicts: [String] }
            try printJSON(
                Out(
                    node: controller.spec.node.name, converged: plan.isEmpty && plan.conflicts.isEmpty,
                    changes: plan.changes.map(ChangeJSON.init), conflicts: plan.conflicts))
        } else if plan.isEmpty && plan.conflicts.isEmpty {
            print("node \(controller.spec.node.name) is converged: no changes")
        } else {
            if !plan.changes.isEmpty {
                print(
                    "\(plan.changes.count) change\(plan.changes.count == 1 ? "" : "s") for node \(controller.spec.node.name):"
                )
            }
            plan.changes.forEach { print("  \($0)") }
            plan.conflicts.forEach { print("  ! conflict: \($0)") }
        }
        if !plan.conflicts.isEmpty { throw ExitCode.failure }
    }
}

struct ApplyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply", abstract: "Make the node match the spec, then verify it.",
        discussion: """
            Validates the spec (nothing is touched if it is invalid), plans against a fresh read of the kernel,
            applies in batches, re-reads and verifies. A failure midway rolls the node back and reports both the
            error and the rollback. A second apply on a converged node makes no kernel writes.
            """)

    @OptionGroup var options: SpecOptions
    @Flag(help: "Print JSON: {node, changes, applied, verified, mismatches, seconds}.")
    var json = false

    func run() throws {
        let controller = try options.controller()
        do {
            let report: ApplyReport
            do {
                report = try controller.apply()
            } catch NodeNetError.conflict(let owner) where owner.hasPrefix("another nodenetd") {
                // Refused rather than handed over: the running agent applies the spec file it was
                // started with, and a second spec from here would fight it at the next reconcile.
                throw NodeNetError.conflict(
                    "\(owner); not applying: the running agent keeps the node at its own spec file (edit that"
                        + " file or send the agent SIGHUP to reload it), or stop the agent first")
            }
            for warning in report.warnings { printError("warning: \(warning)") }
            if json {
                struct Out: Encodable {
                    let node: String, changes: [ChangeJSON], applied: Int, verified: Bool, mismatches: [String],
                        seconds: Double, warnings: [String]
                }
                try printJSON(
                    Out(
                        node: report.node, changes: report.changes.map(ChangeJSON.init), applied: report.changes.count,
                        verified: report.verified, mismatches: report.mismatches, seconds: report.seconds,
                        warnings: report.warnings))
            } else {
                if report.changes.isEmpty {
                    print("node \(report.node) is converged: 0 changes")
                } else {
                    report.changes.forEach { print("  \($0)") }
                    print(
                        String(
                            format: "applied %d change%@ to node %@ in %.3f s", report.changes.count,
                            report.changes.count == 1 ? "" : "s", report.node, report.seconds))
                }
                if report.verified { print("verified: the kernel matches the spec") }
            }
            if !report.verified {
                printError("verification failed:\n" + report.mismatches.map { "  \($0)" }.joined(separator: "\n"))
                throw ExitCode.failure
            }
        } catch let failure as ApplyFailure {
            if json {
                struct Out: Encodable {
                    let node: String, error: String, failedAt: String, rollbackComplete: Bool, notRestored: [String]
                }
                try printJSON(
                    Out(
                        node: controller.spec.node.name, error: "\(failure.error)", failedAt: failure.change.subject,
                        rollbackComplete: failure.rollback.complete, notRestored: failure.rollback.failures))
            }
            printError("nodenetd: \(failure)")
            throw ExitCode.failure
        }
    }
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "One screen about the node, like `cilium status`.")

    @OptionGroup var options: SpecOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let s = try options.controller().status()
        if json { return try printJSON(s) }
        let rows: [(String, String)] = [
            ("Node", "\(s.node) (\(s.namespace))"),
            ("Device", "\(s.device) \(s.address) (Direct Routing)"),
            ("Routing", s.routingMode),
            ("Datapath", s.datapathMode),
            ("KubeProxyReplacement", s.kubeProxyReplacement),
            ("Host Routing", s.hostRouting),
            ("Masquerading", s.masquerading),
            ("IPAM", "\(s.ipamAllocated)/\(s.ipamCapacity) allocated from \(s.podCIDR) (router \(s.routerIP))"),
            ("Endpoints", "\(s.endpointsReady)/\(s.endpoints) ready"),
            ("Remote nodes", "\(s.remoteNodes)"),
            (
                "Services",
                "\(s.services) in the spec, \(s.serviceFrontends) frontends programmed, \(s.conntrackEntries) conntrack entries"
            ),
            ("Owned routes", "\(s.ownedRoutes)"),
            ("Last applied", s.lastApplied ?? "never"),
            ("Ledger", s.ledger),
            ("Lock", s.lockHolder.map { "held by \($0)" } ?? "free (no agent running)"),
            (
                "BPF audit",
                s.bpfAudit ?? (s.datapathMode == "bpf" ? "none (no agent running)" : "not needed (kernel mode)")
            ),
            (
                "Drift",
                s.drift == 0
                    ? "none: the kernel matches the spec"
                    : "\(s.drift) difference\(s.drift == 1 ? "" : "s") (run `nodenetd plan`)"
            ),
        ]
        for (k, v) in rows { print((k + ":").padding(toLength: 22, withPad: " ", startingAt: 0) + v) }
        for d in s.driftDetails.prefix(20) { print("  \(d)") }
    }
}

struct EndpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "endpoint", abstract: "Pod endpoints.", subcommands: [List.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract:
                "Every pod of the node: the spec's and those a container runtime created through nodenet-cni (SOURCE cni)."
        )
        @OptionGroup var options: SpecOptions
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let spec = try NodeSpec.load(path: options.spec)
            let store = try EndpointStore.load(
                stateDirectory: spec.stateDirectory, node: spec.node.name, podCIDR: spec.node.podCIDR)
            let attachments = Dictionary(
                store.endpoints.map { ($0.pod.id, $0.attachment.description) }, uniquingKeysWith: { a, _ in a })
            var rows = try options.controller().endpoints()
            for i in rows.indices {
                if let attachment = attachments[rows[i].pod] {
                    rows[i].source = "cni"
                    rows[i].attachment = attachment
                }
            }
            if json { return try printJSON(rows) }
            printTable(
                ["ID", "POD", "SOURCE", "IPV4", "INTERFACE", "HOST MAC", "POD MAC", "STATE"],
                rows.map {
                    [
                        "\($0.id)", $0.pod, $0.attachment.map { "cni \($0)" } ?? $0.source, $0.ip, $0.hostInterface,
                        $0.hostMAC ?? "-", $0.podMAC ?? "-", $0.state,
                    ]
                })
        }
    }
}

struct RouteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "route", abstract: "Routes nodenet owns.", subcommands: [List.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "The node's routes nodenet owns (protocol 207), marked when missing, drifted or stale.")
        @OptionGroup var options: SpecOptions
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let rows = try options.controller().routes()
            if json { return try printJSON(rows) }
            printTable(["STATE", "ROUTE", "FOUND"], rows.map { [$0.state, $0.route, $0.found ?? ""] })
        }
    }
}

struct TeardownCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "teardown", abstract: "Remove everything nodenet owns on the node.",
        discussion: """
            Deletes nodenet's routes (protocol 207), the endpoint veths, the cilium_host/cilium_net pair and the
            ledger, and restores the global sysctls nodenet changed. Nothing else is touched. Safe to run twice.
            Give the spec, or --state-dir when the spec is gone.
            """)

    @Argument(help: "The node spec (optional with --state-dir).") var spec: String?
    @Option(help: "The node's state directory (holds ledger.json).") var stateDir: String?
    @Option(help: "Work on the node that is this network namespace.") var netns: String?
    @Flag(help: "Do not ask for confirmation.") var force = false
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        if spec == nil && stateDir == nil { throw ValidationError("give the spec or --state-dir") }
    }

    func run() throws {
        let namespace = netns.map(NamespaceReference.init) ?? .current
        if !force {
            guard isatty(0) != 0 else {
                throw InvalidInput(message: "teardown: refusing without --force when not interactive")
            }
            print("Remove everything nodenet owns on \(namespace)? Type 'yes': ", terminator: "")
            guard readLine() == "yes" else { throw InvalidInput(message: "teardown: cancelled") }
        }
        let report: TeardownReport
        if let spec {
            report = try NodeController(spec: try NodeSpec.load(path: spec).withEndpoints(), namespace: namespace)
                .teardown()
        } else {
            report = try NodeController.teardown(namespace: namespace, stateDirectory: stateDir!)
        }
        for warning in report.warnings { printError("warning: \(warning)") }
        if json { return try printJSON(report) }
        if report.nothingToDo { return print("nothing to remove") }
        print(
            "removed \(report.routes) routes, \(report.endpoints) endpoints\(report.hostPair ? ", the host pair" : "")\(report.ledgerRemoved ? ", the ledger" : "")"
        )
        for s in report.sysctlsRestored { print("restored \(s)") }
    }
}
