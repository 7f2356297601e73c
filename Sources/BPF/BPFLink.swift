import CBPF

#if canImport(Glibc)
    import Glibc
#endif

/// What every pinned BPF link shares, whatever it attaches to (tcx, cgroup): created and
/// pinned in one step (a link dies with its last reference), and its program swapped in
/// place (atomic for packets and calls in flight).
public enum BPFLink {
    /// Creates a link of `programFD` on `target` (an ifindex, a cgroup fd) and pins it at
    /// `path`; `what` names the attachment in errors.
    static func create(
        programFD: Int32, target: Int32, attachType: bpf_attach_type, pinAt path: String, what: String
    ) throws {
        let link = bpf_link_create(programFD, target, attachType, nil)
        guard link >= 0 else { throw BPFError.libbpf(link, "attaching \(what)") }
        defer { close(link) }
        let rc = bpf_obj_pin(link, path)
        guard rc == 0 else { throw BPFError.libbpf(rc, "pinning \(what) at \(path)") }
    }

    /// Swaps the program of the link pinned at `path`.
    public static func replaceProgram(pinnedAt path: String, with programFD: Int32) throws {
        let link = bpf_obj_get(path)
        guard link >= 0 else { throw BPFError(errno, "opening the link \(path)") }
        defer { close(link) }
        let rc = bpf_link_update(link, programFD, nil)
        guard rc == 0 else { throw BPFError.libbpf(rc, "replacing the program of \(path)") }
    }

    /// What the kernel says about the link pinned at `path` (bpf_link_info).
    public static func info(pinnedAt path: String) throws -> BPFLinkInfo {
        let link = bpf_obj_get(path)
        guard link >= 0 else { throw BPFError(errno, "opening the link \(path)") }
        defer { close(link) }
        return try BPFLinkInfo(fd: link, what: path)
    }

    /// Opens the program the link pinned at `path` runs now (to put it back later).
    public static func currentProgram(pinnedAt path: String) throws -> BPFProgramHandle {
        try BPFProgramHandle(id: try info(pinnedAt: path).programID)
    }
}
