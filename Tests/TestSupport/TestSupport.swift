// Helpers shared by the test targets: privilege checks, throwaway namespaces, tools that
// observe the kernel. Not product code.
import Foundation
import Netlink

/// Whether integration tests can run: decided from effective capabilities, not the uid.
public enum Privileges {
    public static let capNetAdmin = 12
    public static let capSysAdmin = 21
    public static let capBPF = 39

    public static let effective: UInt64 = {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
            let value = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16)
        else { return 0 }
        return value
    }()

    public static func has(_ bit: Int) -> Bool { effective & (1 << UInt64(bit)) != 0 }

    public static let canManageNamespaces = has(capNetAdmin) && has(capSysAdmin)
    public static let canLoadBPF = canManageNamespaces && (has(capBPF) || has(capSysAdmin))

    /// `NODENET_REQUIRE_ROOT=1` (CI sets it): a suite that needs privileges runs without them
    /// and fails, instead of being skipped (a skipped suite looks like a passed one).
    public static let required = ProcessInfo.processInfo.environment["NODENET_REQUIRE_ROOT"] == "1"
    /// Whether suites that create namespaces run (skipped, with `skipReason`, otherwise).
    public static let runsNamespaceTests = canManageNamespaces || required
    /// Whether suites that load BPF programs run.
    public static let runsBPFTests = canLoadBPF || required

    public static let skipReason =
        "integration test skipped: needs CAP_NET_ADMIN and CAP_SYS_ADMIN (run as root) to create network namespaces"
}

/// Unique, per-process namespace names, so parallel test runs never collide.
public enum TestNames {
    nonisolated(unsafe) private static var counter = 0
    private static let lock = NSLock()
    public static func unique(_ label: String) -> String {
        lock.lock()
        defer { lock.unlock() }
        counter += 1
        return "nnt\(getpid())-\(counter)-\(label)"
    }
}

/// Creates namespaces for one test and removes them when the body ends, even when it throws.
public func withNamespaces<T>(_ labels: [String], _ body: ([String]) throws -> T) throws -> T {
    let created = try createNamespaces(labels)
    defer { removeNamespaces(created) }
    return try body(created)
}

public func withNamespaces<T>(_ labels: [String], _ body: ([String]) async throws -> T) async throws -> T {
    let created = try createNamespaces(labels)
    defer { removeNamespaces(created) }
    return try await body(created)
}

/// One uniquely named namespace per label; none left behind when one cannot be made.
private func createNamespaces(_ labels: [String]) throws -> [String] {
    var created: [String] = []
    do {
        for label in labels {
            let name = TestNames.unique(label)
            try NetworkNamespace.create(name)
            created.append(name)
        }
    } catch {
        removeNamespaces(created)
        throw error
    }
    return created
}

private func removeNamespaces(_ names: [String]) { for name in names { try? NetworkNamespace.delete(name) } }

/// Runs a command-line tool to *observe* the kernel (tests only; product code never does).
@discardableResult
public func runTool(_ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Polls `condition` every 5 ms for at most `seconds` (for effects a loaded machine may
/// delay, such as counters updated in softirq context); returns whether it held.
@discardableResult
public func poll(seconds: Double = 2, until condition: () throws -> Bool) rethrows -> Bool {
    let end = Date().addingTimeInterval(seconds)
    while try !condition() {
        guard Date() < end else { return false }
        usleep(5_000)
    }
    return true
}

/// One HTTP/1.0 request over a unix socket: the status line and the body ("" when nothing
/// answers within `timeout` seconds).
public func unixHTTP(
    _ socketPath: String, _ method: String = "GET", _ resource: String, body: String = "", timeout: Int = 5
) -> (status: String, body: String) {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var a = sockaddr_un()
    a.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &a.sun_path) { raw in
        for (i, b) in socketPath.utf8.prefix(107).enumerated() { raw[i] = b }
    }
    let rc = withUnsafePointer(to: &a) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
    }
    guard rc == 0 else { return ("", "") }
    let request =
        "\(method) \(resource) HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
    _ = request.withCString { write(fd, $0, strlen($0)) }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n <= 0 { break }
        response += buffer[0..<n]
    }
    let text = String(decoding: response, as: UTF8.self)
    let parts = text.components(separatedBy: "\r\n\r\n")
    return (parts.first?.components(separatedBy: "\r\n").first ?? "", parts.dropFirst().joined(separator: "\r\n\r\n"))
}
