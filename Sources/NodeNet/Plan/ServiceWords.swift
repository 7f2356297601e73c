import Synchronization

/// What the words of a plan's services changes are made from, when they are read: the wanted
/// frontends and the maps as the plan found them. One per plan, shared by its services changes,
/// whose words come from the change itself and this: no object per change (a plan of 100 000
/// services has 400 000 changes, and an embedder that only applies them never reads a word).
final class ServiceWords: Sendable {
    private let frontends: [DesiredFrontend]
    private let observed: ObservedServices
    /// Wanted frontends by key, made on the first read of a frontend's words.
    private let index = Mutex<[FrontendKey: Int]?>(nil)

    init(frontends: [DesiredFrontend], observed: ObservedServices) {
        (self.frontends, self.observed) = (frontends, observed)
    }

    func words(for change: ServiceChange) -> ChangeText.Words {
        switch change {
        case .putBackend(let id, let backend, let previous):
            return .init(subject: "backend \(id)", wanted: backend.description, found: previous?.description)
        case .deleteBackend(let id, let previous):
            return .init(subject: "backend \(id)", wanted: nil, found: previous.description)
        case .putFrontend(let key, let wanted, _, _):
            let found = observed.entry(key).map { Self.describe($0, backends: observed.backends) }
            guard let frontend = frontend(key) else {
                return .init(subject: "frontend \(key)", wanted: Self.describe(wanted, backends: [:]), found: found)
            }
            // The wanted slots hold the frontend's backends in order.
            let addresses = Dictionary(zip(wanted.backendIDs, frontend.backends), uniquingKeysWith: { a, _ in a })
            return .init(
                subject: "\(frontend.type.rawValue) \(key)", wanted: Self.describe(wanted, backends: addresses),
                found: found)
        case .deleteFrontend(let key, _):
            let type = observed.masters[key]?.flags.contains(.nodePort) == true ? "NodePort" : "ClusterIP"
            return .init(
                subject: "\(type) \(key)", wanted: nil,
                found: observed.entry(key).map { Self.describe($0, backends: observed.backends) }
                    ?? "incomplete entries")
        case .deleteRevNat(let id, let previous):
            return .init(subject: "frontend id \(id)", wanted: nil, found: previous.description)
        case .clearMalformed(let entry):
            return .init(subject: entry.subject, wanted: nil, found: entry.found)
        case .putSettings, .putNode, .deleteNode, .putSourceRange, .deleteSourceRange, .putMaglevTable,
            .deleteMaglevTable, .attachSocket, .unpinSocket:
            // (planned with their words made)
            return .init(subject: "\(change)", wanted: nil, found: nil)
        }
    }

    private func frontend(_ key: FrontendKey) -> DesiredFrontend? {
        let i = index.withLock { index in
            if index == nil {
                index = Dictionary(frontends.indices.map { (frontends[$0].key, $0) }, uniquingKeysWith: { a, _ in a })
            }
            return index![key]
        }
        return i.map { frontends[$0] }
    }

    /// `id 7, 10.0.1.5:8080, 10.0.2.9:8080` (plans describe every changed frontend).
    private static func describe(_ e: FrontendEntry, backends: [UInt32: BackendAddress]) -> String {
        var s = "id \(e.id), "
        guard !e.backendIDs.isEmpty else { return s + "no backends" }
        s.reserveCapacity(s.utf8.count + 22 * e.backendIDs.count)
        for (i, id) in e.backendIDs.enumerated() {
            if i > 0 { s += ", " }
            if let b = backends[id] {
                s += b.address.description
                s += ":"
                s += String(b.port)
            } else {
                s += "backend "
                s += String(id)
            }
        }
        return s
    }
}
