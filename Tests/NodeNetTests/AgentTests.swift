import Foundation
import Logging
import TestSupport
import Testing

@testable import NodeNet
@testable import NodeNetAgent

/// Pieces of the agent that need no kernel.
@Suite struct AgentUnitTests {
    /// Before: the health server served one connection at a time, each read waiting up to 2 s:
    /// ten clients that connect and send nothing held `/healthz` for 20 s. Now each connection
    /// has its own thread and a deadline for the whole request. And it never listens off the node.
    @Test func slowClientsDoNotStallHealthz() throws {
        let socketPath = FileManager.default.temporaryDirectory.appendingPathComponent(TestNames.unique("hz")).path
        let server = try StatusServer(address: .unix(socketPath)) { _ in (200, "text/plain", "ok\n") }
        defer { server.stop() }
        var idle: [Int32] = []
        defer { idle.forEach { close($0) } }
        for _ in 0..<10 {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var a = sockaddr_un()
            a.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &a.sun_path) { raw in
                for (i, b) in socketPath.utf8.enumerated() { raw[i] = b }
            }
            let rc = withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            try #require(rc == 0)
            _ = "GET /hea".withCString { send(fd, $0, 8, 0) }  // and nothing more
            idle.append(fd)
        }
        let start = Date()
        #expect(try httpGetUnix(socketPath, "/healthz") == "HTTP/1.1 200 OK|ok\n")
        let seconds = Date().timeIntervalSince(start)
        print("AgentIntegrationTests: /healthz answered in \(Int(seconds * 1000)) ms beside 10 idle clients")
        #expect(seconds < 15, "the old server needed 20 s")
        #expect(throws: NodeNetError.self) {
            try StatusServer(address: .tcp("10.1.2.3", 9962)) { _ in (200, "text/plain", "") }
        }
    }

    @Test func logfmtAndJSONLines() {
        let fields = [
            ("ts", "T"), ("level", "info"), ("subsystem", "reconcile"), ("msg", "create route 10.0.1.0/24"),
            ("why", "route \"x\" deleted"),
        ]
        #expect(
            StructuredLogHandler.render(fields, .logfmt)
                == #"ts=T level=info subsystem=reconcile msg="create route 10.0.1.0/24" why="route \"x\" deleted""#)
        #expect(
            StructuredLogHandler.render(fields, .json)
                == #"{"ts":"T","level":"info","subsystem":"reconcile","msg":"create route 10.0.1.0/24","why":"route \"x\" deleted"}"#
        )
        let data = Data(StructuredLogHandler.render(fields, .json).utf8)
        #expect((try? JSONSerialization.jsonObject(with: data)) as? [String: String] != nil)
    }

    /// Before: a value with a carriage return, an escape sequence or another control character
    /// (a pod's name from a CNI request) went into a logfmt line raw: it could forge a line or
    /// drive the reader's terminal.
    @Test func controlCharactersNeverReachALogLineRaw() {
        let hostile = "web\r\u{1b}[2Jlevel=error\u{7f}\u{85}x\\y\ttab"
        for format in [StructuredLogHandler.Format.logfmt, .json] {
            let line = StructuredLogHandler.render([("level", "info"), ("pod", hostile)], format)
            let raw = line.unicodeScalars.filter { $0.value < 0x20 || (0x7f...0x9f).contains($0.value) }
            #expect(raw.isEmpty, "\(format): \(raw.map(\.value)) in \(line.debugDescription)")
        }
        #expect(
            StructuredLogHandler.render([("pod", hostile)], .logfmt)
                == #"pod="web\r\u001b[2Jlevel=error\u007f\u0085x\\y\ttab""#)
        // A backslash alone is quoted too (a reader unquotes what it finds).
        #expect(StructuredLogHandler.render([("path", #"a\b"#)], .logfmt) == #"path="a\\b""#)
    }

    @Test func onlyEventsAboutOwnedObjectsTriggerRepairs() {
        let spec = PlannerTests.spec
        let filter = OwnershipFilter(spec: spec, device: "eth0")
        let lxc = NodeNetNames.endpointDevice(for: spec.pods[0])
        let owned = RouteIntent(destination: IPPrefix("10.0.1.0/24"), gateway: IPAddress("172.18.0.3"), device: "eth0")
            .route(interfaceIndex: 2)
        let foreign = Route(destination: IPPrefix("10.77.0.0/16"), interfaceIndex: 2, protocol: .boot)
        #expect(filter.concerns(.deletedRoute(owned)) == "route 10.0.1.0/24 deleted")
        #expect(filter.concerns(.deletedRoute(foreign)) == nil)
        #expect(filter.concerns(.newRoute(foreign)) == nil)
        #expect(filter.concerns(.deletedLink(Link(index: 6, name: lxc, kind: "veth"))) == "link \(lxc) deleted")
        #expect(filter.concerns(.deletedLink(Link(index: 9, name: "veth-other", kind: "veth"))) == nil)
        #expect(filter.concerns(.newLink(Link(index: 5, name: "cilium_host", kind: "veth", flags: [.up]))) == nil)
        #expect(
            filter.concerns(.newLink(Link(index: 5, name: "cilium_host", kind: "veth", flags: [])))
                == "link cilium_host is down")
        #expect(filter.concerns(.netconf(interfaceIndex: 5)) != nil)
    }

    @Test func healthAndMetricsEndpointAnswers() {
        let agent = NodeAgent(options: NodeAgent.Options(specPath: "/nonexistent"), logger: { Logger(label: $0) })
        #expect(agent.httpResponse(path: "/healthz").0 == 503)
        #expect(agent.httpResponse(path: "/nope").0 == 404)
        let (status, type, body) = agent.httpResponse(path: "/metrics")
        #expect(status == 200 && type.hasPrefix("text/plain"))
        #expect(body.contains("# TYPE nodenet_reconcile_runs_total counter"))
        #expect(body.contains("nodenet_drift_repair_duration_seconds_bucket"))
    }
}

