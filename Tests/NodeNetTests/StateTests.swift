import Foundation
import TestSupport
import Testing

@testable import NodeNet

#if canImport(Glibc)
    import Glibc
#endif

/// State files, spec files and the node lock: no root needed.
@Suite struct StateTests {
    static func scratch() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(TestNames.unique("state test")).path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// One clear line for each kind of file that is not a spec, and exit-2 material (SpecError).
    @Test func specFilesThatAreNotSpecsGetOneClearSentence() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func problem(_ path: String) -> String {
            do {
                _ = try NodeSpec.load(path: path)
                return "loaded"
            } catch let error as SpecError {
                return error.problems.map(\.message).joined(separator: " | ")
            } catch {
                return "not a SpecError: \(error)"
            }
        }
        #expect(problem(dir) == "\(dir) is a directory, not a file")
        #expect(problem(dir + "/missing.json") == "\(dir)/missing.json does not exist")
        FileManager.default.createFile(atPath: dir + "/empty.json", contents: Data())
        #expect(problem(dir + "/empty.json") == "\(dir)/empty.json is empty")
        FileManager.default.createFile(atPath: dir + "/blank.json", contents: Data("  \n\t\n".utf8))
        #expect(problem(dir + "/blank.json") == "\(dir)/blank.json is empty")
        FileManager.default.createFile(atPath: dir + "/garbage.json", contents: Data([0x7B, 0x0A, 0x00, 0xFF, 0x13]))
        #expect(problem(dir + "/garbage.json") == "\(dir)/garbage.json is not text (binary data at byte 2)")
        FileManager.default.createFile(atPath: dir + "/latin1.json", contents: Data([0x7B, 0x22, 0xE9, 0x22, 0x7D]))
        #expect(problem(dir + "/latin1.json") == "\(dir)/latin1.json is not text (binary data at byte 2)")
        let big = dir + "/big.json"
        FileManager.default.createFile(atPath: big, contents: Data(repeating: 0x20, count: 65 << 20))
        #expect(problem(big) == "\(big) is larger than 64 MiB")
        FileManager.default.createFile(
            atPath: dir + "/cut.json", contents: Data(#"{"apiVersion": "nodenet/v1", "node": {"#.utf8))
        #expect(problem(dir + "/cut.json") == "not valid JSON: it ends in the middle of a value")
        FileManager.default.createFile(
            atPath: dir + "/typo.json", contents: Data("{\n  \"apiVersion\": nodenet\n}".utf8))
        #expect(problem(dir + "/typo.json").hasPrefix("not valid JSON: unexpected text at line 2, column "))
        let messages = [dir, dir + "/empty.json", dir + "/garbage.json", big, dir + "/cut.json"].map(problem)
        for message in messages {
            #expect(
                !message.contains("DecodingError") && !message.contains("Debug description")
                    && !message.contains("ioctl"))
        }
        // A path with spaces is just a path (the scratch directory's name has one).
        let good = dir + "/a spec with spaces.json"
        let json =
            #"{"apiVersion":"nodenet/v1","node":{"name":"w","device":"eth0","address":"172.18.0.2","podCIDR":"10.0.2.0/24"}}"#
        FileManager.default.createFile(atPath: good, contents: Data(json.utf8))
        #expect(try NodeSpec.load(path: good).node.name == "w")
    }

