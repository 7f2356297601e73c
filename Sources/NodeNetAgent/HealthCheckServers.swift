import Foundation
import Logging
import NodeNet
import Synchronization

/// The health check node ports of the node's services, as kube-proxy serves them: on each
/// port, `GET` answers 200 with the service's count of ready backends on this node, 503 when
/// there are none, so a load balancer sends a `Local` service's traffic only to nodes that
/// serve it. Servers follow the spec: a port appears, changes its answer or goes with it.
final class HealthCheckServers: Sendable {
    private let namespace: NamespaceReference
    private let answers = Mutex<[UInt16: ServiceHealthCheck]>([:])
    private let servers = Mutex<[UInt16: HTTPServer]>([:])

    init(namespace: NamespaceReference) { self.namespace = namespace }

    /// Serves exactly `wanted`'s ports from now on (new ones opened, gone ones closed, the
    /// others answering with the new counts). A port that cannot be opened is logged and tried
    /// again at the next sync.
    func sync(_ wanted: [UInt16: ServiceHealthCheck], log: Logger) {
        answers.withLock { $0 = wanted }
        let stale = servers.withLock { servers in
            let gone = servers.filter { wanted[$0.key] == nil }
            for port in gone.keys { servers[port] = nil }
            return Array(gone.values)
        }
        stale.forEach { $0.stop() }
        for port in wanted.keys.sorted() where servers.withLock({ $0[port] == nil }) {
            do {
                let server = try HTTPServer(healthCheckPort: port, in: namespace) { [weak self] request in
                    Self.answer(self?.answers.withLock { $0[port] }, request)
                }
                servers.withLock { $0[port] = server }
                log.info(
                    "serving a health check node port",
                    metadata: ["port": "\(port)", "service": "\(wanted[port]!.service)"])
            } catch {
                log.warning(
                    "cannot serve a health check node port", metadata: ["port": "\(port)", "error": "\(error)"])
            }
        }
    }

    func stop() {
        let all = servers.withLock { servers in
            defer { servers = [:] }
            return Array(servers.values)
        }
        all.forEach { $0.stop() }
    }

    /// kube-proxy's answer: `{"service":{"namespace","name"},"localEndpoints","serviceProxyHealthy"}`.
    static func answer(_ check: ServiceHealthCheck?, _ request: HTTPServer.Request) -> HTTPServer.Response {
        guard let check else { return HTTPServer.Response(status: 404, text: "no service here\n") }
        let parts = check.service.split(separator: "/", maxSplits: 1).map(String.init)
        let body: [String: Any] = [
            "service": ["namespace": parts.count == 2 ? parts[0] : "", "name": parts.last ?? check.service],
            "localEndpoints": check.localEndpoints, "serviceProxyHealthy": true,
        ]
        let data = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data()
        return HTTPServer.Response(status: check.localEndpoints > 0 ? 200 : 503, body: data)
    }
}
