public enum ChangeAction: String, Sendable, Codable {
    case create, update, delete
}

/// What a planned change is about, as plans and reports name it.
public enum ChangeKind: String, Sendable, Codable, CaseIterable {
    case link, address, route, sysctl, endpoint, datapath, service
}

/// One line of a plan: what changes, where, and what the kernel has now.
public struct PlannedChange: Sendable, Equatable, CustomStringConvertible {
    public var action: ChangeAction
    public var kind: ChangeKind
    public var namespace: NamespaceScope
    /// The object, e.g. `route 10.0.1.0/24` or `sysctl net.ipv4.ip_forward`.
    public var subject: String
    public var wanted: String?
    public var found: String?
    /// The kernel change itself, by domain (each domain has one executor).
    let change: Change

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
