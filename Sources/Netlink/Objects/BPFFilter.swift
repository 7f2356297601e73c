/// Which clsact hook a tc filter sits on.
public enum TCDirection: String, Sendable, Hashable, CaseIterable {
    case ingress
    case egress

    /// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS / EGRESS)`.
    public var parent: UInt32 { (TCA.clsactParent & 0xFFFF_0000) | (self == .ingress ? TCA.minIngress : TCA.minEgress) }

    init?(parent: UInt32) {
        switch parent {
        case TCDirection.ingress.parent: self = .ingress
        case TCDirection.egress.parent: self = .egress
        default: return nil
        }
    }
}

/// A cls_bpf filter to attach: the program (by fd), its name and where it goes.
public struct BPFFilterConfiguration: Sendable, Equatable {
    public var interfaceIndex: InterfaceIndex
    public var direction: TCDirection
    public var programFD: Int32
    /// Shown by `tc filter show` (`name` field); nodenet uses recognisable names.
    public var name: String
    public var priority: UInt16
    public var handle: UInt32
    /// `da`: the program's return code is the verdict (no separate action).
    public var directAction: Bool

    public init(
        interfaceIndex: InterfaceIndex, direction: TCDirection, programFD: Int32, name: String, priority: UInt16 = 1,
        handle: UInt32 = 1, directAction: Bool = true
    ) {
        self.interfaceIndex = interfaceIndex
        self.direction = direction
        self.programFD = programFD
        self.name = name
        self.priority = priority
        self.handle = handle
        self.directAction = directAction
    }

    func request(replace: Bool) -> NetlinkRequest {
        var m = MessageBuilder(type: RTM.newFilter, flags: replace ? [.create, .replace] : [.create, .exclusive])
        m.append(
            familyHeader: tcmsg(
                interfaceIndex: interfaceIndex, handle: handle, parent: direction.parent,
                info: UInt32(priority) << 16 | UInt32(TCA.ethPAll.byteSwapped)))
        m.attribute(TCA.kind, string: "bpf")
        m.nested(TCA.options) { o in
            o.attribute(TCA.bpfFD, u32: UInt32(bitPattern: programFD))
            o.attribute(TCA.bpfName, string: name)
            o.attribute(TCA.bpfFlags, u32: directAction ? TCA.bpfFlagDirectAction : 0)
        }
        let verb = replace ? "replacing" : "attaching"
        return NetlinkRequest(
            m, context: "\(verb) bpf filter \(name) on link \(interfaceIndex) \(direction.rawValue) prio \(priority)")
    }

    public var addRequest: NetlinkRequest { request(replace: false) }
    public var replaceRequest: NetlinkRequest { request(replace: true) }
}

/// A tc filter as the kernel lists it (`RTM_NEWTFILTER`).
public struct TCFilter: Sendable, Equatable {
    public var interfaceIndex: InterfaceIndex
    public var parent: UInt32
    public var direction: TCDirection? { TCDirection(parent: parent) }
    public var priority: UInt16
    /// Ethertype in host order (`0x0003` = all).
    public var protocolNumber: UInt16
    public var handle: UInt32
    public var kind: String
    public var chain: UInt32?
    /// For `bpf` filters: the attached program.
    public var bpf: BPFFilterInfo?
    public var unknownAttributes: [NetlinkAttribute]

    static let known: Set<UInt16> = [TCA.kind, TCA.options, TCA.chain]

    public init(message: NetlinkMessage) throws {
        let r = ByteReader(message.payload)
        interfaceIndex = try r.interfaceIndex(4)
        handle = try r.u32(8)
        parent = try r.u32(12)
        let info = try r.u32(16)
        priority = UInt16(info >> 16)
        protocolNumber = UInt16(info & 0xFFFF).byteSwapped
        let attrs = try AttributeList(parsing: try r.slice(tcmsgSize, r.count - tcmsgSize))
        kind = attrs[TCA.kind]?.string ?? ""
        chain = attrs[TCA.chain]?.u32
        if kind == "bpf", let options = try attrs[TCA.options]?.nested() {
            bpf = BPFFilterInfo(
                programID: options[TCA.bpfID]?.u32, name: options[TCA.bpfName]?.string,
                directAction: (options[TCA.bpfFlags]?.u32 ?? 0) & TCA.bpfFlagDirectAction != 0,
                tag: options[TCA.bpfTag].map { Array($0.payload) })
        }
        hasOptions = attrs[TCA.options] != nil
        unknownAttributes = attrs.unknown(excluding: Self.known)
    }

    /// False for the bare per-priority chain entries a dump includes (handle 0, no options).
    var hasOptions: Bool
}

public struct BPFFilterInfo: Sendable, Equatable {
    public var programID: UInt32?
    public var name: String?
    public var directAction: Bool
    public var tag: [UInt8]?
}

extension NetlinkSocket {
    /// Attaches a cls_bpf filter (add-exclusive). The link needs a clsact qdisc.
    public func add(_ filter: BPFFilterConfiguration) throws { try execute(filter.addRequest) }
    /// Attaches or atomically replaces the filter with the same priority and handle.
    public func replace(_ filter: BPFFilterConfiguration) throws { try execute(filter.replaceRequest) }

    /// Filters on one hook of a link (bare chain entries left out).
    public func filters(interfaceIndex: InterfaceIndex, direction: TCDirection) throws -> [TCFilter] {
        var m = MessageBuilder(type: RTM.getFilter, flags: [])
        m.append(familyHeader: tcmsg(interfaceIndex: interfaceIndex, handle: 0, parent: direction.parent, info: 0))
        return try dump(NetlinkRequest(m, context: "listing \(direction.rawValue) filters on link \(interfaceIndex)"))
            .map(TCFilter.init(message:)).filter { $0.hasOptions || $0.handle != 0 }
    }
}
