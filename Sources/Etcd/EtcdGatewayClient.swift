import AsyncHTTPClient
import Foundation
import NIOCore
import NIOSSL

/// An etcd v3 client on etcd's JSON gateway (`/v3/...`, HTTP/1.1, keys and values base64,
/// 64-bit numbers as strings), through AsyncHTTPClient. Requests go to one endpoint at a time;
/// when it does not answer, the next is tried (every endpoint once per request). A watch is one
/// streaming request whose body is a line of JSON per response.
public final class EtcdGatewayClient: EtcdClient, @unchecked Sendable {
    public let endpoints: [EtcdEndpoint]
    /// How long one request (not a watch) may take, connection included.
    public let requestTimeout: Duration
    private let http: HTTPClient
    private let lock = NSLock()
    private var current = 0
    /// The TLS settings for `unixs://` endpoints.
    private var unixTLS: TLSConfiguration?

    public init(
        endpoints: [EtcdEndpoint], tls: EtcdTLS? = nil, requestTimeout: Duration = .seconds(5)
    ) throws(EtcdError) {
        guard !endpoints.isEmpty else { throw .configuration("no etcd endpoint given") }
        self.endpoints = endpoints
        self.requestTimeout = requestTimeout
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(2))
        configuration.decompression = .disabled
        configuration.redirectConfiguration = .disallow
        if endpoints.contains(where: \.isSecure) || tls != nil {
            var config = TLSConfiguration.makeClientConfiguration()
            do {
                if let ca = tls?.caFile {
                    config.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
                }
                switch (tls?.certFile, tls?.keyFile) {
                case (let cert?, let key?):
                    config.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
                    config.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
                case (nil, nil): break
                default: throw EtcdError.configuration("a client certificate needs both certFile and keyFile")
                }
            } catch let error as EtcdError {
                throw error
            } catch {
                throw .configuration("reading the TLS files: \(error)")
            }
            configuration.tlsConfiguration = config
            // A unix socket has no host name to check: the chain is still verified against the CA.
            var unixConfig = config
            unixConfig.certificateVerification = .noHostnameVerification
            unixTLS = unixConfig
        }
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    private var isShutDown = false

    public func shutdown() async {
        let first = lock.withLock { () -> Bool in
            defer { isShutDown = true }
            return !isShutDown
        }
        guard first else { return }
        try? await http.shutdown()
    }

    /// A client dropped without `shutdown()` (an error path) still closes its connections.
    deinit {
        if !isShutDown { http.shutdown(queue: .global()) { _ in } }
    }

    // MARK: Calls

    public func range(prefix: String) async throws -> EtcdSnapshot {
        let reply = try await call(
            "/v3/kv/range", "reading \(prefix)*",
            ["key": Self.base64(prefix), "range_end": Self.base64(Self.prefixEnd(prefix))])
        return EtcdSnapshot(revision: try reply.revision(), keyValues: try reply.keyValues("kvs"))
    }

    public func get(_ key: String) async throws -> EtcdKeyValue? {
        let reply = try await call("/v3/kv/range", "reading \(key)", ["key": Self.base64(key)])
        return try reply.keyValues("kvs").first
    }

    @discardableResult
    public func put(_ key: String, value: [UInt8], lease: EtcdLease.ID?) async throws -> Int64 {
        var body: [String: Any] = ["key": Self.base64(key), "value": Data(value).base64EncodedString()]
        if let lease { body["lease"] = String(lease.rawValue) }
        return try await call("/v3/kv/put", "writing \(key)", body).revision()
    }