    @Test func stateFilesAreReplacedWholeAndUntrustedOnesMovedAside() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/ledger.json"
        try StateFile.writeAtomically(Data("first".utf8), to: path, what: "the test file")
        try StateFile.writeAtomically(Data("second".utf8), to: path, what: "the test file")
        #expect(try StateFile.readText(path, limit: 100) == Data("second".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["ledger.json"], "no temporary file left")
        #expect(throws: NodeNetError.self) {
            try StateFile.writeAtomically(Data("x".utf8), to: dir + "/no such dir/f", what: "the test file")
        }
        let aside = try #require(StateFile.moveAside(path))
        #expect(aside.hasPrefix(path + ".corrupt-") && FileManager.default.fileExists(atPath: aside))
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    /// Ledgers that are damaged or planted are never acted on: each is untrusted, with why.
    @Test func aLedgerIsCheckedBeforeItIsTrusted() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func reading(_ ledger: Ledger) throws -> Ledger.Reading {
            try ledger.save(to: dir)
            return Ledger.read(from: dir, node: "worker2", moveAside: false)
        }
        var good = Ledger(node: "worker2")
        good.endpoints = [
            Ledger.Endpoint(pod: "default/net", hostDevice: "lxc0123456789ab", netns: "pod-net", ip: "10.0.2.32")
        ]
        good.sysctlOriginals = ["net.ipv4.ip_forward": "0"]
        good.bpffsDirectory = "/sys/fs/bpf/nodenet/worker2"
        guard case .valid = try reading(good) else {
            Issue.record("a ledger nodenet wrote is trusted")
            return
        }
        func why(_ ledger: Ledger) throws -> String {
            if case .untrusted(let reason, _) = try reading(ledger) { return reason }
            return "trusted"
        }
        var uplink = good
        uplink.endpoints[0].hostDevice = "eth0"
        #expect(try why(uplink).contains(#"endpoint device "eth0""#))
        var corePattern = good
        corePattern.sysctlOriginals["kernel/core_pattern"] = "|/tmp/x"
        #expect(try why(corePattern).contains(#"sysctl "kernel/core_pattern""#))
        var escape = good
        escape.sysctlOriginals = ["net.ipv4.ip_forward": "1; reboot"]
        #expect(try why(escape).contains("value"))
        var outside = good
        outside.formerBPFFSDirectories = ["/etc"]
        #expect(try why(outside).contains(#"bpffs directory "/etc""#))
        var other = good
        other.node = "worker"
        #expect(try why(other).contains(#"node "worker""#))
        FileManager.default.createFile(atPath: Ledger.path(in: dir), contents: Data(#"{"node": "worker2""#.utf8))
        if case .untrusted(let reason, let movedTo) = Ledger.read(from: dir, node: "worker2", moveAside: true) {
            #expect(
                reason.contains("is not a ledger: not valid JSON") && !reason.contains("DecodingError"), "\(reason)")
            #expect(movedTo?.hasPrefix(Ledger.path(in: dir) + ".corrupt-") == true)
            #expect(!FileManager.default.fileExists(atPath: Ledger.path(in: dir)))
        } else {
            Issue.record("a truncated ledger is untrusted")
        }
        try FileManager.default.createDirectory(atPath: Ledger.path(in: dir), withIntermediateDirectories: false)
        if case .untrusted(let reason, _) = Ledger.read(from: dir, node: "worker2", moveAside: false) {
            #expect(reason.hasSuffix("ledger.json is a directory, not a file"), "\(reason)")
        } else {
            Issue.record("a directory is no ledger")
        }
        #expect(Ledger.read(from: dir + "/none", node: "worker2", moveAside: true) == .none)
    }

    @Test func oneWriterPerNode() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(NodeLock.holder(stateDirectory: dir) == nil)
        var lock: NodeLock? = try NodeLock.acquire(stateDirectory: dir, node: "worker2", command: "run")
        let holder = try #require(NodeLock.holder(stateDirectory: dir))
        #expect(holder.pid == getpid() && holder.command == "run")
        let error = #expect(throws: NodeNetError.self) {
            try NodeLock.acquire(stateDirectory: dir, node: "worker2", command: "apply")
        }
        #expect("\(error!)".hasPrefix("another nodenetd (pid \(getpid()), nodenetd run, since 20"), "\(error!)")
        #expect("\(error!)".hasSuffix(") owns node worker2"))
        withExtendedLifetime(lock) {}
        lock = nil
        #expect(NodeLock.holder(stateDirectory: dir) == nil, "the lock goes with its holder")
        _ = try NodeLock.acquire(stateDirectory: dir, node: "worker2", command: "apply")
    }

    /// A holder killed with SIGKILL leaves nothing to clean up: the next writer just takes the lock.
    @Test func aKilledHolderLeavesNothingBehind() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = NodeLock.path(stateDirectory: dir)
        // Another process takes the same kind of lock (an open-file-description lock) and waits.
        let script = """
            import fcntl, json, os, struct, sys, time
            fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhxxxxqqixxxx", fcntl.F_WRLCK, 0, 0, 0, 0))
            os.write(fd, json.dumps({"pid": os.getpid(), "command": "run", "since": "then"}).encode())
            print("locked", flush=True)
            time.sleep(30)
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, path]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let line = String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
        try #require(line.hasPrefix("locked"), "the helper took the lock: \(line)")
        let error = #expect(throws: NodeNetError.self) {
            try NodeLock.acquire(stateDirectory: dir, node: "worker2", command: "run")
        }
        #expect("\(error!)".contains("pid \(process.processIdentifier), nodenetd run"), "\(error!)")
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        let lock = try NodeLock.acquire(stateDirectory: dir, node: "worker2", command: "run")
        #expect(NodeLock.holder(stateDirectory: dir)?.pid == getpid())
        withExtendedLifetime(lock) {}
    }

    /// Before: two pods whose names hash alike shared one lxc (found by a birthday search over
    /// the 48-bit device names); the second took over the first's device, route and entry.
    @Test func twoPodsWithOneDeviceNameAreRefused() throws {
        let a = PodSpec(name: "web-don6v92wi9", netns: "/proc/self/ns/net", ip: "10.0.2.10")
        let b = PodSpec(name: "web-qzyqulfu23", netns: "/proc/thread-self/ns/net", ip: "10.0.2.11")
        #expect(NodeNetNames.endpointDevice(for: a) == NodeNetNames.endpointDevice(for: b), "the names collide")
        let spec = NodeSpec(
            node: LocalNode(name: "w", device: "eth0", address: "172.18.0.2", podCIDR: "10.0.2.0/24"), pods: [a, b])
        let error = #expect(throws: SpecError.self) { try spec.validate(namespaceExists: { _ in true }) }
        #expect(
            error?.problems.map(\.description) == [
                "pods[1].name: default/web-qzyqulfu23 and default/web-don6v92wi9 would share the endpoint device lxc119536240706; rename one of them"
            ])
    }
}
