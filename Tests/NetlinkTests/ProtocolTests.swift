import Testing

@testable import Netlink

/// The request/ACK/dump/batch protocol against a scripted kernel (no root needed).
@Suite struct ProtocolTests {
    func linkMessage(sequence: UInt32, name: String, flags: NetlinkFlags = [.multi]) -> [UInt8] {
        var payload = ifinfomsg(index: 7, flags: [.up], change: [])
        let n = Array(name.utf8) + [0]
        payload.appendU16(UInt16(4 + n.count))
        payload.appendU16(IFLA.ifname)
        payload += n
        payload.padToAlignment()
        return KernelSays.message(type: RTM.newLink, flags: flags, sequence: sequence, payload: payload)
    }

    @Test func dumpReadsAcrossDatagramsUntilDone() throws {
        let kernel = FakeKernel { messages, _ in
            let seq = messages[0].header.sequence
            // A stale reply to an older request comes first and must be ignored.
            return [
                self.linkMessage(sequence: seq &- 1, name: "stale"),
                self.linkMessage(sequence: seq, name: "a") + self.linkMessage(sequence: seq, name: "b"),
                self.linkMessage(sequence: seq, name: "c") + KernelSays.done(sequence: seq),
            ]
        }
        let socket = NetlinkSocket(transport: kernel)
        #expect(try socket.links().map(\.name) == ["a", "b", "c"])
        let sent = try NetlinkMessage.parse(kernel.sent[0][...])[0]
        #expect(sent.header.flags.contains(.dump) && sent.header.flags.contains(.request))
    }

    @Test func interruptedDumpIsRetried() throws {
        let kernel = FakeKernel { messages, call in
            let seq = messages[0].header.sequence
            let intr: NetlinkFlags = call < 3 ? [.multi, .dumpInterrupted] : [.multi]
            return [
                self.linkMessage(sequence: seq, name: "try\(call)", flags: intr)
                    + KernelSays.done(sequence: seq, flags: intr)
            ]
        }
        let socket = NetlinkSocket(transport: kernel)
        #expect(try socket.links().map(\.name) == ["try3"])
        #expect(kernel.sent.count == 3)
    }

    @Test func dumpThatNeverSettlesIsItsOwnError() throws {
        let kernel = FakeKernel { messages, _ in
            let seq = messages[0].header.sequence
            return [KernelSays.done(sequence: seq, flags: [.multi, .dumpInterrupted])]
        }
        let socket = NetlinkSocket(transport: kernel)
        let error = #expect(throws: NetlinkError.self) { try socket.links() }
        #expect(error?.kind == .dumpInterrupted)
        #expect(kernel.sent.count == 9, "the first try and eight retries")
        #expect(error?.description.contains("NLM_F_DUMP_INTR") == true)
    }

    @Test func dumpErrorInDoneIsReported() throws {
        let kernel = FakeKernel { messages, _ in
            let seq = messages[0].header.sequence
            var payload: [UInt8] = []
            payload.appendI32(-Errno.invalidArgument.rawValue)
            return [KernelSays.message(type: NetlinkMessageType.done, flags: [.multi], sequence: seq, payload: payload)]
        }
        let error = #expect(throws: NetlinkError.self) { try NetlinkSocket(transport: kernel).links() }
        #expect(error == NetlinkError(.invalidArgument))
        #expect(error?.context == "listing links")
    }

    @Test func requestWaitsForItsOwnAck() throws {
        let kernel = FakeKernel { messages, _ in
            let request = messages[0]
            var other = request
            other.header.sequence &+= 1000
            return [KernelSays.ack(for: other, error: -Errno.invalidArgument.rawValue), KernelSays.ack(for: request)]
        }
        let socket = NetlinkSocket(transport: kernel)
        try socket.add(Route(destination: IPPrefix("10.0.1.0/24"), interfaceIndex: 2))
        let sent = try NetlinkMessage.parse(kernel.sent[0][...])[0]
        #expect(sent.header.flags.contains(.ack))
        #expect(sent.header.portID == 4242)
    }

