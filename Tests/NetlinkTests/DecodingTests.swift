import Testing

@testable import Netlink

/// Decoding real kernel traffic recorded in Fixtures/ (see FixtureRecorder).
@Suite struct DecodingTests {
    @Test func linksFromKernelDump() throws {
        let messages = try fixtureMessages("links").filter { $0.header.type == RTM.newLink }
        let links = try messages.map(Link.init(message:))
        let byName = Dictionary(uniqueKeysWithValues: links.map { ($0.name, $0) })
        #expect(Set(byName.keys) == ["lo", "veth0", "veth1", "br0"])

        let lo = try #require(byName["lo"])
        #expect(lo.hardwareType == 772)
        #expect(lo.flags.contains(.loopback) && lo.isUp)
        #expect(lo.kind == nil)

        let veth0 = try #require(byName["veth0"])
        let veth1 = try #require(byName["veth1"])
        #expect(veth0.kind == "veth" && veth1.kind == "veth")
        #expect(veth0.peerIndex == veth1.index && veth1.peerIndex == veth0.index)
        #expect(veth0.mtu == 1500 && veth0.isUp && !veth0.isNoARP)
        #expect(veth1.isNoARP)
        #expect(veth0.address != nil && veth0.statistics != nil)
        #expect(byName["br0"]?.kind == "bridge")
        // Attributes the decoder does not interpret are kept, not dropped.
        #expect(!veth0.unknownAttributes.isEmpty)
        #expect(veth0.unknownAttributes.contains { $0.type == IFLA.txqlen })
    }

    @Test func addressesFromKernelDump() throws {
        let addresses = try fixtureMessages("addresses").filter { $0.header.type == RTM.newAddress }
            .map(InterfaceAddress.init(message:))
        let v4 = try #require(addresses.first { $0.prefix.address == IPAddress("10.0.2.184") })
        #expect(v4.prefix.length == 32)
        #expect(v4.scope == .link)
        #expect(v4.label == "veth0")
        let v6 = try #require(addresses.first { $0.prefix == IPPrefix("fd00::1/64") })
        #expect(v6.flags & InterfaceAddress.flagNoDAD != 0)
        #expect(v6.interfaceIndex == v4.interfaceIndex)
    }

    @Test func routesFromKernelDump() throws {
        let routes = try fixtureMessages("routes").filter { $0.header.type == RTM.newRoute }.map(Route.init(message:))
        let direct = try #require(routes.first { $0.destination == IPPrefix("10.0.1.0/24") })
        #expect(direct.gateway == IPAddress("172.18.0.3"))
        #expect(direct.onLink)
        #expect(direct.protocol.rawValue == 77)
        #expect(direct.mtu == 1450)
        #expect(direct.table == RouteTable.main)
        #expect(direct.scope == .universe && direct.type == .unicast)
        let host = try #require(routes.first { $0.destination == IPPrefix("10.0.2.184/32") })
        #expect(host.scope == .link && host.gateway == nil && host.interfaceIndex == direct.interfaceIndex)
    }

