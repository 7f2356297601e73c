import ArgumentParser
import Etcd
import Foundation
import NodeNet
import NodeNetAgent

struct ClusterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "The cluster in etcd: nodes, services and published pods (cluster mode).",
        discussion: """
            In cluster mode (a `cluster` section in the node spec, see docs/spec.md) every agent registers its node in \
            etcd under a lease, claims its pod CIDR, publishes its pods and programs every other node and every service \
            it finds there. These commands read and write that state. Name etcd with --etcd URL (repeat it for several \
            members) or take the node spec's cluster section with --spec FILE.
            """,
        subcommands: [Nodes.self, Services.self, Endpoints.self, Service.self])

    struct Nodes: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "nodes", abstract: "Registered nodes: name, address, pod CIDR, lease, version.")
        @OptionGroup var options: ClusterOptions
        @Flag(help: "Print JSON: [{name, address, podCIDR, bootID, version, lease, problem}].") var json = false

        func run() throws {
            let keys = try options.keys()
            let snapshot = try options.withClient { try await $0.range(prefix: keys.nodes) }
            var rows: [NodeRow] = []
            for kv in snapshot.keyValues {
                switch ClusterNodeRecord.decode(kv.value) {
                case .success(let r):
                    rows.append(
                        NodeRow(
                            name: r.name, address: "\(r.address)", podCIDR: "\(r.podCIDR)", bootID: r.bootID,
                            version: r.version, lease: kv.lease.map { "\($0)" }, problem: nil))
                case .failure(let error):
                    rows.append(
                        NodeRow(
                            name: String(kv.key.dropFirst(keys.nodes.count)), address: "", podCIDR: "", bootID: "",
                            version: "", lease: kv.lease.map { "\($0)" }, problem: error.description))
                }
            }
            if json { return try printJSON(rows) }
            printTable(
                ["NAME", "ADDRESS", "POD CIDR", "LEASE", "VERSION"],
                rows.map { [$0.name, $0.address, $0.podCIDR, $0.lease ?? "none", $0.problem ?? $0.version] })
        }
    }

    struct Services: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "services", abstract: "Services in the cluster, as written by `cluster service apply`.")
        @OptionGroup var options: ClusterOptions
        @Flag(help: "Print JSON: [{name, type, clusterIP, ports, backends, problem}] (backends as written).")
        var json = false

        func run() throws {
            let keys = try options.keys()
            let snapshot = try options.withClient { try await $0.range(prefix: keys.services) }
            var rows: [ServiceRow] = []
            for kv in snapshot.keyValues {
                let name = String(kv.key.dropFirst(keys.services.count))
                switch ClusterServiceRecord.decode(kv.value) {
                case .success(let s):
                    rows.append(
                        ServiceRow(
                            name: s.name, type: s.type.rawValue, clusterIP: "\(s.clusterIP)",
                            ports: s.ports.map {
                                "\($0.port)\($0.nodePort.map { ":\($0)" } ?? "")/\($0.protocol.rawValue)"
                            },
                            backends: s.backends.map { "\($0.ip)\($0.port.map { ":\($0)" } ?? "")" }
                                + s.podBackends.map { "pod \($0.pod)\($0.port.map { ":\($0)" } ?? "")" }, problem: nil))
                case .failure(let error):
                    rows.append(
                        ServiceRow(
                            name: name, type: "", clusterIP: "", ports: [], backends: [], problem: error.description))
                }
            }
            if json { return try printJSON(rows) }
            printTable(
                ["NAME", "TYPE", "CLUSTER-IP", "PORTS", "BACKENDS"],
                rows.map {
                    [
                        $0.name, $0.type, $0.clusterIP, $0.ports.joined(separator: ","),
                        $0.problem.map { "invalid: \($0)" } ?? $0.backends.joined(separator: ", "),
                    ]
                })
        }
    }

    struct Endpoints: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "endpoints", abstract: "Pods published by their nodes (what pod backends resolve through).")
        @OptionGroup var options: ClusterOptions
        @Flag(help: "Print JSON: [{pod, ip, node, problem}].") var json = false

        func run() throws {
            let keys = try options.keys()
            let snapshot = try options.withClient { try await $0.range(prefix: keys.endpoints) }
            let rows = snapshot.keyValues.map { kv -> EndpointRow in
                switch ClusterEndpointRecord.decode(kv.value) {
                case .success(let e): EndpointRow(pod: e.pod, ip: "\(e.ip)", node: e.node, problem: nil)
                case .failure(let error):
                    EndpointRow(
                        pod: String(kv.key.dropFirst(keys.endpoints.count)), ip: "", node: "",
                        problem: error.description)
                }
            }
            if json { return try printJSON(rows) }
            printTable(
                ["POD", "IP", "NODE"], rows.map { [$0.pod, $0.ip, $0.problem.map { "invalid: \($0)" } ?? $0.node] })
        }
    }

    struct Service: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "service", abstract: "Write or delete cluster services.",
            subcommands: [Apply.self, Delete.self])

        struct Apply: ParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "apply",
                abstract: "Write the services of FILE to the cluster (created or replaced by name).",
                discussion: """
                    FILE holds one service object or {"services": [...]}, with the node spec's service fields \
                    (docs/spec.md); a backend may name a pod instead of an address: {"pod": "default/web-1", "port": 8080}. \
                    The services are checked with the spec's rules, together with the cluster's other services and nodes \
                    (one clusterIP and node port each, node ports in 30000-32767); when any check fails nothing is written \
                    and the exit status is 2.
                    """)
            @OptionGroup var options: ClusterOptions
            @Argument(help: "A JSON file with a service or {\"services\": [...]}.") var file: String
            @Flag(help: "Print JSON: [{name, result}].") var json = false

            func run() throws {
                let data: Data
                do {
                    data = try StateFile.readText(file, limit: NodeSpec.fileSizeLimit)
                } catch {
                    throw InvalidInput(message: "\(error)")
                }
                let services = try Self.read(data)
                let keys = try options.keys()
                let results = try options.withClient { client -> [ApplyRow] in
                    let existing = try await client.range(prefix: keys.services)
                    let nodes = try await client.range(prefix: keys.nodes).keyValues.compactMap {
                        try? ClusterNodeRecord.decode($0.value).get().remoteNode
                    }
                    var others: [ServiceSpec] = []
                    // By etcd key: what each service's key holds now, and at which revision.
                    var current: [String: EtcdKeyValue] = [:]
                    for kv in existing.keyValues {
                        current[kv.key] = kv
                        guard case .success(let s) = ClusterServiceRecord.decode(kv.value),
                            kv.key == keys.service(s.name)
                        else { continue }
                        if !services.contains(where: { $0.name == s.name }) { others.append(s) }
                    }
                    let all = services + others
                    let paths =
                        services.indices.map { "services[\($0)]" } + others.map { "cluster service \($0.name)" }
                    let problems = ClusterServiceRecord.problems(all, paths: paths, nodes: nodes)
                    if !problems.isEmpty { throw SpecError(problems) }
                    var rows: [ApplyRow] = []
                    for service in services {
                        let key = keys.service(service.name)
                        let value = ClusterServiceRecord.encoded(service)
                        let held = current[key]
                        let result = held == nil ? "created" : held?.value == value ? "unchanged" : "configured"
                        // Written only if nobody changed the key since it was read (a concurrent
                        // apply): then this one fails and says so instead of overwriting.
                        if result != "unchanged",
                            try await !client.put(key, value: value, ifModRevision: held?.modRevision ?? 0)
                        {
                            throw ConcurrentChange(service: service.name)
                        }
                        rows.append(ApplyRow(name: service.name, result: result))
                    }
                    return rows
                }
                if json { return try printJSON(results) }
                for row in results { print("service/\(row.name) \(row.result)") }
            }

            /// One service object or {"services": [...]}, read with the spec's rules (pod backends allowed).
            static func read(_ data: Data) throws -> [ServiceSpec] {
                let root = try SpecReader.document(data)
                var reader = SpecReader()
                let services: [ServiceSpec]
                if case .object(let fields) = root, fields["services"] != nil {
                    _ = reader.object(root, "", allowed: ["services"])
                    services = reader.readServices(fields, "", podBackends: true)
                } else {
                    services = reader.readServices(["services": .array([root])], "", podBackends: true)
                }
                if !reader.problems.isEmpty { throw SpecError(reader.problems) }
                if services.isEmpty { throw SpecError([SpecProblem("services", "names no service")]) }
                for (i, s) in services.enumerated() {
                    if let why = ClusterServiceRecord.nameProblem(s.name) {
                        throw SpecError([SpecProblem("services[\(i)].name", why)])
                    }
                }
                return services
            }
        }

        struct Delete: ParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "delete", abstract: "Delete a cluster service by name (exit 1 when there is none).")
            @OptionGroup var options: ClusterOptions
            @Argument(help: "The service's name.") var name: String

            func run() throws {
                if let why = ClusterServiceRecord.nameProblem(name) {
                    throw InvalidInput(message: "service name \(why)")
                }
                let keys = try options.keys()
                let deleted = try options.withClient { try await $0.delete(keys.service(name)) }
                guard deleted > 0 else {
                    printError("nodenetd: no service \(name) in the cluster")
                    throw ExitCode(1)
                }
                print("service/\(name) deleted")
            }
        }
    }
}

