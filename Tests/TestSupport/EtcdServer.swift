import Foundation

/// A real etcd (Debian's etcd-server) for one test: one or three members, listening only on
/// unix sockets in a fresh directory (nothing on the machine's ports), data in that directory,
/// everything removed by `stop()`.
public final class EtcdServer: @unchecked Sendable {
    public let directory: String
    public let members: Int
    /// Clients must speak TLS with a certificate signed by `caFile` (mutual TLS, as real
    /// deployments run etcd): `unixs://` URLs.
    public let tls: Bool
    private var processes: [Int: Process] = [:]
    private let lock = NSLock()

    public static let binary = "/usr/bin/etcd"
    public static var isInstalled: Bool { FileManager.default.isExecutableFile(atPath: binary) }
    public static let skipReason =
        "etcd test skipped: /usr/bin/etcd is missing (scripts/install-deps.sh installs etcd-server)"

    /// Client URL of member `i` (`unix:///…/client0:2379`, `unixs://` with TLS).
    public func clientURL(_ i: Int) -> String { "\(tls ? "unixs" : "unix")://\(directory)/client\(i):2379" }
    /// The CA that signed etcd's and the client's certificates, and the client's pair (TLS).
    public var caFile: String { "\(directory)/ca.pem" }
    public var certFile: String { "\(directory)/client.pem" }
    public var keyFile: String { "\(directory)/client.key" }
    public var clientURLs: [String] { (0..<members).map(clientURL) }

    public init(members: Int = 1, tls: Bool = false) throws {
        self.members = members
        self.tls = tls
        directory = "/tmp/" + TestNames.unique("etcd")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        chmod(directory, 0o700)
        if tls { try makeCertificates() }
        for i in 0..<members { try start(i) }
        try waitReady()
    }

    deinit { stop() }

    /// Starts member `i` (again, after `kill(_:)`: same data, same cluster).
    public func start(_ i: Int) throws {
        let cluster = (0..<members).map { "m\($0)=unix://peer\($0):2380" }.joined(separator: ",")
        let client = "\(tls ? "unixs" : "unix")://client\(i):2379"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.arguments = [
            "--name", "m\(i)", "--data-dir", "\(directory)/data\(i)",
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", "unix://peer\(i):2380", "--initial-advertise-peer-urls", "unix://peer\(i):2380",
            "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", directory,
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ]
        if tls {
            process.arguments! += [
                "--cert-file", "\(directory)/server.pem", "--key-file", "\(directory)/server.key",
                "--trusted-ca-file", caFile, "--client-cert-auth",
            ]
        }
        let log =
            FileHandle(forWritingAtPath: "\(directory)/m\(i).log")
            ?? {
                FileManager.default.createFile(atPath: "\(directory)/m\(i).log", contents: nil)
                return FileHandle(forWritingAtPath: "\(directory)/m\(i).log")!
            }()
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        lock.withLock {
            processes[i] = process
            startCounts[i, default: 0] += 1
        }
    }

    /// Kills member `i` (SIGKILL); its data stays for `start(i)`.
    public func kill(_ i: Int) {
        guard let process = lock.withLock({ processes.removeValue(forKey: i) }) else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        // The socket files stay behind a killed etcd; the next start binds them again.
        unlink("\(directory)/client\(i):2379")
        unlink("\(directory)/peer\(i):2380")
    }

    public func stop() {
        for i in 0..<members { kill(i) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Waits (at most 20 s) until every running member answers a read through the gateway.
    public func waitReady() throws {
        let deadline = Date().addingTimeInterval(20)
        for i in lock.withLock({ processes.keys.sorted() }) {
            while true {
                if tls {
                    // No plain request gets through: the member says when it serves.
                    let log = (try? String(contentsOfFile: "\(directory)/m\(i).log", encoding: .utf8)) ?? ""
                    if log.components(separatedBy: "ready to serve client requests").count > starts(i) { break }
                    guard Date() < deadline else {
                        throw EtcdServerError("etcd member m\(i) did not start:\n\(log.suffix(2000))")
                    }
                    Thread.sleep(forTimeInterval: 0.05)
                    continue
                }
                let answer = unixHTTP(
                    "\(directory)/client\(i):2379", "POST", "/v3/kv/range", body: "{\"key\":\"AA==\"}", timeout: 2)
                if answer.body.contains("\"revision\"") { break }
                guard Date() < deadline else {
                    let log = (try? String(contentsOfFile: "\(directory)/m\(i).log", encoding: .utf8)) ?? ""
                    throw EtcdServerError(
                        "etcd member m\(i) did not answer in 20 s; its log ends:\n\(log.suffix(2000))")
                }
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
    }

    /// How often member `i` was started (its log says "ready" once per start).
    private func starts(_ i: Int) -> Int { lock.withLock { startCounts[i, default: 0] } }
    private var startCounts: [Int: Int] = [:]

    /// A CA, a server certificate for etcd and a client certificate, all signed by the CA.
    private func makeCertificates() throws {
        func openssl(_ arguments: [String]) throws {
            let result = try runTool(["openssl"] + arguments)
            guard result.status == 0 else {
                throw EtcdServerError("openssl \(arguments.first ?? ""): \(result.output)")
            }
        }
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try openssl(
            ["req", "-x509"] + ec + [
                "-keyout", "\(directory)/ca.key", "-out", caFile, "-days", "2", "-subj", "/CN=nodenet test CA",
            ])
        for (name, usage) in [("server", "serverAuth,clientAuth"), ("client", "clientAuth")] {
            let ext = "\(directory)/\(name).ext"
            try "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=\(usage)\n".write(
                toFile: ext, atomically: true, encoding: .utf8)
            try openssl(
                ["req"] + ec + [
                    "-keyout", "\(directory)/\(name).key", "-out", "\(directory)/\(name).csr", "-subj", "/CN=localhost",
                ])
            try openssl([
                "x509", "-req", "-in", "\(directory)/\(name).csr", "-CA", caFile, "-CAkey", "\(directory)/ca.key",
                "-CAcreateserial", "-out", "\(directory)/\(name).pem", "-days", "2", "-extfile", ext,
            ])
        }
    }

    public var log: String {
        (0..<members).map { (try? String(contentsOfFile: "\(directory)/m\($0).log", encoding: .utf8)) ?? "" }
            .joined(separator: "\n")
    }
}

public struct EtcdServerError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
