import Synchronization

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
    public var subject: String { text.resolved.subject }
    public var wanted: String? { text.resolved.wanted }
    public var found: String? { text.resolved.found }
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

    /// A change whose words are made once, when first read: a plan of 10 000 services has
    /// 40 000 changes, and an embedder that only wants them applied never reads them.
    init(
        action: ChangeAction, kind: ChangeKind, namespace: NamespaceScope, change: Change,
        words: @escaping @Sendable () -> ChangeText.Words
    ) {
        (self.action, self.kind, self.namespace, self.change) = (action, kind, namespace, change)
        text = .deferred(DeferredWords(words))
    }

    public static func == (a: PlannedChange, b: PlannedChange) -> Bool {
        a.action == b.action && a.kind == b.kind && a.namespace == b.namespace && a.change == b.change
            && a.text.resolved == b.text.resolved
    }

    public var description: String {
        let words = text.resolved
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
        let words = text.resolved
        return "\(words.subject) [\(namespace)]: wanted \(words.wanted ?? "nothing"), found \(words.found ?? "nothing")"
    }
}

/// A planned change's words: made with the change, or once, when first read.
enum ChangeText: Sendable {
    struct Words: Sendable, Equatable {
        var subject: String
        var wanted: String?
        var found: String?
    }
    case made(Words)
    case deferred(DeferredWords)

    var resolved: Words {
        switch self {
        case .made(let words): words
        case .deferred(let deferred): deferred.words
        }
    }
}

/// Words made on first read and kept (copies of a change share them; reads may race).
final class DeferredWords: Sendable {
    private let state: Mutex<(make: (@Sendable () -> ChangeText.Words)?, made: ChangeText.Words?)>

    init(_ make: @escaping @Sendable () -> ChangeText.Words) { state = Mutex((make, nil)) }

    var words: ChangeText.Words {
        state.withLock { state in
            if let made = state.made { return made }
            let made = state.make!()
            state = (nil, made)  // what the words were made from can go
            return made
        }
    }
}
