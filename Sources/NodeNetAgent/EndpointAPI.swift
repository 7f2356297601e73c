import BPF
import Dispatch
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
    import NodeNet
#endif

/// The agent's endpoint API: HTTP/JSON on a unix socket (mode 0600), for `nodenet-cni` and
/// operators. Only root peers are served (`SO_PEERCRED`); others get 403 and are logged.
///
///     PUT    /v1/endpoints/{containerID}/{ifname}        {"netns","podNamespace","podName"} -> EndpointResult
///     GET    /v1/endpoints                               -> [EndpointListing]
///     GET    /v1/endpoints/{containerID}/{ifname}        -> Endpoint
///     GET    /v1/endpoints/{containerID}/{ifname}/check  -> {"differences": [...]} (409 when any)
///     DELETE /v1/endpoints/{containerID}/{ifname}        -> {"deleted": bool}
///     POST   /v1/gc                                      {"keep": [{"containerID","interface"}]} -> {"removed": [...]}
///     GET    /v1/status                                  -> {"ready", "health", "freeAddresses"}
///
/// Errors are `{"kind", "message"}` with 400 invalid, 403 not root, 404 not found, 409
/// conflict, 507 no address left, 500 failed, 503 the agent cannot take requests now.
public enum EndpointAPI {
    /// `/run/nodenet/<node>/nodenet.sock`.
    public static func defaultSocket(node: String) -> String { "/run/nodenet/\(node)/nodenet.sock" }

    public struct CreateRequest: Codable, Sendable {
        public var netns: String
        public var podNamespace: String?
        public var podName: String?
        public init(netns: String, podNamespace: String? = nil, podName: String? = nil) {
            self.netns = netns
            self.podNamespace = podNamespace
            self.podName = podName
        }
    }

    public struct CollectRequest: Codable, Sendable {
        public var keep: [Endpoint.Attachment]
        public init(keep: [Endpoint.Attachment]) { self.keep = keep }
    }

    public struct Listing: Codable, Sendable, Equatable {
        /// `spec` (the node spec's `pods[]`) or `cni`.
        public var source: String
        public var pod: String
        public var ip: String
        public var device: String
        public var netns: String
        public var containerID: String?
        public var interface: String?
    }

    public struct Status: Codable, Sendable, Equatable {
        public var ready: Bool
        public var health: String
        public var freeAddresses: Int
    }

    public struct ErrorBody: Codable, Sendable, Equatable {
        public var kind: EndpointError.Kind
        public var message: String
    }

    /// The link beside the socket to the node's state directory: where `nodenet-cni DEL`
    /// records a deletion while the agent does not answer.
    public static func stateLink(socket: String) -> String {
        (socket as NSString).deletingLastPathComponent + "/state"
    }

    /// Serves the API for `agent` on `path` (its directory is created 0700, with the `state`
    /// link to `stateDirectory`).
    public static func serve(
        _ agent: NodeAgent, at path: String, stateDirectory: String, logger: Logger
    ) throws -> HTTPServer {
        let directory = (path as NSString).deletingLastPathComponent
        try Paths.createDirectory(directory, what: "API socket directory")
        chmod(directory, 0o700)
        let link = stateLink(socket: path)
        var info = stat()
        if lstat(link, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFLNK else {
                throw NodeNetError.state("\(link) exists and is not the link nodenet makes to its state directory")
            }
            unlink(link)
        }
        guard symlink(stateDirectory, link) == 0 else {
            throw NodeNetError.state("linking \(link) to \(stateDirectory): \(String(cString: strerror(errno)))")
        }
        return try HTTPServer(address: .unix(path), mode: 0o600) { request in
            guard let peer = request.peer, peer.uid == 0 else {
                logger.warning(
                    "refused a request from a non-root peer",
                    metadata: [
                        "pid": "\(request.peer?.pid ?? 0)", "uid": "\(request.peer?.uid ?? UInt32.max)",
                        "request": "\(request.method) \(request.path.prefix(200))",
                    ])
                return error(.init(kind: .invalid, message: "only root may use the nodenet endpoint API"), status: 403)
            }
            return handle(request, agent: agent)
        }
    }

