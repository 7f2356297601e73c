import Foundation

/// A real etcd (Debian's etcd-server) for one test: one or three members, listening only on
/// unix sockets in a fresh directory (nothing on the machine's ports), data in that directory,
/// everything removed by `stop()`.
public final class EtcdServer: @unchecked Sendable {
    public let directory: String
    public let members: Int
    private var processes: [Int: Process] = [:]
    private let lock = NSLock()

    public static let binary = "/usr/bin/etcd"
    public static var isInstalled: Bool { FileManager.default.isExecutableFile(atPath: binary) }
    public static let skipReason =
        "etcd test skipped: /usr/bin/etcd is missing (scripts/install-deps.sh installs etcd-server)"

    /// Client URL of member `i` (`unix:///…/client0:2379`).
    public func clientURL(_ i: Int) -> String { "unix://\(directory)/client\(i):2379" }
    public var clientURLs: [String] { (0..<members).map(clientURL) }

    public init(members: Int = 1) throws {
        self.members = members
        directory = "/tmp/" + TestNames.unique("etcd")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        chmod(directory, 0o700)
        for i in 0..<members { try start(i) }
        try waitReady()
    }

    deinit { stop() }

    /// Starts member `i` (again, after `kill(_:)`: same data, same cluster).
    public func start(_ i: Int) throws {
        let cluster = (0..<members).map { "m\($0)=unix://peer\($0):2380" }.joined(separator: ",")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.arguments = [
            "--name", "m\(i)", "--data-dir", "\(directory)/data\(i)",
            "--listen-client-urls", "unix://client\(i):2379", "--advertise-client-urls", "unix://client\(i):2379",
            "--listen-peer-urls", "unix://peer\(i):2380", "--initial-advertise-peer-urls", "unix://peer\(i):2380",
            "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", directory,
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ]
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
        lock.withLock { processes[i] = process }
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

    public var log: String {
        (0..<members).map { (try? String(contentsOfFile: "\(directory)/m\($0).log", encoding: .utf8)) ?? "" }
            .joined(separator: "\n")
    }
}

public struct EtcdServerError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