    @Test func unknownRouteAttributesAreSentBackOnAddAndReplaceButNotOnDelete() throws {
        let routes = try fixtureMessages("routes").filter { $0.header.type == RTM.newRoute }.map(Route.init(message:))
        var route = try #require(routes.first { $0.destination == IPPrefix("10.0.1.0/24") })
        let realms = NetlinkAttribute(type: 11, payload: [0x03, 0x00, 0x05, 0x00][...])
        let nested = NetlinkAttribute(
            type: 22, isNested: true, payload: [0x08, 0x00, 0x01, 0x00, 0x2a, 0x00, 0x00, 0x00][...])
        route.unknownAttributes += [realms, nested]
        func decoded(_ request: NetlinkRequest) throws -> Route {
            let bytes = request.message.finished(sequence: 1, portID: 0)
            return try Route(message: try #require(try NetlinkMessage.parse(bytes[...]).first))
        }
        #expect(try decoded(route.replaceRequest).unknownAttributes == route.unknownAttributes)
        #expect(try decoded(route.addRequest).unknownAttributes == route.unknownAttributes)
        #expect(try decoded(route.deleteRequest).unknownAttributes.isEmpty, "a delete names the route by its keys")
        #expect(try decoded(route.replaceRequest).gateway == route.gateway)
    }

    @Test func neighboursFromKernelDump() throws {
        let neighbours = try fixtureMessages("neighbours").filter { $0.header.type == RTM.newNeighbour }
            .map(Neighbour.init(message:))
        let entry = try #require(neighbours.first)
        #expect(entry.address == IPAddress("10.0.2.7"))
        #expect(entry.linkLayerAddress == MACAddress("02:00:00:00:00:07"))
        #expect(entry.state == .permanent)
    }

    @Test func unknownNeighbourAttributesAreSentBackOnReplaceButNotOnDelete() throws {
        var entry = try #require(
            try fixtureMessages("neighbours").filter { $0.header.type == RTM.newNeighbour }
                .map(Neighbour.init(message:)).first)
        let flagsExt = NetlinkAttribute(type: 15, payload: [0x01, 0x00, 0x00, 0x00][...])
        entry.unknownAttributes += [flagsExt]
        func decoded(_ request: NetlinkRequest) throws -> Neighbour {
            let bytes = request.message.finished(sequence: 1, portID: 0)
            return try Neighbour(message: try #require(try NetlinkMessage.parse(bytes[...]).first))
        }
        #expect(try decoded(entry.replaceRequest).unknownAttributes == entry.unknownAttributes)
        #expect(try decoded(entry.deleteRequest).unknownAttributes.isEmpty, "a delete names the entry by its keys")
        #expect(try decoded(entry.replaceRequest).linkLayerAddress == entry.linkLayerAddress)
    }

    @Test func qdiscsAndBPFFilterFromKernelDump() throws {
        let qdiscs = try fixtureMessages("qdiscs").filter { $0.header.type == RTM.newQdisc }.map(Qdisc.init(message:))
        #expect(qdiscs.contains { $0.isClsact && $0.parent == 0xFFFF_FFF1 })

        let all = try fixtureMessages("filters").filter { $0.header.type == RTM.newFilter }.map(TCFilter.init(message:))
        // The dump has a bare chain entry (handle 0, no options) before the real filter.
        #expect(all.contains { !$0.hasOptions && $0.handle == 0 })
        let filter = try #require(all.first { $0.hasOptions })
        #expect(filter.kind == "bpf")
        #expect(filter.direction == .ingress)
        #expect(filter.priority == 1 && filter.handle == 1 && filter.protocolNumber == 0x0003)
        #expect(filter.bpf?.name == "nodenet-fixture")
        #expect(filter.bpf?.directAction == true)
        #expect((filter.bpf?.programID ?? 0) > 0)
        #expect(filter.bpf?.tag?.count == 8)
    }

    @Test func extendedAckFromKernel() throws {
        let datagrams = try fixtureDatagrams("error-bad-gateway")
        let request = datagrams[0]
        let reply = try #require(try NetlinkMessage.parse(datagrams[1][...]).first)
        #expect(reply.header.flags.contains(.capped) && reply.header.flags.contains(.ackTLVs))
        let ack = try ExtendedAck(parsing: reply)
        #expect(ack.error == -Errno.networkUnreachable.rawValue)
        #expect(ack.message == "Nexthop has invalid gateway")
        let error = try #require(ack.failure(request: request, context: "adding route 10.0.9.0/24 via 192.0.2.1 dev 2"))
        #expect(error == NetlinkError(.networkUnreachable))
        #expect(
            error.description
                == "adding route 10.0.9.0/24 via 192.0.2.1 dev 2: Nexthop has invalid gateway (ENETUNREACH)")
    }
}

@Suite struct DeviceKeyTests {
    @Test func perDeviceSysctlKeysAreRecognisedAndNothingElse() {
        #expect(
            DeviceConfiguration.deviceKey("net/ipv4/conf/lxc5fa86a0801be/rp_filter")! == (
                "ipv4", "lxc5fa86a0801be", "rp_filter"
            ))
        #expect(DeviceConfiguration.deviceKey("net.ipv6.conf.eth0.disable_ipv6")! == ("ipv6", "eth0", "disable_ipv6"))
        #expect(
            DeviceConfiguration.deviceKey("net/ipv4/conf/eth0.100/forwarding")! == ("ipv4", "eth0.100", "forwarding"))
        for other in [
            "net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding", "net/ipv4/conf/default/rp_filter",
            "net.ipv4.conf.eth0.100.forwarding", "net/ipv4/conf/eth0", "net/ipv4/conf//rp_filter",
            "net/ipv4/conf/eth0/", "net/ipv4/conf/eth0/a/b", "net/ipv5/conf/eth0/rp_filter", "",
        ] {
            #expect(DeviceConfiguration.deviceKey(other) == nil, "\(other)")
        }
    }
}