    public func put(_ key: String, value: [UInt8], ifModRevision modRevision: Int64) async throws -> Bool {
        let compare: [String: Any] =
            modRevision == 0
            ? ["key": Self.base64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"]
            : ["key": Self.base64(key), "target": "MOD", "result": "EQUAL", "mod_revision": String(modRevision)]
        let reply = try await call(
            "/v3/kv/txn", "writing \(key) unless it changed",
            [
                "compare": [compare],
                "success": [["request_put": ["key": Self.base64(key), "value": Data(value).base64EncodedString()]]],
            ])
        return reply.bool("succeeded")
    }

    @discardableResult
    public func delete(_ key: String) async throws -> Int {
        let reply = try await call("/v3/kv/deleterange", "deleting \(key)", ["key": Self.base64(key)])
        return Int(reply.int64("deleted") ?? 0)
    }

    public func claim(_ key: String, value: [UInt8], lease: EtcdLease.ID?) async throws -> EtcdKeyValue? {
        var put: [String: Any] = ["key": Self.base64(key), "value": Data(value).base64EncodedString()]
        if let lease { put["lease"] = String(lease.rawValue) }
        let operation = "claiming \(key)"
        // Absent: create it.
        let first = try await call(
            "/v3/kv/txn", operation,
            [
                "compare": [["key": Self.base64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"]],
                "success": [["request_put": put]], "failure": [["request_range": ["key": Self.base64(key)]]],
            ])
        if first.bool("succeeded") { return nil }
        guard let held = try first.txnRange() else { return nil }
        guard held.value == value else { return held }
        // Ours already (from an earlier lease): written again under this lease, unless it changed meanwhile.
        let again = try await call(
            "/v3/kv/txn", operation,
            [
                "compare": [
                    [
                        "key": Self.base64(key), "target": "MOD", "result": "EQUAL",
                        "mod_revision": String(held.modRevision),
                    ]
                ],
                "success": [["request_put": put]], "failure": [["request_range": ["key": Self.base64(key)]]],
            ])
        return again.bool("succeeded") ? nil : try again.txnRange()
    }

    public func grantLease(ttl: Int) async throws -> EtcdLease {
        let reply = try await call("/v3/lease/grant", "granting a lease of \(ttl) s", ["TTL": String(ttl)])
        guard let id = reply.int64("ID") else { throw reply.malformed("no lease ID") }
        return EtcdLease(id: EtcdLease.ID(id), ttl: Int(reply.int64("TTL") ?? Int64(ttl)))
    }

    public func keepAlive(_ lease: EtcdLease.ID) async throws -> Int {
        let reply = try await call(
            "/v3/lease/keepalive", "renewing lease \(lease)", ["ID": String(lease.rawValue)])
        // A streaming call: its errors come with HTTP 200 as {"error": …}, not as an expired lease.
        if let error = reply.fields["error"] as? [String: Any] {
            throw EtcdError.server(
                operation: reply.operation, endpoint: reply.endpoint, code: Int(Reply.int64(error["grpc_code"]) ?? 0),
                message: error["message"] as? String ?? "unknown error")
        }
        let result = reply.object("result")
        return Int(Reply.int64(result["TTL"]) ?? 0)
    }

    public func revokeLease(_ lease: EtcdLease.ID) async throws {
        _ = try await call("/v3/lease/revoke", "revoking lease \(lease)", ["ID": String(lease.rawValue)])
    }

    public func watch(prefix: String, after revision: Int64) -> AsyncThrowingStream<EtcdWatchResponse, any Error> {
        let body = try? JSONSerialization.data(withJSONObject: [
            "create_request": [
                "key": Self.base64(prefix), "range_end": Self.base64(Self.prefixEnd(prefix)),
                "start_revision": String(revision + 1), "progress_notify": true,
            ]
        ])
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    let (response, endpoint) = try await self.openStream(
                        "/v3/watch", "watching \(prefix)*", body ?? Data())
                    let operation = "watching \(prefix)*"
                    var pending: [UInt8] = []
                    for try await chunk in response.body {
                        pending.append(contentsOf: chunk.readableBytesView)
                        if pending.count > Self.answerLimit, !pending.contains(UInt8(ascii: "\n")) {
                            throw EtcdError.malformed(
                                operation: operation, endpoint: endpoint.description,
                                detail: "a watch response longer than \(Self.answerLimit) bytes")
                        }
                        while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                            let line = Array(pending[..<newline])
                            pending.removeSubrange(...newline)
                            if line.allSatisfy({ $0 == 32 || $0 == 13 }) { continue }
                            let reply = try Reply(line, operation: operation, endpoint: endpoint.description)
                            if let response = try Self.watchResponse(reply, requested: revision) {
                                continuation.yield(response)
                            }
                        }
                    }
                    throw EtcdError.unreachable(["\(endpoint) ended the watch stream"])
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    private static func watchResponse(_ reply: Reply, requested: Int64) throws -> EtcdWatchResponse? {
        if let error = reply.fields["error"] as? [String: Any] {
            throw EtcdError.server(
                operation: reply.operation, endpoint: reply.endpoint, code: Int(Reply.int64(error["grpc_code"]) ?? 0),
                message: error["message"] as? String ?? "unknown error")
        }
        let result = reply.object("result")
        let header = result["header"] as? [String: Any] ?? [:]
        let revision = Reply.int64(header["revision"]) ?? 0
        if let compacted = Reply.int64(result["compact_revision"]), compacted > 0 {
            throw EtcdError.compacted(requested: requested, compactRevision: compacted)
        }
        if result["canceled"] as? Bool == true {
            throw EtcdError.watchCancelled(reason: result["cancel_reason"] as? String ?? "no reason given")
        }
        if result["created"] as? Bool == true { return .created(revision: revision) }
        let events = result["events"] as? [Any] ?? []
        if events.isEmpty { return .progress(revision: revision) }
        var out: [EtcdEvent] = []
        for case let event as [String: Any] in events {
            guard let kvFields = event["kv"] as? [String: Any], let kv = try reply.keyValue(kvFields) else {
                throw reply.malformed("an event without its key")
            }
            if event["type"] as? String == "DELETE" {
                out.append(.delete(key: kv.key, revision: kv.modRevision))
            } else {
                out.append(.put(kv))
            }
        }
        return .events(out, revision: revision)
    }

    // MARK: Transport

    /// The largest answer or watch line read (a watch response of many events is large; a
    /// record is at most a few KiB).
    static let answerLimit = 32 << 20

    /// One call: the reply's JSON, or an error in our words with etcd's. Each endpoint gets the
    /// whole request timeout, answer included; one that does not answer is left for the next.
    private func call(_ path: String, _ operation: String, _ body: [String: Any]) async throws -> Reply {
        let data = try JSONSerialization.data(withJSONObject: body)
        let timeout = requestTimeout
        return try await attempt(path, operation, data) { request, endpoint in
            let (status, bytes) = try await Self.within(timeout) { [http] in
                let response = try await http.execute(request, deadline: .now() + .nanoseconds(timeout.nanoseconds))
                return (response.status, try await response.body.collect(upTo: Self.answerLimit))
            }
            let reply = try Reply(Array(bytes.readableBytesView), operation: operation, endpoint: endpoint.description)
            if status != .ok {
                throw Answered(
                    EtcdError.server(
                        operation: operation, endpoint: endpoint.description,
                        code: Int(Reply.int64(reply.fields["code"]) ?? 0),
                        message: reply.fields["message"] as? String ?? reply.fields["error"] as? String
                            ?? "HTTP \(status.code)"))
            }
            return reply
        }
    }

    /// The watch's streaming response (its headers within the request timeout; the body then
    /// streams for as long as the watch lives). Only a member with a leader serves it.
    private func openStream(
        _ path: String, _ operation: String, _ data: Data
    ) async throws -> (HTTPClientResponse, EtcdEndpoint) {
        let timeout = requestTimeout
        return try await attempt(path, operation, data) { [http] request, endpoint in
            var request = request
            request.headers.add(name: "Grpc-Metadata-hasleader", value: "true")
            return (try await http.execute(request, deadline: .now() + .nanoseconds(timeout.nanoseconds)), endpoint)
        }
    }

    /// An error that is etcd's answer (not the endpoint failing): not retried elsewhere.
    private struct Answered: Error {
        let error: EtcdError
        init(_ error: EtcdError) { self.error = error }
    }

    /// Tries `body` on the current endpoint, then the others; the first that answers becomes
    /// the current one.
    private func attempt<T>(
        _ path: String, _ operation: String, _ data: Data,
        _ body: (HTTPClientRequest, EtcdEndpoint) async throws -> T
    ) async throws -> T {
        let start = lock.withLock { current }
        var reasons: [String] = []
        for step in 0..<endpoints.count {
            let index = (start + step) % endpoints.count
            let endpoint = endpoints[index]
            var request = HTTPClientRequest(url: endpoint.url(path))
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            // A unix socket has no host name; etcd's HTTP server still wants the header.
            if case .unix(_, let secure) = endpoint.location {
                request.headers.replaceOrAdd(name: "Host", value: "localhost")
                if secure { request.tlsConfiguration = unixTLS }
            }
            request.body = .bytes(ByteBuffer(bytes: data))
            do {
                let result = try await body(request, endpoint)
                lock.withLock { current = index }
                return result
            } catch let answered as Answered {
                lock.withLock { current = index }
                throw answered.error
            } catch let error as EtcdError {
                // A malformed answer: this endpoint is not one to keep asking.
                lock.withLock { if current == index { current = (index + 1) % endpoints.count } }
                reasons.append("\(error)")
            } catch {
                try Task.checkCancellation()
                lock.withLock { if current == index { current = (index + 1) % endpoints.count } }
                reasons.append("\(endpoint): \(Self.describe(error)) (\(operation))")
            }
        }
        throw EtcdError.unreachable(reasons)
    }

    private struct TimedOut: Error, CustomStringConvertible {
        let timeout: Duration
        var description: String { "no answer within \(timeout)" }
    }

    /// `body`'s result, or `TimedOut` after `timeout` (body is cancelled).
    private static func within<T: Sendable>(
        _ timeout: Duration, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        try await withThrowingTaskGroup(of: T.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw TimedOut(timeout: timeout)
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }

    private static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded: return "no answer in time"
            case .connectTimeout: return "connecting timed out"
            case .remoteConnectionClosed: return "the connection was closed"
            default: return "\(error)"
            }
        }
        return "\(error)"
    }

    static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    /// The end of the range of keys that start with `prefix` (etcd's "prefix + 1").
    static func prefixEnd(_ prefix: String) -> String {
        var bytes = Array(prefix.utf8)
        while let last = bytes.last {
            if last < 0xFF {
                bytes[bytes.count - 1] = last + 1
                return String(decoding: bytes, as: UTF8.self)
            }
            bytes.removeLast()
        }
        return "\0"
    }
}

extension Duration {
    fileprivate var nanoseconds: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
    }
}

