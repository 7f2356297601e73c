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
    public var subject: String { resolved.subject }
    public var wanted: String? { resolved.wanted }
    public var found: String? { resolved.found }
    /// The three at once (a services change makes its words on each read).
    public var words: (subject: String, wanted: String?, found: String?) {
        let words = resolved
        return (words.subject, words.wanted, words.found)
    }
    /// The kernel change itself, by domain (each domain has one executor).
    let change: Change
    private let text: ChangeText

    init(
        action: ChangeAction, kind: ChangeKind, namespace: NamespaceScope, subject: String, wanted: String?,
        found: String?, change: Change
    ) {
        (self.action, self.kind, self.namespace, self.change) = (action, kind, namespace, change)
        text = .made(ChangeText.Words(subject: subject, wanted: wanted, found: found))
    }

    /// A services change whose words are made from it, when read (`ServiceWords`).
    init(action: ChangeAction, kind: ChangeKind, namespace: NamespaceScope, change: ServiceChange, words: ServiceWords)
    {
        (self.action, self.kind, self.namespace, self.change) = (action, kind, namespace, .service(change))
        text = .service(words)
    }

    private var resolved: ChangeText.Words {
        switch text {
        case .made(let words): words
        case .service(let source): source.words(for: change.service!)
        }
    }

    public static func == (a: PlannedChange, b: PlannedChange) -> Bool {
        a.action == b.action && a.kind == b.kind && a.namespace == b.namespace && a.change == b.change
            && a.resolved == b.resolved
    }

    public var description: String {
        let words = resolved
        let sign = action == .create ? "+" : action == .delete ? "-" : "~"
        var s = "\(sign) \(words.subject)"
        switch action {
        case .create: s += ": \(words.wanted ?? "")"
        case .update: s += ": \(words.found ?? "?") -> \(words.wanted ?? "?")"
        case .delete: s += ": \(words.found ?? "")"
        }
        return s + "  [\(namespace)]"
    }

    /// `what: wanted X, found Y`, for verification reports.
    public var mismatch: String {
        let words = resolved
        return "\(words.subject) [\(namespace)]: wanted \(words.wanted ?? "nothing"), found \(words.found ?? "nothing")"
    }
}

/// A planned change's words: made with the change, or made from it when read.
enum ChangeText: Sendable {
    struct Words: Sendable, Equatable {
        var subject: String
        var wanted: String?
        var found: String?
    }
    /// (Indirect: a pointer, as the other case, and not three strings in every change of a plan.)
    indirect case made(Words)
    /// A services change's, with what its plan's services changes share.
    case service(ServiceWords)
}
