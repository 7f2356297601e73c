import CBPF

#if canImport(Glibc)
    import Glibc
#endif

/// A BPF link holding a program on a cgroup (v2) hook, pinned so that it outlives the
/// process. Unpinning the last reference detaches the program.
public enum CgroupLink {
    /// The cgroup hooks nodenet uses for socket-level load balancing.
    public enum Hook: String, Sendable, CaseIterable {
        case connect4, sendmsg4, recvmsg4, getpeername4
        /// The same for IPv6 sockets (nodenet handles their v4-mapped addresses).
        case connect6, sendmsg6, recvmsg6, getpeername6
        /// A socket's release (its state goes with it).
        case release

        var attachType: bpf_attach_type {
            switch self {
            case .connect4: return BPF_CGROUP_INET4_CONNECT
            case .sendmsg4: return BPF_CGROUP_UDP4_SENDMSG
            case .recvmsg4: return BPF_CGROUP_UDP4_RECVMSG
            case .getpeername4: return BPF_CGROUP_INET4_GETPEERNAME
            case .connect6: return BPF_CGROUP_INET6_CONNECT
            case .sendmsg6: return BPF_CGROUP_UDP6_SENDMSG
            case .recvmsg6: return BPF_CGROUP_UDP6_RECVMSG
            case .getpeername6: return BPF_CGROUP_INET6_GETPEERNAME
            case .release: return BPF_CGROUP_INET_SOCK_RELEASE
            }
        }

        /// Whether the hook can refuse a call (connect, sendmsg): its program has a build for
        /// kernels that cannot choose the error (before 5.18: EPERM instead of ECONNREFUSED).
        public var refuses: Bool { self == .connect4 || self == .sendmsg4 || self == .connect6 || self == .sendmsg6 }
    }

    /// Attaches `programFD` to `hook` of the cgroup directory `cgroup` and pins the link at `path`.
    public static func attach(programFD: Int32, cgroup: String, hook: Hook, pinAt path: String) throws {
        let dir = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dir >= 0 else { throw BPFError(errno, "opening cgroup \(cgroup)") }
        defer { close(dir) }
        try BPFLink.create(
            programFD: programFD, target: dir, attachType: hook.attachType, pinAt: path,
            what: "\(hook.rawValue) to cgroup \(cgroup)")
    }

    /// Whether the kernel lets a cgroup program choose the error it returns (bpf_set_retval,
    /// 5.18 and later).
    public static let canSetReturnValue = KernelRelease.isAtLeast(5, 18)

    /// The cgroup's id as the kernel names it in link info (its inode number), or nil when
    /// it does not exist.
    public static func id(of cgroup: String) -> UInt64? {
        var st = stat()
        guard stat(cgroup, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { return nil }
        return UInt64(st.st_ino)
    }
}
