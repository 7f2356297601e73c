/// Which namespace an operation works in.
public enum NamespaceScope: Sendable, Hashable, CustomStringConvertible {
    case node
    /// A pod's namespace, by the spec's `netns` string.
    case pod(String)

    public var description: String {
        switch self {
        case .node: return "node"
        case .pod(let netns): return "pod \(netns)"
        }
    }
}

/// One kernel operation of a plan, with enough of the prior state to undo it.
enum Operation: Sendable, Equatable {
    case createHostPair(mtu: UInt32)
    case setLink(NamespaceScope, device: String, LinkChange, undo: LinkChange)
    case addAddress(NamespaceScope, device: String, prefix: IPPrefix, scope: RouteScope)
    case deleteAddress(NamespaceScope, device: String, InterfaceAddress)
    /// Add-exclusive when `previous` is nil (a foreign route in the way fails with EEXIST
    /// rather than being overwritten); replace of our own route otherwise.
    case putRoute(NamespaceScope, RouteIntent, previous: Route?)
    case deleteRoute(NamespaceScope, Route)
    case setSysctl(SysctlSetting, previous: String?)
    case createEndpoint(hostDevice: String, netns: String, mtu: UInt32)
    case deleteLink(NamespaceScope, device: String)
    /// Puts a pod's entry (resolved at execution: lxc ifindex and MACs) into the endpoints map.
    case putEndpointEntry(ip: IPAddress, hostDevice: String, netns: String, previous: EndpointEntry?)
    case deleteEndpointEntry(ip: IPAddress, previous: EndpointEntry)
    /// Attaches (or replaces) a datapath program on a device's ingress (clsact added if missing).
    case attachProgram(device: String, DatapathProgram, replacing: Bool)
    /// Removes one of our tc filters.
    case detachProgram(device: String, priority: UInt16, handle: UInt32)
    /// Removes a pinned tcx link (which detaches its program).
    case unpinLink(name: String)
    /// Moves incompatible pinned maps aside (`NAME_old`): attached programs keep using them
    /// while this build's maps are created, filled and its programs attached.
    case setAsidePinnedMaps([String])
    /// Drops the maps set aside, once every program uses the new ones.
    case dropOldPinnedMaps([String])
    /// Unpins nodenet's entries in a bpffs directory the spec no longer uses (its maps and
    /// links), once every program uses the new directory's.
    case dropFormerPins(directory: String)

    /// Services: the settings entry, node addresses, backends and frontends (make-before-break).
    case service(ServiceOperation)

    /// Whether this operation works on BPF maps or attachments (not netlink or sysctls).
    var isDatapath: Bool {
        switch self {
        case .putEndpointEntry, .deleteEndpointEntry, .attachProgram, .detachProgram, .unpinLink, .setAsidePinnedMaps, .dropOldPinnedMaps, .dropFormerPins, .service:
            return true
        default:
            return false
        }
    }

    var scope: NamespaceScope {
        switch self {
        case .createHostPair, .setSysctl, .createEndpoint, .putEndpointEntry, .deleteEndpointEntry, .attachProgram, .detachProgram, .unpinLink, .setAsidePinnedMaps, .dropOldPinnedMaps,
            .dropFormerPins, .service:
            return .node
        case .setLink(let s, _, _, _), .addAddress(let s, _, _, _), .deleteAddress(let s, _, _), .putRoute(let s, _, _),
            .deleteRoute(let s, _), .deleteLink(let s, _):
            return s
        }
    }
}

public enum ChangeAction: String, Sendable, Codable {
    case create, update, delete
}

/// One line of a plan: what changes, where, and what the kernel has now.
public struct PlannedChange: Sendable, Equatable, CustomStringConvertible {
    public var action: ChangeAction
    /// `link`, `address`, `route`, `sysctl` or `endpoint`.
    public var kind: String
    public var namespace: NamespaceScope
    /// The object, e.g. `route 10.0.1.0/24` or `sysctl net.ipv4.ip_forward`.
    public var subject: String
    public var wanted: String?
    public var found: String?
    let operation: Operation

    public var description: String {
        let sign = action == .create ? "+" : action == .delete ? "-" : "~"
        var s = "\(sign) \(subject)"
        switch action {
        case .create: s += ": \(wanted ?? "")"
        case .update: s += ": \(found ?? "?") -> \(wanted ?? "?")"
        case .delete: s += ": \(found ?? "")"
        }
        return s + "  [\(namespace)]"
    }

    /// `what: wanted X, found Y`, for verification reports.
    public var mismatch: String {
        "\(subject) [\(namespace)]: wanted \(wanted ?? "nothing"), found \(found ?? "nothing")"
    }
}
