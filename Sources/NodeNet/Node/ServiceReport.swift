/// What `nodenetd service list` shows for one frontend: read from the node's maps (the
/// kernel's truth), named from the spec where it knows the frontend.
public struct ServiceStatus: Sendable, Codable, Equatable {
    public struct Backend: Sendable, Codable, Equatable {
        /// Position among the frontend's backends (1...).
        public var index: Int
        /// The backend's id in the backends map.
        public var id: UInt32
        public var address: String
        public var port: UInt16
        public var `protocol`: String
        /// `active`; `terminating` (no new flows, keeps its own); `missing` when the backends map
        /// has no such id.
        public var state: String
    }

    /// The frontend's id (stable across applies and restarts).
    public var id: FrontendID
    public var frontend: String
    public var address: String
    public var port: UInt16
    public var `protocol`: String
    /// `ClusterIP` or `NodePort`.
    public var type: String
    /// The spec's service, when it names this frontend.
    public var service: String?
    /// What the frontend's entry says beyond its type, as Cilium shows it:
    /// `ExternalTrafficPolicy=Local` (node ports), `InternalTrafficPolicy=Local` (clusterIP).
    public var flags: [String]
    public var backends: [Backend]
    /// `ok`, `incomplete` (entries of an interrupted apply) or `stale` (not in the spec).
    public var state: String
}

extension NodeController {
    /// Every frontend in the node's service maps, by id.
    public func services() throws -> [ServiceStatus] {
        // Maps of another build's layout would be read in this one's (a binary upgraded, no
        // apply since): their fields would be misread. (Maps of another size are refused too:
        // the spec changed `loadBalancer.mapEntries`, and apply replaces them.)
        let incompatible = try spec.bpffs.incompatibleMaps()
        if let map = BPFFSLayout.Map.serviceTables.first(where: { incompatible[$0] != nil }) {
            throw NodeNetError.state(
                "the service maps are of another build's layout or another loadBalancer.mapEntries (\(map.rawValue): \(incompatible[map]!)): apply replaces them"
            )
        }
        let observed = try ObservedServices.read(spec.bpffs)
        let wanted = Dictionary(spec.serviceFrontends.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        var rows: [ServiceStatus] = []
        // Built once (per frontend it made a listing of many services quadratic).
        let idsByAddress = Dictionary(observed.backends.map { ($0.value, $0.key) }, uniquingKeysWith: min)
        let rangesByID = Dictionary(grouping: observed.sourceRanges, by: \.id)
        for key in observed.frontendKeys {
            let master = observed.masters[key]
            let entry = observed.entry(key)
            let ids = entry?.backendIDs ?? (observed.slots[key] ?? [:]).sorted { $0.key < $1.key }.map(\.value)
            let backends = ids.enumerated().map { i, id -> ServiceStatus.Backend in
                let b = observed.backends[id]
                return ServiceStatus.Backend(
                    index: i + 1, id: id, address: b?.address.description ?? "-", port: b?.port ?? 0,
                    protocol: b?.protocol.rawValue ?? key.protocol.rawValue, state: b == nil ? "missing" : "active")
            }
            // Terminating backends out of the slots, kept for their flows, as Cilium lists them.
            let terminating = (wanted[key]?.retained ?? []).enumerated().map { i, b -> ServiceStatus.Backend in
                ServiceStatus.Backend(
                    index: backends.count + i + 1, id: idsByAddress[b] ?? 0, address: b.address.description,
                    port: b.port,
                    protocol: b.protocol.rawValue, state: idsByAddress[b] == nil ? "missing" : "terminating")
            }
            let type: ServiceType =
                wanted[key]?.type ?? (master?.flags.contains(.nodePort) == true ? .nodePort : .clusterIP)
            var flags: [String] = []
            if master?.flags.contains(.localOnly) == true {
                flags.append(type.hasNodePorts ? "ExternalTrafficPolicy=Local" : "InternalTrafficPolicy=Local")
            }
            if let master, master.flags.contains(.affinity) {
                flags.append("sessionAffinity=ClientIP (\(master.affinityTimeout) s)")
            }
            if let master, master.flags.contains(.sourceRanges) {
                let ranges = (rangesByID[master.id] ?? []).sorted().map(\.prefix.description)
                flags.append("loadBalancerSourceRanges=\(ranges.joined(separator: ","))")
            }
            if let master, let table = observed.maglev[master.id] {
                flags.append("Maglev (\(table.size) entries)")
            }
            rows.append(
                ServiceStatus(
                    id: master?.id ?? 0, frontend: "\(key.address):\(key.port)", address: key.address.description,
                    port: key.port,
                    protocol: key.protocol.rawValue, type: type.rawValue, service: wanted[key]?.service, flags: flags,
                    backends: backends + terminating,
                    state: entry == nil ? "incomplete" : wanted[key] == nil ? "stale" : "ok"))
        }
        return rows.sorted { ($0.id, $0.address, $0.port) < ($1.id, $1.address, $1.port) }
    }
}
