import BPF
import Foundation
import Netlink
import NodeNet

/// The lab's processes: per-node pod servers, `exec`, the probes and agents it runs. The lab
/// is driven by the `nodenetd` binary: a long-lived lab process is that binary started again
/// with a lab subcommand (`lab serve`, `lab exec`, `lab probe`, `run`), so it outlives the
/// command that made it. (Lab code may start processes; the library and the daemon never do.)
public enum LabRuntime {
    /// Builds `c` (and its control plane); on any failure or an interrupt everything is
    /// removed again (an interrupt is thrown as `LabError.interrupted`).
    public static func up(_ c: LabCluster, interrupt: LabInterrupt) throws {
        do {
            try Lab(cluster: c).up(cancelled: { interrupt.fired })
            for node in c.nodes where !node.pods.isEmpty {
                if interrupt.fired { throw CancellationError() }
                try startServer(c, node: node.name)
            }
            try waitForServers(c, interrupt: interrupt)
            if c.controlPlane == .etcd { try LabControlPlane.start(c, interrupt: interrupt) }
        } catch {
            Lab.down(name: c.name)
            if error is CancellationError || interrupt.fired { throw LabError.interrupted(lab: c.name) }
            throw error
        }
    }

    /// The `nodenetd` binary this process runs (the lab's processes are this binary again).
    public static var executable: String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        return n > 0
            ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    }

    /// Starts `nodenetd lab serve --node NODE` in its own session, logging to the node's
    /// run directory, and puts it into the node's cgroup.
    public static func startServer(_ c: LabCluster, node: String) throws {
        try spawn(
            [executable, "lab", "serve", "--name", c.name, "--node", node], log: "\(c.runDirectory)/\(node)/serve.log",
            cgroup: c.cgroupPath(ofNode: node))
    }

    /// Starts a long-lived lab process in its own session, logging to `log`, in `cgroup` (where
    /// `lab down` finds it); returns its pid.
    @discardableResult
    public static func spawn(_ args: [String], log: String, cgroup: String?) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else may leak into a long-lived process (an inherited pipe would keep
        // whoever reads the command's output waiting forever).
        for fd in openDescriptors() where fd > 2 { posix_spawn_file_actions_addclose(&actions, fd) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, 0x80)  // POSIX_SPAWN_SETSID (glibc), not exported to Swift
        let argv = args.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, args[0], &actions, &attributes, argv, environ)
        guard rc == 0 else {
            throw NodeNetError.state(
                "starting \(args.dropFirst().prefix(3).joined(separator: " ")): \(String(cString: strerror(rc)))")
        }
        if let cgroup { try CgroupV2.add(pid: pid, to: cgroup) }
        return pid
    }

    /// This process's open file descriptors.
    static func openDescriptors() -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).compactMap { Int32($0) }
    }

    /// Waits (at most 10 s) until every pod answers HTTP on its own address.
    static func waitForServers(_ c: LabCluster, interrupt: LabInterrupt) throws {
        let deadline = Date().addingTimeInterval(10)
        for node in c.nodes {
            for pod in node.pods {
                while (try? LabProbe.httpGet(from: .named(c.namespace(ofPod: pod.name)), to: pod.ip, timeout: 1)) == nil
                {
                    if interrupt.fired { throw CancellationError() }
                    guard Date() < deadline else {
                        throw NodeNetError.state(
                            "pod \(pod.name) does not serve HTTP (see \(c.runDirectory)/\(node.name)/serve.log)")
                    }
                    usleep(20_000)
                }
            }
        }
    }

    /// The pod servers of one node, until SIGTERM/SIGINT.
    public static func serve(_ c: LabCluster, node name: String, only pod: LabCluster.Pod? = nil) throws {
        guard let node = c.nodes.first(where: { $0.name == name }) else {
            throw LabError.invalid("no node \(name) in lab \(c.name)")
        }
        if let cgroup = c.cgroupPath(ofNode: name) { try CgroupV2.add(pid: getpid(), to: cgroup) }
        let interrupt = LabInterrupt()
        let pods = pod.map { [$0] } ?? node.pods
        let servers = try pods.map { pod in
            try PodServer(name: pod.name, ip: pod.ip, namespace: .named(c.namespace(ofPod: pod.name))) { line in
                FileHandle.standardOutput.write(Data("\(pod.name) \(line)\n".utf8))
            }
        }
        servers.forEach { $0.start() }
        FileHandle.standardOutput.write(
            Data("serving \(pods.map(\.name).joined(separator: ", ")) (pid \(getpid()))\n".utf8))
        while !interrupt.fired { usleep(100_000) }
        servers.forEach { $0.stop() }
    }

    /// Where a node, pod or `external` lives: its namespace and cgroup.
    public static func place(of target: String, in c: LabCluster) -> (String, String?)? {
        if target == "external" { return (c.externalNamespace, nil) }
        if c.controlPlane == .etcd, let i = ["etcd0", "etcd1", "etcd2"].firstIndex(of: target) {
            return (c.etcdNamespace(i), c.etcdCgroup)
        }
        if c.nodes.contains(where: { $0.name == target }) {
            return (c.namespace(ofNode: target), c.cgroupPath(ofNode: target))
        }
        if let node = c.node(ofPod: target) { return (c.namespace(ofPod: target), c.cgroupPath(ofNode: node.name)) }
        // A pod `lab pod add` made.
        for node in c.nodes
        where FileManager.default.fileExists(atPath: LabPods.pidFile(c, node: node.name, pod: target)) {
            return (c.namespace(ofPod: target), c.cgroupPath(ofNode: node.name))
        }
        return nil
    }

    /// Replaces this process with `command`, inside `namespace` and `cgroup`.
    public static func exec(_ command: [String], namespace: String, cgroup: String?) throws -> Never {
        if let cgroup { try CgroupV2.add(pid: getpid(), to: cgroup) }
        try NetworkNamespace.enterForExec(.named(namespace))
        let argv = command.map { strdup($0) } + [nil]
        execvp(command[0], argv)
        FileHandle.standardError.write(
            Data("nodenetd lab exec: cannot run \(command[0]): \(String(cString: strerror(errno)))\n".utf8))
        Foundation.exit(127)
    }

    /// Runs `nodenetd lab exec TARGET -- ARGS` and returns its status and output.
    public static func capture(
        lab: String, _ target: String, _ args: [String]
    ) throws -> (status: Int32, output: String) {
        let (status, output) = try runSelf(["lab", "exec", "--name", lab, target, "--"] + args, errors: true)
        return (status, String(decoding: output, as: UTF8.self))
    }

    /// Runs `nodenetd lab probe` (a child in the target's namespace and cgroup) and decodes it.
    public static func probe(
        lab: String, from target: String, to destination: String, count: Int = 1
    ) throws -> LabProbeReport {
        let (status, output) = try runSelf(
            ["lab", "probe", "--name", lab, target, destination, "--count", "\(count)", "--timeout", "2", "--json"],
            errors: false)
        guard status == 0 else {
            throw NodeNetError.state(
                "lab probe \(target) \(destination) failed: \(String(decoding: output, as: UTF8.self))")
        }
        return try JSONDecoder().decode(LabProbeReport.self, from: output)
    }

    /// Runs this executable with `arguments` and waits: its status and standard output (and
    /// standard error with `errors`).
    private static func runSelf(_ arguments: [String], errors: Bool) throws -> (Int32, Data) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = errors ? pipe : FileHandle.nullDevice
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, data)
    }
}
