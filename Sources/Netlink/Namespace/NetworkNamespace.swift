import CMnl

#if canImport(Glibc)
    import Glibc
#endif

/// Network namespaces: create, delete, list, open, and run code inside one.
///
/// Named namespaces follow iproute2's convention (a bind mount of the namespace on an empty
/// file under `/var/run/netns`, on a shared mount), so `ip netns` sees ours and we see its.
public enum NetworkNamespace {
    public static let directory = "/var/run/netns"

    private static let msBind: UInt = 4096
    private static let msRec: UInt = 16384
    private static let msShared: UInt = 1 << 20
    private static let mntDetach: Int32 = 2

    /// Creates `/var/run/netns/NAME` holding a new, empty network namespace
    /// (only `lo`, down). Throws `EEXIST` when the name is taken.
    public static func create(_ name: String) throws {
        let context = "creating network namespace \(name)"
        try validate(name, context: context)
        try prepareDirectory(context: context)
        let path = "\(directory)/\(name)"
        let fd = Glibc.open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0)
        guard fd >= 0 else { throw NetlinkError.syscall("creating \(path)", context: context) }
        close(fd)
        var failure: NetlinkError?
        try runOnFreshThread {
            guard unshare(nodenet_clone_newnet()) == 0 else {
                failure = .syscall("unshare(CLONE_NEWNET)", context: context)
                return
            }
            if mount("/proc/thread-self/ns/net", path, "none", msBind, nil) != 0 {
                failure = .syscall("bind-mounting the namespace on \(path)", context: context)
            }
        }
        if let failure {
            unlink(path)
            throw failure
        }
    }

    /// Unmounts and removes `/var/run/netns/NAME`. The namespace itself goes away when no
    /// process, socket or mount holds it any more. Throws `ENOENT` when there is no such name.
    public static func delete(_ name: String) throws {
        let context = "deleting network namespace \(name)"
        try validate(name, context: context)
        let path = "\(directory)/\(name)"
        guard access(path, F_OK) == 0 else {
            throw NetlinkError(.noSuchFileOrDirectory, kind: .system, context: context)
        }
        _ = umount2(path, mntDetach)
        guard unlink(path) == 0 else { throw NetlinkError.syscall("unlink(\(path))", context: context) }
    }

    /// Names under `/var/run/netns`, sorted.
    public static func list() -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    public static func exists(_ name: String) -> Bool { access("\(directory)/\(name)", F_OK) == 0 }

    /// Opens the namespace file (for `IFLA_NET_NS_FD` or `setns`); closed with the returned
    /// descriptor.
    public static func open(_ reference: NamespaceReference) throws -> FileDescriptor {
        FileDescriptor(adopting: try openRaw(reference))
    }

    /// The namespace file's descriptor; the caller closes it (for the thread code below). The
    /// path names a file somebody else may have made: it is opened without blocking (a FIFO
    /// would wait for a writer forever) and must be a network namespace (`NS_GET_NSTYPE`).
    private static func openRaw(_ reference: NamespaceReference) throws -> Int32 {
        let path = reference.path ?? "/proc/thread-self/ns/net"
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else { throw NetlinkError.syscall("open(\(path))", context: "opening \(reference)") }
        // NS_GET_NSTYPE (_IO(0xb7, 0x3)): the namespace type of an nsfs file; fails on anything else.
        let type = ioctl(fd, 0xb703)
        guard type == nodenet_clone_newnet() else {
            close(fd)
            throw NetlinkError(
                .invalidArgument, kind: .system, context: "opening \(reference)",
                detail: "\(path) is not a network namespace")
        }
        return fd
    }

    /// What identifies a network namespace (the nsfs file's device and inode): two references
    /// to one namespace have the same identity.
    public static func identity(_ reference: NamespaceReference) throws -> NamespaceIdentity {
        let fd = try openRaw(reference)
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw NetlinkError.syscall("fstat", context: "reading \(reference)") }
        return NamespaceIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    /// Runs `body` inside `reference` on a dedicated thread and returns its result. With
    /// `.current` it runs `body` directly. Only values and file descriptors should leave
    /// `body`: anything that resolves a namespace from the calling thread (new sockets,
    /// `if_nametoindex`, ioctls, BPF link creation by ifindex) must happen inside it.
    public static func run<T>(in reference: NamespaceReference, _ body: () throws -> T) throws -> T {
        guard reference.path != nil else { return try body() }
        let target = try openRaw(reference)
        defer { close(target) }
        var result: Result<T, any Error>?
        try withoutActuallyEscaping(body) { body in
            try runOnFreshThread {
                guard setns(target, nodenet_clone_newnet()) == 0 else {
                    result = .failure(NetlinkError.syscall("setns", context: "entering \(reference)"))
                    return
                }
                result = Result { try body() }
                // The thread exits right after; nothing else ever runs in this namespace on it.
            }
        }
        return try result!.get()
    }

    /// Moves the *calling thread* into `reference`, for good. Only for a thread that is about
    /// to `exec` another program or exit (like `ip netns exec`): every other use must go
    /// through `run(in:)`, which never leaves a thread in a foreign namespace.
    public static func enterForExec(_ reference: NamespaceReference) throws {
        let fd = try openRaw(reference)
        defer { close(fd) }
        guard setns(fd, nodenet_clone_newnet()) == 0 else {
            throw NetlinkError.syscall("setns", context: "entering \(reference)")
        }
    }

    /// Runs `body` inside each namespace in turn, on one dedicated thread (one switch per
    /// namespace instead of one thread each). A namespace that cannot be entered is
    /// reported to `failed` and skipped.
    public static func runEach(
        _ references: [NamespaceReference], _ body: (Int, NamespaceReference) -> Void,
        failed: (Int, NetlinkError) -> Void
    ) throws {
        try withoutActuallyEscaping(body) { body in
            try withoutActuallyEscaping(failed) { failed in
                try runOnFreshThread {
                    let home = Glibc.open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
                    defer { if home >= 0 { close(home) } }
                    for (i, reference) in references.enumerated() {
                        let target: Int32
                        if reference.path == nil {
                            target = home
                        } else {
                            do { target = try openRaw(reference) } catch let e as NetlinkError {
                                failed(i, e)
                                continue
                            } catch { continue }
                        }
                        defer { if target != home { close(target) } }
                        guard setns(target, nodenet_clone_newnet()) == 0 else {
                            failed(i, .syscall("setns", context: "entering \(reference)"))
                            continue
                        }
                        body(i, reference)
                    }
                }
            }
        }
    }

    private static func validate(_ name: String, context: String) throws {
        guard !name.isEmpty, name != ".", name != "..", !name.contains("/"), name.utf8.count < 256 else {
            throw NetlinkError(
                .invalidArgument, kind: .system, context: context, detail: "invalid namespace name '\(name)'")
        }
    }

    /// Makes `/var/run/netns` exist and be a shared mount point, as iproute2 does, so that
    /// namespace mounts propagate to other mount namespaces.
    private static func prepareDirectory(context: String) throws {
        for dir in ["/var/run", directory] where access(dir, F_OK) != 0 {
            guard mkdir(dir, 0o755) == 0 || errno == EEXIST else {
                throw NetlinkError.syscall("mkdir(\(dir))", context: context)
            }
        }
        if mount("", directory, "none", msShared | msRec, nil) == 0 { return }
        guard errno == EINVAL else {
            throw NetlinkError.syscall("making \(directory) a shared mount", context: context)
        }
        guard mount(directory, directory, "none", msBind | msRec, nil) == 0,
            mount("", directory, "none", msShared | msRec, nil) == 0
        else { throw NetlinkError.syscall("bind-mounting \(directory) on itself", context: context) }
    }
}

/// A network namespace's identity (its nsfs device and inode).
public struct NamespaceIdentity: Sendable, Hashable {
    public var device: UInt64
    public var inode: UInt64
}