    static func handle(_ request: HTTPServer.Request, agent: NodeAgent) -> HTTPServer.Response {
        let parts = request.path.split(separator: "?").first.map { $0.split(separator: "/").map(String.init) } ?? []
        guard parts.first == "v1", parts.count >= 2 else { return notFound(request) }
        switch (request.method, Array(parts.dropFirst())) {
        case ("GET", ["status"]):
            let free = agent.pods.freeAddresses
            let health: String
            switch agent.health {
            case .healthy: health = "healthy"
            case .starting: health = "starting"
            case .unhealthy(let why): health = "unhealthy: \(why)"
            }
            return json(Status(ready: agent.health == .healthy && free > 0, health: health, freeAddresses: free))
        case ("GET", ["endpoints"]):
            let (spec, endpoints, _) = agent.pods
            let listings =
                spec.map {
                    Listing(
                        source: "spec", pod: $0.id, ip: "\($0.ip)", device: NodeNetNames.endpointDevice(for: $0),
                        netns: $0.netns, containerID: nil, interface: nil)
                }
                + endpoints.map {
                    Listing(
                        source: "cni", pod: $0.pod.id, ip: "\($0.ip)", device: $0.hostDevice, netns: $0.netns,
                        containerID: $0.attachment.containerID, interface: $0.attachment.interface)
                }
            return json(listings)
        case ("POST", ["gc"]):
            guard let body = try? JSONDecoder().decode(CollectRequest.self, from: request.body) else {
                return error(
                    .init(kind: .invalid, message: "the body is not {\"keep\": [{\"containerID\", \"interface\"}]}"))
            }
            return answer(agent, .collect(keeping: Set(body.keep)))
        case (let method, let rest) where rest.count >= 3 && rest[0] == "endpoints":
            let attachment = Endpoint.Attachment(containerID: rest[1], interface: rest[2])
            do { try Endpoint.validateAttachment(attachment) } catch { return Self.error(error) }
            switch (method, rest.count) {
            case ("PUT", 3):
                guard let body = try? JSONDecoder().decode(CreateRequest.self, from: request.body) else {
                    return error(
                        .init(kind: .invalid, message: "the body is not {\"netns\", \"podNamespace\", \"podName\"}"))
                }
                let namespace = body.podNamespace ?? "cni"
                let name = body.podName ?? Endpoint.defaultPodName(containerID: attachment.containerID)
                return answer(agent, .add(attachment, netns: body.netns, podNamespace: namespace, podName: name))
            case ("GET", 3):
                guard let endpoint = agent.pods.endpoints.first(where: { $0.attachment == attachment }) else {
                    return error(.init(kind: .notFound, message: "no endpoint for \(attachment)"))
                }
                return json(endpoint)
            case ("GET", 4) where rest[3] == "check":
                return answer(agent, .check(attachment))
            case ("DELETE", 3):
                return answer(agent, .delete(attachment))
            default:
                return notFound(request)
            }
        default:
            return notFound(request)
        }
    }

    /// Runs the operation in the agent's loop and waits (this is a connection's own thread).
    static func answer(_ agent: NodeAgent, _ operation: EndpointOperation) -> HTTPServer.Response {
        let box = OutcomeBox()
        let done = DispatchSemaphore(value: 0)
        Task {
            box.outcome = await agent.perform(operation)
            done.signal()
        }
        done.wait()
        switch box.outcome! {
        case .added(let result): return json(result)
        case .deleted(let endpoint): return json(["deleted": endpoint != nil])
        case .checked(let differences):
            return json(["differences": differences], status: differences.isEmpty ? 200 : 409)
        case .collected(let removed): return json(["removed": removed.map(\.attachment)])
        case .failed(let e): return error(e)
        }
    }

    final class OutcomeBox: @unchecked Sendable {
        var outcome: EndpointOutcome?
    }

    static func notFound(_ request: HTTPServer.Request) -> HTTPServer.Response {
        error(.init(kind: .notFound, message: "no such call: \(request.method) \(request.path.prefix(200))"))
    }

    static func error(_ e: EndpointError) -> HTTPServer.Response {
        error(ErrorBody(kind: e.kind, message: e.message))
    }

    static func error(_ body: ErrorBody, status: Int? = nil) -> HTTPServer.Response {
        let code: Int
        switch body.kind {
        case .invalid: code = 400
        case .notFound: code = 404
        case .conflict: code = 409
        case .exhausted: code = 507
        case .failed: code = 500
        case .unavailable: code = 503
        }
        return json(body, status: status ?? code)
    }

    static func json<T: Encodable>(_ value: T, status: Int = 200) -> HTTPServer.Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return HTTPServer.Response(status: status, body: (try? encoder.encode(value)) ?? Data("{}".utf8))
    }
}