struct NodeRow: Encodable {
    var name, address, podCIDR, bootID, version: String
    var lease: String?
    var problem: String?
}

struct ServiceRow: Encodable {
    var name, type, clusterIP: String
    var ports, backends: [String]
    var problem: String?
}

struct EndpointRow: Encodable {
    var pod, ip, node: String
    var problem: String?
}

struct ApplyRow: Encodable {
    var name, result: String
}

/// Where etcd is: --etcd URLs and TLS flags, or a node spec's cluster section.
struct ClusterOptions: ParsableArguments {
    @Option(
        name: .customLong("etcd"),
        help:
            "An etcd client URL (https://10.0.0.1:2379, http://…, unix:///path); repeat or comma-separate for members.")
    var etcd: [String] = []
    @Option(help: "Take etcd's endpoints, TLS files and the prefix from this node spec's cluster section.")
    var spec: String?
    @Option(help: "The key prefix (default /nodenet/v1, or the spec's).") var prefix: String?
    @Option(help: "CA certificate (PEM) that signed etcd's certificates.") var caFile: String?
    @Option(help: "Client certificate (PEM), when etcd asks for one.") var certFile: String?
    @Option(help: "The client certificate's key (PEM).") var keyFile: String?
    @Option(help: "Seconds each etcd request may take.") var timeout: Int = 5

