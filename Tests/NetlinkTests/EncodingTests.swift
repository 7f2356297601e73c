import Testing

@testable import Netlink

#if canImport(Glibc)
    import Glibc
#endif

/// Requests are encoded byte for byte as the kernel's UAPI structs lay them out.
@Suite struct EncodingTests {
    @Test func routeAddRequest() {
        let route = Route(
            destination: IPPrefix("10.0.1.0/24"), gateway: IPAddress("172.18.0.3"), interfaceIndex: 2,
            protocol: RouteProtocol(rawValue: 77), onLink: true)
        let bytes = route.addRequest.message.finished(sequence: 7, portID: 99)
        // nlmsghdr: len 60, RTM_NEWROUTE, CREATE|EXCL, seq 7, port 99;
        // rtmsg: inet /24, table main, proto 77, scope universe, unicast, onlink
        let expected =
            "3c000000" + "1800" + "0006" + "07000000" + "63000000"
            + "02180000" + "fe4d0001" + "04000000"
            + "08000100" + "0a000100"  // RTA_DST 10.0.1.0
            + "08000f00" + "fe000000"  // RTA_TABLE 254
            + "08000500" + "ac120003"  // RTA_GATEWAY 172.18.0.3
            + "08000400" + "02000000"  // RTA_OIF 2
        #expect(hexString(bytes) == expected)
    }

    @Test func vethWithPeerInAnotherNamespace() throws {
        let config = LinkConfiguration(
            name: "lxc1", kind: .veth(peer: VethPeer(name: "eth0", namespace: .named("pod"))), mtu: 1500)
        // Any open file stands for the namespace file: the request carries its number.
        let namespace = FileDescriptor(adopting: open("/dev/null", O_RDONLY | O_CLOEXEC))
        let bytes = config.createRequest(peerNamespace: namespace).message.finished(sequence: 1, portID: 0)
        let message = try #require(try NetlinkMessage.parse(bytes[...]).first)
        #expect(message.header.type == RTM.newLink)
        #expect(message.header.flags == [.create, .exclusive])
        let attrs = try AttributeList(parsing: message.payload.dropFirst(16))
        #expect(attrs[IFLA.ifname]?.string == "lxc1")
        let info = try #require(try attrs[IFLA.linkInfo]?.nested())
        #expect(info[IFLA.infoKind]?.string == "veth")
        let peer = try #require(try info[IFLA.infoData]?.nested()[IFLA.vethInfoPeer])
        // VETH_INFO_PEER starts with its own ifinfomsg, then the peer's attributes.
        let peerAttrs = try AttributeList(parsing: peer.payload.dropFirst(16))
        #expect(peerAttrs[IFLA.ifname]?.string == "eth0")
        #expect(peerAttrs[IFLA.netNsFD]?.u32 == UInt32(namespace.rawValue) && namespace.rawValue >= 0)
        #expect(peerAttrs[IFLA.mtu]?.u32 == 1500)
    }

    @Test func bpfFilterRequest() throws {
        let filter = BPFFilterConfiguration(
            interfaceIndex: 3, direction: .egress, programFD: 5, name: "nodenet-to-netdev", priority: 2)
        let bytes = filter.addRequest.message.finished(sequence: 1, portID: 0)
        let message = try #require(try NetlinkMessage.parse(bytes[...]).first)
        let r = ByteReader(message.payload)
        #expect(try r.i32(4) == 3)
        #expect(try r.u32(8) == 1)  // handle
        #expect(try r.u32(12) == 0xFFFF_FFF3)  // clsact egress
        #expect(try r.u32(16) == 0x0002_0300)  // prio 2, htons(ETH_P_ALL)
        let attrs = try AttributeList(parsing: message.payload.dropFirst(20))
        #expect(attrs[TCA.kind]?.string == "bpf")
        let options = try #require(try attrs[TCA.options]?.nested())
        #expect(options[TCA.bpfFD]?.u32 == 5)
        #expect(options[TCA.bpfName]?.string == "nodenet-to-netdev")
        #expect(options[TCA.bpfFlags]?.u32 == 1)
    }

    @Test func addressesAndPrefixes() throws {
        #expect(IPPrefix("10.0.2.0/24").contains(IPAddress("10.0.2.32")))
        #expect(!IPPrefix("10.0.2.0/24").contains(IPAddress("10.0.3.1")))
        #expect(IPPrefix("10.0.2.5/24").network == IPPrefix("10.0.2.0/24"))
        #expect(IPPrefix("10.0.0.0/8").overlaps(IPPrefix("10.0.2.0/24")))
        #expect(!IPPrefix("10.0.1.0/24").overlaps(IPPrefix("10.0.2.0/24")))
        #expect(IPPrefix("fd00::1/64").network.description == "fd00::/64")
        // Text from elsewhere (a variable, not a literal) goes through the failable and throwing parsers.
        for bad in ["10.0.2.0/33", "10.0.2/24", "10.0.2.0/2x"] {
            #expect(IPPrefix(bad) == nil)
            #expect(throws: AddressSyntaxError(text: bad, expected: "an IP prefix (address/length, e.g. 10.0.1.0/24)"))
            {
                try IPPrefix(parsing: bad)
            }
        }
        let badAddress = "256.1.1.1"
        #expect(IPAddress(badAddress) == nil)
        #expect(throws: AddressSyntaxError.self) { try IPAddress(parsing: badAddress) }
        #expect("\((try? IPAddress(parsing: badAddress)) as Any)" == "nil")
        #expect(
            (try IPAddress(parsing: "10.0.2.184")) == "10.0.2.184", "a literal and parsed text are the same address")
        #expect(IPPrefix(host: "10.0.2.32") == "10.0.2.32/32" && IPPrefix(host: "fd00::1").length == 128)
        #expect(
            "\(AddressSyntaxError(text: "x", expected: "an IPv4 or IPv6 address"))"
                == "\"x\" is not an IPv4 or IPv6 address")
        #expect(IPAddress(ipv4: 0x0A00_02B8).description == "10.0.2.184")
        #expect(MACAddress("02:00:0a:00:02:b8")?.description == "02:00:0a:00:02:b8")
        #expect(MACAddress("02:00:0a:00:02") == nil)
    }
}
