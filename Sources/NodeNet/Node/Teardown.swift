import Foundation

/// What `teardown` removed.
public struct TeardownReport: Sendable, Codable, Equatable {
    public var routes: Int
    public var endpoints: Int
    public var hostPair: Bool
    /// Our tc filters removed from devices that stay (the native device).
    public var programs: Int
    public var pinsRemoved: Bool
    public var sysctlsRestored: [String]
    public var ledgerRemoved: Bool
    /// What teardown had to work around (a ledger it could not trust), in sentences.
    public var warnings: [String] = []
    public var nothingToDo: Bool {
        routes == 0 && endpoints == 0 && !hostPair && programs == 0 && !pinsRemoved && sysctlsRestored.isEmpty
            && !ledgerRemoved
    }
}

extension NodeController {
    /// Removes everything nodenet owns on the node: its routes, the endpoints it recorded
    /// (or the spec names), the host pair, and the ledger; restores the global sysctls it
    /// changed. Safe to run twice.
    public func teardown() throws -> TeardownReport {
        try underLock(command: "teardown") {
            try Self.teardown(
                namespace: session.namespace, stateDirectory: spec.stateDirectory, node: spec.node.name,
                socket: session.node, extraEndpoints: spec.pods.map(NodeNetNames.endpointDevice(for:)),
                bpffsDirectory: spec.bpffsDirectory)
        }
    }

    /// Teardown from the ledger alone (no spec), under the node's lock.
    public static func teardown(namespace: NamespaceReference, stateDirectory: String) throws -> TeardownReport {
        // Without a spec, the node's name is the ledger's (a ledger that cannot be read has none).
        var node = "(unknown)"
        if let data = try? StateFile.readText(Ledger.path(in: stateDirectory), limit: Ledger.sizeLimit),
            let ledger = try? JSONDecoder().decode(Ledger.self, from: data)
        {
            node = ledger.node
        }
        let lock = try NodeLock.acquire(stateDirectory: stateDirectory, node: node, command: "teardown")
        return try withExtendedLifetime(lock) {
            try teardown(
                namespace: namespace, stateDirectory: stateDirectory, node: node,
                socket: NetlinkSocket(namespace: namespace), extraEndpoints: [], bpffsDirectory: nil)
        }
    }

    private static func teardown(
        namespace: NamespaceReference, stateDirectory: String, node: String, socket: NetlinkSocket,
        extraEndpoints: [String], bpffsDirectory: String?
    ) throws -> TeardownReport {
        let linkList = try socket.links()
        let links = Dictionary(linkList.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var warnings: [String] = []
        let ledger: Ledger?
        switch Ledger.read(from: stateDirectory, node: node, moveAside: true) {
        case .none: ledger = nil
        case .valid(let valid): ledger = valid
        case .untrusted(let reason, let movedTo):
            // Ownership from the kernel instead: lxc devices by name, the spec's bpffs directory.
            // Nothing the untrusted file says is acted on (no sysctl is written from it).
            ledger = Ledger.rebuilt(node: node, links: linkList, bpffsDirectory: bpffsDirectory, reason: reason)
            warnings.append(
                "ledger: \(reason); " + (movedTo.map { "moved aside to \($0)" } ?? "left in place")
                    + "; removed what the kernel shows as nodenet's; sysctls from before nodenet not restored")
        }
        let routes = try socket.routes(
            RouteFilter(family: .inet, table: RouteTable.main, protocol: NodeNetNames.routeProtocol))
        var report = TeardownReport(
            routes: 0, endpoints: 0, hostPair: false, programs: 0, pinsRemoved: false, sysctlsRestored: [],
            ledgerRemoved: false, warnings: warnings)
        for result in socket.batch(routes.map(\.deleteRequest)) {
            switch result {
            case .success: report.routes += 1
            case .failure(let e) where e.errno == .notFound || e.errno == .noSuchFileOrDirectory: break
            case .failure(let e): throw e
            }
        }
        // Links are deleted only when the ledger proves nodenet created them here (a node may
        // run real Cilium, whose devices have the same names). Spec-named endpoints count only
        // if the ledger knows them too.
        let known = Set(ledger?.endpoints.map(\.hostDevice) ?? [])
        let devices = known.union(Set(extraEndpoints).intersection(known)).filter { links[$0] != nil }
        for device in devices.sorted() {
            try socket.delete(.link(named: device))
            report.endpoints += 1
        }
        // Our programs on devices that stay (the native device): only filters named nodenet-*.
        for link in links.values where !devices.contains(link.name) && !link.name.hasPrefix("cilium_") {
            for f in (try? socket.filters(interfaceIndex: link.index, direction: .ingress)) ?? []
            where DatapathProgram.isOurs(f) {
                try socket.delete(f)
                report.programs += 1
            }
        }
        // Only our own pins, in the spec's directory and every one the ledger knows (the
        // directory may have changed between applies); a directory goes only once empty.
        let pinDirectories = Set([bpffsDirectory].compactMap { $0 } + (ledger?.pinDirectories ?? []))
        for directory in pinDirectories.sorted() where BPFFSLayout(directory: directory).removeOwnedPins() {
            report.pinsRemoved = true
        }
        if ledger != nil, links[NodeNetNames.hostDevice] != nil {
            try socket.delete(.link(named: NodeNetNames.hostDevice))
            report.hostPair = true
        }
        for (key, value) in (ledger?.sysctlOriginals ?? [:]).sorted(by: { $0.key < $1.key }) {
            if (try? Sysctl.read(key, in: namespace)) != value {
                try Sysctl.write(key, value, in: namespace)
                report.sysctlsRestored.append("\(key)=\(value)")
            }
        }
        if ledger != nil {
            Ledger.remove(from: stateDirectory)
            report.ledgerRemoved = true
        }
        return report
    }
}
