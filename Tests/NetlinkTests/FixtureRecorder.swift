import CBPF
import Foundation
import TestSupport
import Testing

@testable import Netlink

/// Records the byte fixtures the unit tests decode, from real kernel traffic in a throwaway
/// namespace. Runs only when asked: `NODENET_RECORD_FIXTURES=1 swift test --filter FixtureRecorder`.
@Suite(
    .serialized,
    .enabled(
        if: ProcessInfo.processInfo.environment["NODENET_RECORD_FIXTURES"] != nil && Privileges.canLoadBPF,
        "records Fixtures/ only on request: NODENET_RECORD_FIXTURES=1 swift test --filter FixtureRecorder (as root)"))
struct FixtureRecorder {
    final class Recording: NetlinkTransport, @unchecked Sendable {
        let inner: MnlTransport
        var received: [[UInt8]] = []
        var sent: [[UInt8]] = []
        init(_ inner: MnlTransport) { self.inner = inner }
        var portID: UInt32 { inner.portID }
        var fileDescriptor: Int32 { inner.fileDescriptor }
        func send(_ bytes: [UInt8]) throws {
            sent.append(bytes)
            try inner.send(bytes)
        }
        func receive(into buffer: inout [UInt8]) throws -> Int {
            let n = try inner.receive(into: &buffer)
            received.append(Array(buffer[0..<n]))
            return n
        }
        func take() -> [[UInt8]] {
            defer { received = [] }
            return received
        }
    }

    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
        "Fixtures")

    func write(_ name: String, _ comment: String, _ datagrams: [[UInt8]]) throws {
        let text = "# \(comment)\n" + datagrams.map(hexString).joined(separator: "\n") + "\n"
        try text.write(to: Self.directory.appendingPathComponent("\(name).hex"), atomically: true, encoding: .utf8)
    }

    @Test func record() throws {
        try withNamespaces(["rec"]) { names in
            let ns = NamespaceReference.named(names[0])
            let recording = Recording(try MnlTransport(namespace: ns, groups: []))
            let socket = NetlinkSocket(transport: recording, namespace: ns)
            try socket.add(
                LinkConfiguration(name: "veth0", kind: .veth(peer: VethPeer(name: "veth1")), mtu: 1500, up: true))
            try socket.setLink(named: "veth1", LinkChange(up: true, noARP: true))
            try socket.add(LinkConfiguration(name: "br0", kind: .bridge, up: true))
            try socket.setLink(named: "lo", LinkChange(up: true))
            let veth0 = try #require(try socket.link(named: "veth0"))
            try socket.add(
                InterfaceAddress(interfaceIndex: veth0.index, prefix: IPPrefix("10.0.2.184/32"), scope: .link))
            try socket.add(
                InterfaceAddress(
                    interfaceIndex: veth0.index, prefix: IPPrefix("fd00::1/64"), flags: InterfaceAddress.flagNoDAD))
            try socket.add(
                Route(
                    destination: IPPrefix("10.0.1.0/24"), gateway: IPAddress("172.18.0.3"),
                    interfaceIndex: veth0.index, protocol: RouteProtocol(rawValue: 77), onLink: true, mtu: 1450))
            try socket.add(Route(destination: IPPrefix("10.0.2.184/32"), interfaceIndex: veth0.index, scope: .link))
            try socket.replace(
                Neighbour(
                    interfaceIndex: veth0.index, address: IPAddress("10.0.2.7"),
                    linkLayerAddress: MACAddress("02:00:00:00:00:07")))
            try socket.addClsact(interfaceIndex: veth0.index)
            let insns: [bpf_insn] = [
                bpf_insn(code: 0xb7, dst_reg: 0, src_reg: 0, off: 0, imm: 0),  // r0 = 0
                bpf_insn(code: 0x95, dst_reg: 0, src_reg: 0, off: 0, imm: 0),  // exit
            ]
            let fd = insns.withUnsafeBufferPointer {
                bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "nn_fixture", "GPL", $0.baseAddress, 2, nil)
            }
            #expect(fd >= 0)
            defer { close(fd) }
            try socket.add(
                BPFFilterConfiguration(
                    interfaceIndex: veth0.index, direction: .ingress, programFD: fd, name: "nodenet-fixture"))
            _ = recording.take()

            _ = try socket.links()
            try write("links", "RTM_GETLINK dump: lo, veth0/veth1 (veth1 NOARP), br0", recording.take())
            _ = try socket.addresses()
            try write(
                "addresses", "RTM_GETADDR dump: 10.0.2.184/32 scope link and fd00::1/64 nodad on veth0",
                recording.take())
            _ = try socket.routes(RouteFilter(family: .inet, table: RouteTable.main))
            try write(
                "routes",
                "RTM_GETROUTE dump of table main: 10.0.1.0/24 via 172.18.0.3 onlink proto 77 mtu 1450; 10.0.2.184 scope link",
                recording.take())
            _ = try socket.neighbours(family: .inet, interfaceIndex: veth0.index)
            try write(
                "neighbours", "RTM_GETNEIGH dump: 10.0.2.7 lladdr 02:00:00:00:00:07 PERMANENT on veth0",
                recording.take())
            _ = try socket.qdiscs(interfaceIndex: veth0.index)
            try write("qdiscs", "RTM_GETQDISC dump for veth0 (clsact among them)", recording.take())
            _ = try socket.filters(interfaceIndex: veth0.index, direction: .ingress)
            try write(
                "filters", "RTM_GETTFILTER dump: bpf filter nodenet-fixture, direct-action, on veth0 ingress",
                recording.take())
            recording.sent.removeAll()
            _ = try? socket.add(
                Route(
                    destination: IPPrefix("10.0.9.0/24"), gateway: IPAddress("192.0.2.1"), interfaceIndex: veth0.index
                ))
            try write(
                "error-bad-gateway",
                "request then capped NLMSG_ERROR with extended ACK: adding 10.0.9.0/24 via 192.0.2.1 (unreachable)",
                [recording.sent.last!] + recording.take())

        }
    }
}
