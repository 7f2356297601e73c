import Foundation

/// The last cluster view an agent saw, kept in its state directory (`cluster.json`), so an
/// agent that starts while etcd does not answer keeps programming the cluster it knew instead
/// of flushing it. Records are stored as etcd held them and read back through the same checks
/// as a listing; a file that fails them is set aside and ignored.
public enum ClusterCache {
    public static func path(stateDirectory: String) -> String { stateDirectory + "/cluster.json" }

    /// The largest cache read (1 000 nodes with 100 pods each is about 10 MiB).
    static let sizeLimit = 64 << 20

    public static func save(_ view: ClusterView, stateDirectory: String) throws {
        let keyValues = view.records.map { ["key": $0.key, "value": Data($0.value).base64EncodedString()] }
        let data = try JSONSerialization.data(
            withJSONObject: ["revision": view.revision, "keyValues": keyValues], options: [.sortedKeys])
        try StateFile.writeAtomically(data, to: path(stateDirectory: stateDirectory), what: "the cluster cache")
    }

    /// The cached view, nil when there is none; a damaged cache is moved aside (`warning` says so).
    public static func load(
        keys: ClusterKeys, grace: Duration, stateDirectory: String
    ) -> (view: ClusterView?, warning: String?) {
        let file = path(stateDirectory: stateDirectory)
        let data: Data
        do {
            data = try StateFile.readText(file, limit: sizeLimit)
        } catch {
            if error.reason == .missing { return (nil, nil) }
            return (nil, "ignoring the cluster cache: \(error)")
        }
        guard let top = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let revision = (top["revision"] as? NSNumber)?.int64Value, let items = top["keyValues"] as? [Any]
        else {
            let aside = StateFile.moveAside(file)
            return (nil, "the cluster cache \(file) is not one nodenet wrote; moved aside to \(aside ?? "nowhere")")
        }
        var keyValues: [(key: String, value: [UInt8])] = []
        for case let item as [String: Any] in items {
            guard let key = item["key"] as? String,
                let value = (item["value"] as? String).flatMap({ Data(base64Encoded: $0) })
            else { continue }
            keyValues.append((key, Array(value)))
        }
        var view = ClusterView(keys: keys, grace: grace)
        view.replace(with: keyValues, revision: revision, now: .now, initial: true)
        return (view, nil)
    }
}

extension ClusterView {
    /// The view's records as etcd keys and values (departed nodes as they were).
    public var records: [(key: String, value: [UInt8])] {
        var out: [(key: String, value: [UInt8])] = []
        for (name, record) in nodes { out.append((keys.node(name), record.encoded())) }
        for (name, departed) in departed where nodes[name] == nil {
            out.append((keys.node(name), departed.record.encoded()))
        }
        for node in Set(nodes.keys).union(departed.keys) {
            for (pod, record) in pods(of: node) { out.append((keys.endpoint(node: node, pod: pod), record.encoded())) }
        }
        for (name, service) in services { out.append((keys.service(name), ClusterServiceRecord.encoded(service))) }
        return out.sorted { $0.key < $1.key }
    }
}

extension NodeSpec {
    /// In cluster mode: this spec with the cluster as its agent last saw it (`cluster.json`), so
    /// `plan`, `apply` and `status` by hand treat the cluster's routes and services as wanted
    /// instead of stale. Without a cache (or outside cluster mode) the spec as it is.
    public func withCachedCluster() -> NodeSpec {
        guard let cluster else { return self }
        let cached = ClusterCache.load(
            keys: ClusterKeys(prefix: cluster.prefix), grace: .seconds(cluster.nodeDeleteGrace),
            stateDirectory: stateDirectory)
        return cached.view.map { merging($0).spec } ?? self
    }
}