/// One JSON answer of the gateway, with what we asked, for errors.
struct Reply {
    let fields: [String: Any]
    let operation: String
    let endpoint: String

    init(_ bytes: [UInt8], operation: String, endpoint: String) throws {
        self.operation = operation
        self.endpoint = endpoint
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            let start = String(decoding: bytes.prefix(120), as: UTF8.self)
            throw EtcdError.malformed(operation: operation, endpoint: endpoint, detail: "not a JSON object: \(start)")
        }
        fields = object
    }

    func malformed(_ detail: String) -> EtcdError {
        .malformed(operation: operation, endpoint: endpoint, detail: detail)
    }

    func object(_ key: String) -> [String: Any] { fields[key] as? [String: Any] ?? [:] }
    func bool(_ key: String) -> Bool { fields[key] as? Bool ?? false }
    func int64(_ key: String) -> Int64? { Self.int64(fields[key]) }

    /// proto3 JSON: 64-bit numbers are strings, zero values are left out.
    static func int64(_ value: Any?) -> Int64? {
        switch value {
        case let s as String: Int64(s)
        case let n as NSNumber: n.int64Value
        default: nil
        }
    }

    func revision() throws -> Int64 {
        guard let revision = Self.int64(object("header")["revision"]) else { throw malformed("no header revision") }
        return revision
    }

    func keyValues(_ key: String) throws -> [EtcdKeyValue] {
        try (fields[key] as? [Any] ?? []).compactMap { item in
            guard let kv = item as? [String: Any] else { throw malformed("a key-value that is not an object") }
            return try keyValue(kv)
        }
    }

    func keyValue(_ kv: [String: Any]) throws -> EtcdKeyValue? {
        guard let key64 = kv["key"] as? String, let key = Data(base64Encoded: key64) else {
            throw malformed("a key that is not base64")
        }
        let value = (kv["value"] as? String).flatMap { Data(base64Encoded: $0) } ?? Data()
        let lease = Self.int64(kv["lease"]).flatMap { $0 == 0 ? nil : EtcdLease.ID($0) }
        return EtcdKeyValue(
            key: String(decoding: key, as: UTF8.self), value: Array(value),
            createRevision: Self.int64(kv["create_revision"]) ?? 0, modRevision: Self.int64(kv["mod_revision"]) ?? 0,
            lease: lease)
    }

    /// The key a failed transaction's range read.
    func txnRange() throws -> EtcdKeyValue? {
        for case let response as [String: Any] in fields["responses"] as? [Any] ?? [] {
            if let range = response["response_range"] as? [String: Any] {
                let first = (range["kvs"] as? [Any] ?? []).first as? [String: Any]
                return try first.flatMap { try keyValue($0) }
            }
        }
        return nil
    }
}
