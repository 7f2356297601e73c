/// A queueing discipline (`RTM_NEWQDISC`). nodenet uses only `clsact`, the hook point for
/// tc BPF programs on ingress and egress.
public struct Qdisc: Sendable, Equatable {
    public var interfaceIndex: InterfaceIndex
    public var handle: UInt32
    public var parent: UInt32
    public var kind: String
    public var unknownAttributes: [NetlinkAttribute]

    public var isClsact: Bool { kind == "clsact" }

    static let known: Set<UInt16> = [TCA.kind]

    public init(message: NetlinkMessage) throws {
        let r = ByteReader(message.payload)
        interfaceIndex = try r.interfaceIndex(4)
        handle = try r.u32(8)
        parent = try r.u32(12)
        let attrs = try AttributeList(parsing: try r.slice(tcmsgSize, r.count - tcmsgSize))
        kind = attrs[TCA.kind]?.string ?? ""
        unknownAttributes = attrs.unknown(excluding: Self.known)
    }

    static func clsactRequest(
        interfaceIndex: InterfaceIndex, type: UInt16, flags: NetlinkFlags, verb: String
    ) -> NetlinkRequest {
        var m = MessageBuilder(type: type, flags: flags)
        m.append(
            familyHeader: tcmsg(
                interfaceIndex: interfaceIndex, handle: TCA.clsactHandle, parent: TCA.clsactParent, info: 0))
        m.attribute(TCA.kind, string: "clsact")
        return NetlinkRequest(m, context: "\(verb) clsact qdisc on link \(interfaceIndex)")
    }
}

let tcmsgSize = 20

func tcmsg(interfaceIndex: InterfaceIndex, handle: UInt32, parent: UInt32, info: UInt32) -> [UInt8] {
    var b: [UInt8] = [0, 0, 0, 0]
    b.appendIndex(interfaceIndex)
    b.appendU32(handle)
    b.appendU32(parent)
    b.appendU32(info)
    return b
}

extension NetlinkSocket {
    /// Qdiscs, optionally of one interface.
    public func qdiscs(interfaceIndex: InterfaceIndex? = nil) throws -> [Qdisc] {
        var m = MessageBuilder(type: RTM.getQdisc, flags: [])
        m.append(familyHeader: tcmsg(interfaceIndex: interfaceIndex ?? 0, handle: 0, parent: 0, info: 0))
        return try dump(NetlinkRequest(m, context: "listing qdiscs")).map(Qdisc.init(message:))
            .filter { interfaceIndex == nil || $0.interfaceIndex == interfaceIndex }
    }

    /// Adds a clsact qdisc; `EEXIST` when the link already has one.
    public func addClsact(interfaceIndex: InterfaceIndex) throws {
        try execute(
            Qdisc.clsactRequest(
                interfaceIndex: interfaceIndex, type: RTM.newQdisc, flags: [.create, .exclusive], verb: "adding"))
    }
}
