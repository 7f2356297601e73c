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
        let why: String
        do {
            return (try load(stateDirectory: stateDirectory, node: node, podCIDR: podCIDR), nil)
        } catch {
            why = "\(error)"
        }
        let aside = StateFile.moveAside(path(stateDirectory: stateDirectory))
        var store = EndpointStore(stateDirectory: stateDirectory, node: node)
        var recovered: [Endpoint] = []
        let specPodIDs = Set(specPods.map(\.id))
        let reading = Ledger.read(from: stateDirectory, node: node, moveAside: false)
        if case .valid(let ledger) = reading {
            for entry in ledger.endpoints where !specPodIDs.contains(entry.pod) {
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
        return (
            store,
            "\(why); moved aside to \(aside ?? "nowhere (it stays, ignored)"); \(source) (container ids unknown: shown as \(recoveredPrefix)<device>; each goes when its network namespace does)\(saved)"
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
