import Foundation
import Logging
import Testing

@testable import NodeNet
@testable import NodeNetAgent

/// Pieces of the agent that need no kernel.
@Suite struct AgentUnitTests {
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
