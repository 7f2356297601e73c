import Foundation

#if canImport(Glibc)
    import NodeNet
#endif

/// `/healthz` and `/metrics` over HTTP/1.1, on a loopback TCP address (`127.0.0.1:9962`) or
/// a unix socket (`unix:/run/nodenet/health.sock`). Off unless the operator asks for it.
public final class StatusServer: Sendable {
    public typealias Address = HTTPServer.Address
    private let server: HTTPServer

    /// `handler(path)` returns (status, content type, body) for a GET.
    public init(address: Address, handler: @escaping @Sendable (String) -> (Int, String, String)) throws {
        server = try HTTPServer(address: address, mode: 0o666) { request in
            guard request.method == "GET" else { return HTTPServer.Response(status: 405, text: "only GET\n") }
            let (status, type, body) = handler(request.path)
            return HTTPServer.Response(status: status, contentType: type, body: Data(body.utf8))
        }
    }

    public func stop() { server.stop() }
}
