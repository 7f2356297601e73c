import BPF
import Foundation
import TestSupport
import Testing

@testable import NodeNet
@testable import NodeNetLab

/// `nodenetd`'s documented exit codes, through the binary: 0 success, 1 failure (kernel error,
/// verification mismatch, conflict), 2 invalid input. Skipped without root.
@Suite(.serialized, .enabled(if: Privileges.runsNamespaceTests, Comment(rawValue: Privileges.skipReason)))
struct CLITests {
    static let nodenetd = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        .appendingPathComponent("nodenetd").path

    static func cli(_ args: [String]) throws -> (status: Int32, output: String) { try runTool([nodenetd] + args) }

    @Test func successConflictAndConvergenceHaveTheirCodes() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.nodenetd), "build nodenetd first")
        try await TestNode.with(pods: 2) { t in
            let file = t.stateDirectory + ".spec.json"
            try t.spec().jsonData().write(to: URL(fileURLWithPath: file))
            defer { try? FileManager.default.removeItem(atPath: file) }
            let plan = try Self.cli(["plan", file, "--netns", t.node])
            #expect(plan.status == 0 && plan.output.contains("changes for node worker2"), "\(plan.output)")
            let apply = try Self.cli(["apply", file, "--netns", t.node])
            #expect(
                apply.status == 0 && apply.output.contains("verified: the kernel matches the spec"), "\(apply.output)")
            let again = try Self.cli(["plan", file, "--netns", t.node])
            #expect(again.status == 0 && again.output.contains("is converged: no changes"), "\(again.output)")
            let status = try Self.cli(["status", file, "--netns", t.node, "--json"])
            #expect(status.status == 0)
            #expect(
                (try? JSONDecoder().decode(NodeStatus.self, from: Data(status.output.utf8))) != nil, "\(status.output)")
            #expect(try Self.cli(["route", "list", file, "--netns", t.node]).status == 0)
            #expect(try Self.cli(["endpoint", "list", file, "--netns", t.node]).status == 0)
            // A conflict: a pod's eth0 that nodenet did not make. Plan and apply say so and exit 1.
            let pod = try NetlinkSocket(namespace: .named(t.pods[1]))
            let deviceName = NodeNetNames.endpointDevice(for: t.spec().pods[1])
            try NetlinkSocket(namespace: t.namespace).delete(.link(named: deviceName))
            try pod.add(LinkConfiguration(name: "eth0", kind: .veth(peer: VethPeer(name: "peer0")), mtu: 1500))
            let conflict = try Self.cli(["plan", file, "--netns", t.node])
            #expect(conflict.status == 1 && conflict.output.contains("! conflict:"), "\(conflict.output)")
            let refused = try Self.cli(["apply", file, "--netns", t.node])
            #expect(refused.status == 1 && refused.output.contains("not nodenet's"), "\(refused.output)")
            try pod.delete(.link(named: "eth0"))
            #expect(try Self.cli(["apply", file, "--netns", t.node]).status == 0)
            // A concurrent writer undoing a setting: apply cannot verify and exits 1 naming it
            // (a few tries: the writer has to win the race between apply and its check once).
            let writer = ConcurrentSysctlWriter("net/ipv4/conf/cilium_host/rp_filter", "1", in: t.namespace)
            defer { writer.requestStop() }
            var outcomes: [(status: Int32, output: String)] = []
            for _ in 0..<5 where !outcomes.contains(where: { $0.status == 1 }) {
                outcomes.append(try Self.cli(["apply", file, "--netns", t.node]))
            }
            await writer.stop()
            #expect(outcomes.allSatisfy { $0.status == 0 || $0.status == 1 }, "\(outcomes)")
            let failed = try #require(outcomes.first { $0.status == 1 }, "\(outcomes)")
            #expect(
                failed.output.contains("verification failed") && failed.output.contains("cilium_host/rp_filter"),
                "\(failed.output)")
            #expect(try Self.cli(["apply", file, "--netns", t.node]).status == 0)
            #expect(try Self.cli(["teardown", file, "--netns", t.node, "--force"]).status == 0)
            #expect(try Self.cli(["teardown", file, "--netns", t.node, "--force"]).status == 0, "safe twice")
        }
    }

    /// `monitor`: 0 when it stops after --count events or after --duration, 2 for a node whose
    /// datapath is not BPF (there are no events to read).
    @Test func monitorHasItsCodes() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.nodenetd), "build nodenetd first")
        try await TestNode.with(pods: 2) { t in
            var spec = t.spec()
            spec.datapath = DatapathSettings(mode: .bpf, attachMode: .clsact)
            spec.bpffsDirectory = "/sys/fs/bpf/\(TestNames.unique("mon"))"
            defer { BPFFS.remove(spec.bpffsDirectory) }
            let file = t.stateDirectory + ".spec.json"
            try spec.jsonData().write(to: URL(fileURLWithPath: file))
            defer { try? FileManager.default.removeItem(atPath: file) }
            try #require(try Self.cli(["apply", file, "--netns", t.node]).status == 0)
            // Pings until the monitor has its one event (bounded: --duration 20, pings for 25 s).
            let pods = t.pods
            let stop = PeerLog()
            let traffic = Thread {
                let until = Date().addingTimeInterval(25)
                while stop.lines.isEmpty && Date() < until {
                    _ = try? runTool(["ip", "netns", "exec", pods[0], "ping", "-c", "1", "-W", "1", "10.0.2.204"])
                }
            }
            traffic.start()
            defer { stop.add("stop") }
            let one = try Self.cli(["monitor", file, "--netns", t.node, "--count", "1", "--duration", "20", "--json"])
            stop.add("stop")
            #expect(one.status == 0, "\(one.output)")
            let events = one.output.split(separator: "\n").filter { $0.hasPrefix("{") }
            #expect(events.count == 1 && events[0].contains("\"verdict\""), "\(one.output)")
            let quiet = try Self.cli(["monitor", file, "--netns", t.node, "--duration", "0.3", "--json"])
            #expect(quiet.status == 0, "\(quiet.output)")
            var kernel = t.spec()
            kernel.datapath = DatapathSettings(mode: .kernel)
            let kernelFile = t.stateDirectory + ".kernel.json"
            try kernel.jsonData().write(to: URL(fileURLWithPath: kernelFile))
            defer { try? FileManager.default.removeItem(atPath: kernelFile) }
            let refused = try Self.cli(["monitor", kernelFile, "--netns", t.node, "--duration", "0.3"])
            #expect(refused.status == 2 && refused.output.contains("datapath.mode kernel"), "\(refused.output)")
        }
    }

    /// `lab demo`: 0 when every check passes; Ctrl-C (SIGINT) during it is 1, and the lab is gone.
    @Test func labDemoHasItsCodes() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.nodenetd), "build nodenetd first")
        let lab = LabIntegrationTests.labName("dm")
        defer { Lab.down(name: lab) }
        let demo = try Self.cli(["lab", "demo", "--name", lab])
        #expect(demo.status == 0 && demo.output.contains(" passed, 0 failed, 0 not yet"), "\(demo.output)")
        #expect(LabIntegrationTests.traces(of: lab) == [])

        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.nodenetd)
        process.arguments = ["lab", "demo", "--name", lab]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        // A demo that hangs is killed (the reads below would wait for it).
        let pid = process.processIdentifier
        let finished = PeerLog()
        defer { finished.add("done") }
        DispatchQueue.global().asyncAfter(deadline: .now() + 120) {
            if finished.lines.isEmpty { kill(pid, SIGKILL) }
        }
        // Interrupted once the walkthrough has begun (its first check printed), at most 60 s on.
        var seen = Data()
        let deadline = Date().addingTimeInterval(60)
        while !String(decoding: seen, as: UTF8.self).contains("PASS"), Date() < deadline, process.isRunning {
            seen += out.fileHandleForReading.availableData
        }
        kill(process.processIdentifier, SIGINT)
        let rest = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        finished.add("done")
        let output = String(decoding: seen + rest, as: UTF8.self)
        #expect(process.terminationReason == .exit && process.terminationStatus == 1, "\(output)")
        #expect(LabIntegrationTests.traces(of: lab) == [], "the interrupted demo left nothing: \(output)")
    }
}

