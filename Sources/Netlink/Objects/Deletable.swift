/// A kernel object netlink can delete. One shape for all of them:
///
/// ```swift
/// try socket.delete(route)                        // a Route, InterfaceAddress, Neighbour, Link or TCFilter as read
/// try socket.delete(.link(named: "br0"))          // a veth takes its peer with it
/// try socket.delete(.clsact(interfaceIndex: 5))   // and with it every tc filter on the link
/// try socket.delete(.filter(interfaceIndex: 5, direction: .ingress, priority: 1, handle: 1))
/// ```
public protocol NetlinkDeletable: Sendable {
    /// The request that deletes this object (batchable with `NetlinkSocket.batch`).
    var deleteRequest: NetlinkRequest { get }
}

extension NetlinkSocket {
    /// Deletes `object`; the error carries the kernel's words and what was being deleted.
    public func delete(_ object: some NetlinkDeletable) throws { try execute(object.deleteRequest) }
}

extension Route: NetlinkDeletable {}
extension InterfaceAddress: NetlinkDeletable {}
extension Neighbour: NetlinkDeletable {}

extension Link: NetlinkDeletable {
    /// Deletes the link by its index (a veth takes its peer with it).
    public var deleteRequest: NetlinkRequest {
        var m = MessageBuilder(type: RTM.delLink, flags: [])
        m.append(familyHeader: ifinfomsg(index: index, flags: [], change: []))
        return NetlinkRequest(m, context: "deleting link \(name) (\(index))")
    }
}

/// A link named in the socket's namespace, to delete.
public struct LinkName: NetlinkDeletable, Hashable {
    public var name: String
    public init(_ name: String) { self.name = name }

    public var deleteRequest: NetlinkRequest {
        var m = MessageBuilder(type: RTM.delLink, flags: [])
        m.append(familyHeader: ifinfomsg(index: 0, flags: [], change: []))
        m.attribute(IFLA.ifname, string: name)
        return NetlinkRequest(m, context: "deleting link \(name)")
    }
}

/// The clsact qdisc of a link (deleting it removes every tc filter on the link).
public struct ClsactQdisc: NetlinkDeletable, Hashable {
    public var interfaceIndex: InterfaceIndex
    public init(interfaceIndex: InterfaceIndex) { self.interfaceIndex = interfaceIndex }

    public var deleteRequest: NetlinkRequest {
        Qdisc.clsactRequest(interfaceIndex: interfaceIndex, type: RTM.delQdisc, flags: [], verb: "deleting")
    }
}

/// One bpf filter on a clsact hook, by priority and handle.
public struct TCFilterReference: NetlinkDeletable, Hashable {
    public var interfaceIndex: InterfaceIndex
    public var direction: TCDirection
    public var priority: UInt16
    public var handle: UInt32

    public init(interfaceIndex: InterfaceIndex, direction: TCDirection, priority: UInt16, handle: UInt32 = 1) {
        self.interfaceIndex = interfaceIndex
        self.direction = direction
        self.priority = priority
        self.handle = handle
    }

    public var deleteRequest: NetlinkRequest {
        Self.deleteRequest(
            interfaceIndex: interfaceIndex, parent: direction.parent, priority: priority, handle: handle, kind: "bpf",
            hook: direction.rawValue)
    }

    static func deleteRequest(
        interfaceIndex: InterfaceIndex, parent: UInt32, priority: UInt16, handle: UInt32, kind: String, hook: String
    ) -> NetlinkRequest {
        var m = MessageBuilder(type: RTM.delFilter, flags: [])
        m.append(
            familyHeader: tcmsg(
                interfaceIndex: interfaceIndex, handle: handle, parent: parent,
                info: UInt32(priority) << 16 | UInt32(TCA.ethPAll.byteSwapped)))
        m.attribute(TCA.kind, string: kind)
        return NetlinkRequest(m, context: "deleting filter prio \(priority) on link \(interfaceIndex) \(hook)")
    }
}

extension TCFilter: NetlinkDeletable {
    /// Deletes the filter as it was listed (its hook, priority, handle and kind).
    public var deleteRequest: NetlinkRequest {
        TCFilterReference.deleteRequest(
            interfaceIndex: interfaceIndex, parent: parent, priority: priority, handle: handle, kind: kind,
            hook: TCDirection(parent: parent)?.rawValue ?? "parent \(parent)")
    }
}

extension BPFFilterConfiguration: NetlinkDeletable {
    public var deleteRequest: NetlinkRequest {
        TCFilterReference(interfaceIndex: interfaceIndex, direction: direction, priority: priority, handle: handle)
            .deleteRequest
    }
}

extension NetlinkDeletable where Self == LinkName {
    public static func link(named name: String) -> LinkName { LinkName(name) }
}

extension NetlinkDeletable where Self == ClsactQdisc {
    public static func clsact(interfaceIndex: InterfaceIndex) -> ClsactQdisc {
        ClsactQdisc(interfaceIndex: interfaceIndex)
    }
}

extension NetlinkDeletable where Self == TCFilterReference {
    public static func filter(
        interfaceIndex: InterfaceIndex, direction: TCDirection, priority: UInt16, handle: UInt32 = 1
    ) -> TCFilterReference {
        TCFilterReference(interfaceIndex: interfaceIndex, direction: direction, priority: priority, handle: handle)
    }
}