    func settings() throws -> ClusterSettings {
        var settings: ClusterSettings
        if let spec {
            guard let cluster = try NodeSpec.load(path: spec).cluster else {
                throw InvalidInput(message: "\(spec) has no cluster section")
            }
            settings = cluster
        } else {
            let urls = etcd.flatMap { $0.split(separator: ",").map(String.init) }
            guard !urls.isEmpty else { throw InvalidInput(message: "name etcd with --etcd URL (or --spec FILE)") }
            settings = ClusterSettings(endpoints: urls)
        }
        for url in settings.endpoints {
            if let why = ClusterSettings.endpointProblem(url) { throw InvalidInput(message: "--etcd: \(why)") }
        }
        if let prefix {
            guard prefix.hasPrefix("/"), !prefix.hasSuffix("/") else {
                throw InvalidInput(message: "--prefix \"\(prefix)\" must start with '/' and not end with '/'")
            }
            settings.prefix = prefix
        }
        if let caFile { settings.caFile = caFile }
        if let certFile { settings.certFile = certFile }
        if let keyFile { settings.keyFile = keyFile }
        return settings
    }

    func keys() throws -> ClusterKeys { ClusterKeys(prefix: try settings().prefix) }

    /// Runs `body` with a client, blocking this (main) thread until it is done.
    func withClient<T: Sendable>(_ body: @escaping @Sendable (any EtcdClient) async throws -> T) throws -> T {
        try withEtcdClient(try settings(), timeout: timeout, body)
    }
}

/// Runs `body` with a client for `settings`, blocking this (main) thread until it is done.
func withEtcdClient<T: Sendable>(
    _ settings: ClusterSettings, timeout: Int = 5, _ body: @escaping @Sendable (any EtcdClient) async throws -> T
) throws -> T {
    let client: any EtcdClient
    do {
        client = try NodeAgent.makeGatewayClient(settings, requestTimeout: .seconds(timeout))
    } catch {
        throw InvalidInput(message: "\(error)")
    }
    return try NodeAgent.blocking(client, body)
}

struct ConcurrentChange: Error, CustomStringConvertible {
    let service: String
    var description: String {
        "service \(service) changed in etcd while this apply checked it (another apply?); it was not written: run the apply again"
    }
}
