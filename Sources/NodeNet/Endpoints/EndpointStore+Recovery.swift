import Foundation

#if canImport(Glibc)
    import Glibc
#endif

extension EndpointStore {
    /// The prefix of the container ids of endpoints recovered from the ledger (their real ones
    /// were in the store that was lost).
    public static let recoveredPrefix = "recovered-"

    /// The node's endpoint store; one that cannot be read or trusted (damaged, another node's,
    /// a directory, …) never wedges the node: it is moved aside as `endpoints.json.corrupt-<time>`
    /// and the endpoints are recovered from the ledger (what was last applied: each CNI pod's
    /// name, address, network namespace and device), under container ids `recovered-<device>`.
    /// A runtime's DEL cannot name those; each is dropped once its network namespace is gone
    /// (`droppingVanishedRecovered`). `warning` says what happened.
    public static func loadRecovering(
        stateDirectory: String, node: String, podCIDR: IPPrefix, specPods: [PodSpec]
    ) -> (store: EndpointStore, warning: String?) {
        let path = path(stateDirectory: stateDirectory)
        let why: String
        if access(path, F_OK) != 0 && errno == ENOENT {
            // Missing: a fresh node, or a store lost while the ledger still names the runtime's
            // pods (it records which endpoints came from CNI). Only those are rebuilt.
            let reading = Ledger.read(from: stateDirectory, node: node, moveAside: false)
            guard case .valid(let ledger) = reading, ledger.endpoints.contains(where: { $0.runtime == true }) else {
                return (EndpointStore(stateDirectory: stateDirectory, node: node), nil)
            }
            why = "the endpoint store \(path) is missing"
            return rebuild(
                from: reading, stateDirectory: stateDirectory, node: node, podCIDR: podCIDR, specPods: specPods,
                why: why, aside: nil)
        }
        do {
            return (try load(stateDirectory: stateDirectory, node: node, podCIDR: podCIDR), nil)
        } catch {
            why = "\(error)"
        }
        let aside = StateFile.moveAside(path)
        let reading = Ledger.read(from: stateDirectory, node: node, moveAside: false)
        return rebuild(
            from: reading, stateDirectory: stateDirectory, node: node, podCIDR: podCIDR, specPods: specPods, why: why,
            aside: aside ?? "nowhere (it stays, ignored)")
    }

    /// A store of the endpoints the ledger names as the runtime's (a ledger older than that
    /// record: every endpoint that is not a spec pod), saved, and the warning that says so.
    private static func rebuild(
        from reading: Ledger.Reading, stateDirectory: String, node: String, podCIDR: IPPrefix, specPods: [PodSpec],
        why: String, aside: String?
    ) -> (store: EndpointStore, warning: String?) {
        var store = EndpointStore(stateDirectory: stateDirectory, node: node)
        var recovered: [Endpoint] = []
        let specPodIDs = Set(specPods.map(\.id))
        if case .valid(let ledger) = reading {
            let marked = ledger.endpoints.contains { $0.runtime != nil }
            for entry in ledger.endpoints where !specPodIDs.contains(entry.pod) && (!marked || entry.runtime == true) {
                let parts = entry.pod.split(separator: "/", maxSplits: 1).map(String.init)
                guard parts.count == 2, let ip = IPAddress(entry.ip) else { continue }
                let endpoint = Endpoint(
                    attachment: Endpoint.Attachment(
                        containerID: recoveredPrefix + entry.hostDevice, interface: Endpoint.supportedInterface),
                    netns: entry.netns, podNamespace: parts[0], podName: parts[1], ip: ip)
                // Checked as any record: a ledger names what it names, the store's rules still hold.
                guard (try? endpoint.validateRecord(podCIDR: podCIDR)) != nil, endpoint.hostDevice == entry.hostDevice,
                    !recovered.contains(where: { $0.ip == ip || $0.hostDevice == entry.hostDevice })
                else { continue }
                recovered.append(endpoint)
            }
        }
        store.endpoints = recovered.sorted { $0.attachment < $1.attachment }
        var saved = ""
        do {
            try store.save()
        } catch {
            saved = "; the new store could not be written (\(error)), it is kept in memory"
        }
        let source: String
        switch reading {
        case .valid: source = "\(recovered.count) endpoint(s) recovered from the ledger"
        case .none: source = "no ledger to recover endpoints from"
        case .untrusted(let reason, _):
            source = "no endpoint recovered: the ledger cannot be trusted either (\(reason))"
        }
        let moved = aside.map { "; moved aside to \($0)" } ?? ""
        return (
            store,
            "\(why)\(moved); \(source) (container ids unknown: shown as \(recoveredPrefix)<device>; each goes when its network namespace does)\(saved)"
        )
    }

    /// Without the recovered endpoints whose network namespace is gone (no DEL can name them);
    /// nil when none went.
    public func droppingVanishedRecovered() -> EndpointStore? {
        let gone = endpoints.filter {
            $0.attachment.containerID.hasPrefix(Self.recoveredPrefix) && access($0.netns, F_OK) != 0
        }
        guard !gone.isEmpty else { return nil }
        var next = self
        next.endpoints.removeAll { gone.contains($0) }
        return next
    }
}