    @Test func extendedAckNamesTheOffendingAttribute() throws {
        let kernel = FakeKernel { messages, _ in
            // Offset 44 is RTA_GATEWAY in this request (16 header + 12 rtmsg + 8 dst + 8 table).
            [
                KernelSays.ack(
                    for: messages[0], error: -Errno.invalidArgument.rawValue, text: "Invalid gateway", offset: 44)
            ]
        }
        let socket = NetlinkSocket(transport: kernel)
        let route = Route(destination: IPPrefix("10.0.1.0/24"), gateway: IPAddress("172.18.0.3"), interfaceIndex: 2)
        let error = #expect(throws: NetlinkError.self) { try socket.add(route) }
        #expect(error?.kernelMessage == "Invalid gateway")
        #expect(error?.attributeOffset == 44)
        #expect(error?.attributeType == RTA.gateway)
        #expect(
            error?.description
                == "adding route 10.0.1.0/24 via 172.18.0.3 dev 2: Invalid gateway (EINVAL) [attribute type 5 at byte 44 of the request]"
        )
        #expect(error == NetlinkError(.invalidArgument))
        #expect(error != NetlinkError(.exists))
    }

    @Test func uncappedAckSkipsTheEchoedRequest() throws {
        // Without NETLINK_CAP_ACK the whole request sits between nlmsgerr and the TLVs.
        let request = Route(destination: IPPrefix("10.0.1.0/24"), interfaceIndex: 2).addRequest.message.finished(
            sequence: 5, portID: 1)
        var payload: [UInt8] = []
        payload.appendI32(-Errno.exists.rawValue)
        payload += request
        let text = Array("File exists here".utf8) + [0]
        payload.appendU16(UInt16(4 + text.count))
        payload.appendU16(ExtAckAttribute.message)
        payload += text
        payload.padToAlignment()
        let bytes = KernelSays.message(type: NetlinkMessageType.error, flags: [.ackTLVs], sequence: 5, payload: payload)
        let ack = try ExtendedAck(parsing: try NetlinkMessage.parse(bytes[...])[0])
        #expect(ack.error == -Errno.exists.rawValue)
        #expect(ack.requestHeader.type == RTM.newRoute && ack.requestHeader.sequence == 5)
        #expect(ack.message == "File exists here")
    }

    @Test func batchReportsEachResultWithFewSends() throws {
        let kernel = FakeKernel { messages, _ in
            var replies: [[UInt8]] = []
            for message in messages {
                if message.header.type == NetlinkMessageType.noop {
                    #expect(message.header.flags.contains(.ack))
                    replies.append(KernelSays.ack(for: message))
                } else {
                    #expect(!message.header.flags.contains(.ack))
                    // Every 1000th route "already exists".
                    let r = try? Route(message: message)
                    if let v = r?.destination.address.ipv4Value, v % 1000 == 0 {
                        replies.append(KernelSays.ack(for: message, error: -Errno.exists.rawValue))
                    }
                }
            }
            return replies
        }
        let socket = NetlinkSocket(transport: kernel)
        let requests = (0..<5000).map { i in
            Route(destination: IPPrefix(IPAddress(ipv4: 0x0A64_0000 + UInt32(i)), length: 32)!, interfaceIndex: 2)
                .addRequest
        }
        let results = socket.batch(requests)
        #expect(results.count == 5000)
        for (i, result) in results.enumerated() {
            let v = 0x0A64_0000 + UInt32(i)
            switch result {
            case .success: #expect(v % 1000 != 0)
            case .failure(let e):
                #expect(v % 1000 == 0)
                #expect(e == NetlinkError(.exists))
                #expect(e.context?.hasPrefix("adding route 10.100.") == true)
            }
        }
        #expect(kernel.sent.count < 5000 / 100, "batches of many requests per sendmsg")
        #expect(
            kernel.sent.allSatisfy {
                (try? NetlinkMessage.parse($0[...]).count) ?? 0 <= NetlinkSocket.batchRequests + 1
            })
        #expect(kernel.sent.allSatisfy { $0.count <= NetlinkSocket.batchBytes + 16 })
    }
}
