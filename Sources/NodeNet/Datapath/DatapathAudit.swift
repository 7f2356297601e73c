import BPF
import Foundation

/// The few facts about the node's BPF datapath the kernel gives cheaply, without a full
/// re-plan: which links are pinned, where they are attached and which program they run, which
/// tc filters of ours sit on the devices, and which maps are pinned with how many entries.
/// Taken right after a verified apply, it is the baseline a periodic audit compares against:
/// a detached program or an emptied service map shows up in a second, not at the next resync.
public struct DatapathFingerprint: Sendable, Equatable {
    /// What each fact is, by a name for it (`tcx link from-container@lxc…`, `map nodenet_services`).
    public private(set) var facts: [String: String] = [:]

    /// What differs from `baseline`, one line each (`map nodenet_services: was id 7, 12 entries; now id 7, 0 entries`).
    public func differences(from baseline: DatapathFingerprint) -> [String] {
        Set(facts.keys).union(baseline.facts.keys).sorted().compactMap { name in
            let was = baseline.facts[name]
            let now = facts[name]
            guard was != now else { return nil }
            return "\(name): was \(was ?? "absent"), now \(now ?? "absent")"
        }
    }

    /// Maps whose entry count is part of the fingerprint (what apply writes; the backends and
    /// reverse-NAT arrays count their entries that are not zeros); the others change with
    /// traffic (conntrack, fragments, events) or are arrays of fixed size.
    static let countedMaps: [BPFFSLayout.Map] = [.endpoints, .services, .backends, .revnat, .nodes]

    /// `clsactDevices`: the devices whose programs attach as cls_bpf filters (their filters are
    /// part of the fingerprint; tcx links are, wherever they are).
    init(layout: BPFFSLayout, node: NetlinkSocket, clsactDevices: [String]) throws {
        for name in layout.tcxLinks() {
            let info = try? BPFLink.info(pinnedAt: layout.tcxLinkPath(name))
            facts["tcx link \(name)"] =
                info.map { "ifindex \($0.ifindex ?? 0), program \($0.programID)" } ?? "unreadable"
        }
        for name in layout.socketLinks() {
            let info = try? BPFLink.info(pinnedAt: layout.socketLinkPath(name))
            facts["socket LB link \(name)"] = info.map { "link \($0.id), program \($0.programID)" } ?? "unreadable"
        }
        for device in clsactDevices {
            guard let link = try node.link(named: device) else { continue }
            let ours = try node.filters(interfaceIndex: link.index, direction: .ingress).filter(DatapathProgram.isOurs)
            facts["filters on \(device)"] = ours.map { "\($0.bpf?.name ?? "?") program \($0.bpf?.programID ?? 0)" }
                .sorted().joined(separator: ", ")
        }
        for map in BPFFSLayout.Map.allCases {
            if Self.countedMaps.contains(map) {
                facts["map \(map.rawValue)"] = try BPFMapInfo.census(pinnedAt: layout.path(map)).map {
                    "id \($0.id), \($0.entries) entries"
                }
            } else if FileManager.default.fileExists(atPath: layout.path(map)) {
                facts["map \(map.rawValue)"] = "pinned"
            }
        }
    }
}

extension DatapathFingerprint {
    init() {}

    /// `baseline` with what an endpoint change on `hostDevice` legitimately changed taken from
    /// this (newer) fingerprint: that device's links and filters, the endpoints map's count.
    /// Every other difference stays, for the next audit to find.
    public func absorbing(endpoint hostDevice: String, into baseline: DatapathFingerprint) -> DatapathFingerprint {
        var merged = baseline
        let mine: (String) -> Bool = {
            $0.hasPrefix("tcx link ") && $0.contains("@\(hostDevice)@") || $0 == "filters on \(hostDevice)"
                || $0 == "map \(BPFFSLayout.Map.endpoints.rawValue)"
        }
        for name in Set(facts.keys).union(baseline.facts.keys) where mine(name) { merged.facts[name] = facts[name] }
        return merged
    }
}