/// Exit code 2 for input that is not a spec: no kernel and no root needed.
@Suite struct CLIInputTests {
    @Test func invalidInputIsTwoForEveryCommandThatReadsASpec() throws {
        try #require(FileManager.default.isExecutableFile(atPath: CLITests.nodenetd), "build nodenetd first")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(TestNames.unique("cli")).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let notJSON = directory + "/not.json"
        try "{\"apiVersion\": ".write(toFile: notJSON, atomically: true, encoding: .utf8)
        let unknownField = directory + "/unknown.json"
        try
            #"{"apiVersion":"nodenet/v1","node":{"name":"n","device":"eth0","address":"172.18.0.2","podCIDR":"10.0.2.0/24"},"podz":[]}"#
            .write(toFile: unknownField, atomically: true, encoding: .utf8)
        for command in [
            ["plan"], ["apply"], ["status"], ["route", "list"], ["endpoint", "list"], ["teardown", "--force"],
            ["monitor", "--duration", "0.1"],
        ] {
            for (file, words) in [
                (directory + "/missing.json", "does not exist"), (notJSON, "not valid JSON"), (unknownField, "podz"),
            ] {
                let out = try CLITests.cli(command + [file])
                #expect(out.status == 2, "\(command) \(file): \(out.output)")
                #expect(out.output.contains(words), "\(command) \(file): \(out.output)")
            }
        }
        // Files that are not specs: one sentence naming the file, exit 2 (issue 14, item 4).
        let empty = directory + "/empty.json"
        FileManager.default.createFile(atPath: empty, contents: Data())
        let binary = directory + "/binary.json"
        FileManager.default.createFile(atPath: binary, contents: Data([0x7b, 0x00, 0xff, 0xfe, 0x01]))
        let huge = directory + "/huge.json"
        FileManager.default.createFile(atPath: huge, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: huge))
        try handle.truncate(atOffset: 100 << 20)  // 100 MiB, sparse
        try handle.close()
        let spaced = directory + "/a spec with spaces.json"
        try "{\"apiVersion\": ".write(toFile: spaced, atomically: true, encoding: .utf8)
        for (file, words) in [
            (directory, "is a directory"), (empty, "is empty"), (binary, "is not text"), (huge, "larger than 64 MiB"),
            (spaced, "not valid JSON"),
        ] {
            let out = try CLITests.cli(["plan", file])
            #expect(out.status == 2, "\(file): \(out.output)")
            #expect(out.output.contains(words) && out.output.contains(file), "\(file): \(out.output)")
            #expect(!out.output.contains("DecodingError") && !out.output.contains("Debug description"))
        }
        #expect(try CLITests.cli(["plan"]).status == 2, "a missing argument")
        #expect(try CLITests.cli(["run", "--spec", notJSON, "--api-socket", "relative.sock"]).status == 2)
    }
}
