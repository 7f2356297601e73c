import ArgumentParser
import Foundation
import NodeNet
import NodeNetLab

/// `nodenetd lab probe`: requests to an address from a pod, a node or the external host,
/// made by this process inside the target's namespace and cgroup (so socket LB applies as
/// it does to the target's own processes), with what each connection saw.
struct LabProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Send HTTP (or UDP) requests from a pod, node or 'external' and report who answered.",
        discussion: """
            Each request reports the answer's first line (`PodName: ...`), the client's own address and the peer \
            address the socket reports (getpeername for TCP, recvfrom for UDP): with socket LB, the peer is the \
            service address although the connection went straight to a backend. --json prints every request and a \
            count per answer. Bounded: at most --count requests, each with a --timeout.
            Example: nodenetd lab probe net 10.96.18.68:80 --count 300 --json
            """)
    @OptionGroup var lab: LabName
    @Argument(help: "A node, a pod, or 'external'.") var target: String
    @Argument(help: "ADDRESS:PORT to send to.") var destination: String
    @Flag(help: "UDP (the pods' echo on port 53) instead of HTTP over TCP.") var udp = false
    @Flag(
        name: .customLong("v4-mapped"),
        help: "HTTP over an IPv6 socket to ::ffff:ADDRESS, as dual-stack programs connect.") var v4Mapped = false
    @Option(
        help:
            "UDP: pad each request to this many bytes (1-60000; above the MTU the request and its echo travel as fragments)."
    ) var size: Int?
    @Option(help: "Requests to send (1-10000).") var count = 1
    @Option(help: "Seconds each request may take.") var timeout: Int32 = 3
    @Flag(
        help:
            "Print JSON: {requests: [{answer, local, peer, error, milliseconds, bytes}], answers: {answer: count}, failures}."
    ) var json = false

    func validate() throws {
        guard (1...10_000).contains(count) else { throw ValidationError("--count must be 1-10000") }
        guard (1...60).contains(timeout) else { throw ValidationError("--timeout must be 1-60 seconds") }
        if let size {
            guard udp else { throw ValidationError("--size applies to --udp requests") }
            guard (1...60_000).contains(size) else { throw ValidationError("--size must be 1-60000 bytes") }
        }
    }

    func run() throws {
        let c = try Lab.load(name: try lab.resolve())
        guard let (namespace, cgroup) = LabRuntime.place(of: target, in: c) else {
            throw InvalidInput(message: "no \(target) in lab \(c.name)")
        }
        let parts = destination.split(separator: ":")
        guard parts.count == 2, let address = IPAddress(String(parts[0])), address.ipv4Value != nil,
            let port = UInt16(parts[1])
        else {
            throw InvalidInput(message: "\"\(destination)\" is not IPV4:PORT")
        }
        let out = try LabProbeReport.run(
            from: namespace, cgroup: cgroup, to: address, port: port, udp: udp, size: size, v4Mapped: v4Mapped,
            count: count, timeout: timeout)
        let requests = out.requests
        if json { return try printJSON(out) }
        if count == 1, let r = requests.first {
            if let e = r.error { throw NodeNetError.state(e) }
            print("\(r.answer ?? "") (local \(r.local ?? "-"), peer \(r.peer ?? "-"))")
            return
        }
        for (answer, n) in out.answers.sorted(by: { $0.key < $1.key }) { print("\(n)\t\(answer)") }
        if out.failures > 0 { print("\(out.failures)\tfailed (\(requests.first { $0.error != nil }!.error!))") }
    }
}