/// The plugin's own answers to a configuration it cannot use: CNI error results (exit 1) with
/// the spec's codes and a sentence that says what is wrong, before any agent is asked.
@Suite struct CNIPluginConfigurationTests {
    static let plugin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        .appendingPathComponent("nodenet-cni").path

    func run(_ stdin: String) throws -> (status: Int32, error: [String: Any]) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.plugin)
        p.environment = [
            "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr", "CNI_NETNS": "/var/run/netns/none", "CNI_IFNAME": "eth0",
            "CNI_PATH": "/opt/cni/bin",
        ]
        let input = Pipe()
        let output = Pipe()
        p.standardInput = input
        p.standardOutput = output
        try p.run()
        input.fileHandleForWriting.write(Data(stdin.utf8))
        try input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
        return (p.terminationStatus, object)
    }

    @Test(
        .enabled(if: FileManager.default.isExecutableFile(atPath: plugin), "build nodenet-cni first (swift build)"),
        arguments: [
            ("not json", 6, "the network configuration on stdin is not JSON"),
            ("[1, 2]", 6, "the network configuration on stdin is not a JSON object"),
            (#"{"name": "n"}"#, 7, "the network configuration has no cniVersion"),
            (
                #"{"cniVersion": "0.2.0", "name": "n"}"#, 1,
                "CNI version 0.2.0 is not supported (nodenet-cni supports 0.3.1, 0.4.0, 1.0.0, 1.1.0)"
            ),
            (#"{"cniVersion": "1.0.0"}"#, 7, "the network configuration has no name"),
            (
                #"{"cniVersion": "1.0.0", "name": "n", "socket": "run/x.sock"}"#, 7,
                "\"socket\" must be an absolute path"
            ),
        ])
    func aConfigurationItCannotUseIsACNIError(_ stdin: String, _ code: Int, _ message: String) throws {
        let (status, error) = try run(stdin)
        #expect(status == 1)
        #expect(error["code"] as? Int == code, "\(error)")
        #expect(error["msg"] as? String == message, "\(error)")
    }
}
