import Testing

@testable import Netlink

/// Decoding never crashes: random and mutated messages go through every decoder and either
/// decode or throw.
@Suite struct FuzzTests {
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// What a run reached: datagrams that parsed into messages, messages, and what each decoder
    /// accepted (a fuzzer that never gets past the framing tests nothing).
    struct Reach {
        var datagrams = 0, messages = 0
        var decoded: [String: Int] = [:]
        mutating func count(_ name: String, _ ok: Bool) { if ok { decoded[name, default: 0] += 1 } }
    }

    func decodeEverything(_ datagram: [UInt8], _ reach: inout Reach) {
        guard let messages = try? NetlinkMessage.parse(datagram[...]) else { return }
        reach.datagrams += 1
        reach.messages += messages.count
        for var message in messages {
            for type in [
                RTM.newLink, RTM.newAddress, RTM.newRoute, RTM.newNeighbour, RTM.newQdisc, RTM.newFilter,
                NetlinkMessageType.error,
            ] {
                message.header.type = type
                reach.count("link", (try? Link(message: message)) != nil)
                reach.count("address", (try? InterfaceAddress(message: message)) != nil)
                reach.count("route", (try? Route(message: message)) != nil)
                reach.count("neighbour", (try? Neighbour(message: message)) != nil)
                reach.count("qdisc", (try? Qdisc(message: message)) != nil)
                reach.count("filter", (try? TCFilter(message: message)) != nil)
                reach.count("ack", (try? ExtendedAck(parsing: message)) != nil)
                _ = try? NetlinkSocket.doneFailure(message, context: "fuzz")
                reach.count("event", NetlinkEvent.decode(message) != nil)
            }
            if let attrs = try? AttributeList(parsing: message.payload) {
                for a in attrs.attributes { _ = try? a.nested() }
            }
        }
    }

    @Test func mutatedKernelMessages() throws {
        var rng = SplitMix(state: 0x5EED)
        let corpus = try ["links", "addresses", "routes", "neighbours", "qdiscs", "filters", "error-bad-gateway"]
            .flatMap(fixtureDatagrams)
        var reach = Reach()
        for _ in 0..<3000 {
            var d = corpus.randomElement(using: &rng)!
            switch Int.random(in: 0..<4, using: &rng) {
            case 0:  // flip bytes
                for _ in 0..<Int.random(in: 1...8, using: &rng) {
                    d[Int.random(in: 0..<d.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            case 1:  // truncate
                d = Array(d.prefix(Int.random(in: 0..<d.count, using: &rng)))
            case 2:  // corrupt a length field (message or attribute) near a random 4-byte boundary
                let at = Int.random(in: 0..<max(1, d.count / 4), using: &rng) * 4
                if at + 1 < d.count {
                    d[at] = UInt8.random(in: 0...255, using: &rng)
                    d[at + 1] = [0, 0xFF, UInt8.random(in: 0...255, using: &rng)].randomElement(using: &rng)!
                }
            default:  // append garbage
                d += (0..<Int.random(in: 1...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
            decodeEverything(d, &reach)
        }
        // The mutations reach the decoders: many datagrams still frame, every decoder accepts some.
        #expect(reach.datagrams > 600, "\(reach.datagrams) of 3000 mutated datagrams parsed")
        for decoder in ["link", "address", "route", "neighbour", "qdisc", "filter", "ack"] {
            #expect((reach.decoded[decoder] ?? 0) > 0, "\(decoder) never decoded a mutated message: \(reach.decoded)")
        }
    }

    @Test func randomBytes() {
        var rng = SplitMix(state: 42)
        var reach = Reach()
        for _ in 0..<3000 {
            let count = Int.random(in: 0..<200, using: &rng)
            var d = (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if d.count >= 16 {
                // A length that frames the whole datagram as one message, so the family decoders
                // get to run (a random length framed 188 of 3 000: the rest failed before them).
                d.storeU32(UInt32(d.count), at: 0)
            }
            decodeEverything(d, &reach)
        }
        // Random bytes with a plausible length get past the framing into the decoders.
        #expect(reach.messages > 1000, "\(reach.messages) messages from 3000 random datagrams")
        #expect(!reach.decoded.isEmpty, "no decoder ever accepted random input: \(reach.decoded)")
    }

    @Test func truncatedMessagesThrow() throws {
        let datagram = try fixtureDatagrams("routes")[0]
        #expect(throws: NetlinkError.self) { try NetlinkMessage.parse(datagram.dropLast(8)) }
        let message = try NetlinkMessage.parse(datagram[...])[0]
        var short = message
        short.payload = message.payload.prefix(5)
        #expect(throws: NetlinkError.self) { try Route(message: short) }
    }
}
