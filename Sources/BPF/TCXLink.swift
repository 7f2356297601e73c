import CBPF

#if canImport(Glibc)
import Glibc
#endif

/// tcx attachment (kernel >= 6.6): a BPF link that holds a program on a device's ingress.
/// A link dies with its last reference, so it is pinned to outlive the process.
public enum TCXLink {
    /// Attaches `programFD` to the ingress of `ifindex` and pins the link at `path`. Must run
    /// on a thread inside the device's network namespace (the kernel resolves the ifindex there).
    public static func attachIngress(programFD: Int32, ifindex: Int32, pinAt path: String) throws {
        let link = bpf_link_create(programFD, ifindex, bpf_attach_type(rawValue: UInt32(nodenet_tcx_ingress())), nil)
        guard link >= 0 else { throw BPFError.libbpf(link, "attaching a tcx link to ifindex \(ifindex)") }
        defer { close(link) }
        let rc = bpf_obj_pin(link, path)
        guard rc == 0 else { throw BPFError.libbpf(rc, "pinning the tcx link at \(path)") }
    }

    /// Swaps the program of the link pinned at `path` (atomic for packets in flight).
    public static func replaceProgram(pinnedAt path: String, with programFD: Int32) throws {
        let link = bpf_obj_get(path)
        guard link >= 0 else { throw BPFError(errno, "opening the tcx link \(path)") }
        defer { close(link) }
        let rc = bpf_link_update(link, programFD, nil)
        guard rc == 0 else { throw BPFError.libbpf(rc, "replacing the program of \(path)") }
    }

    /// Whether this kernel has tcx (6.6 and later).
    public static var isSupported: Bool {
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let parts = release.split(separator: ".").prefix(2).compactMap { Int($0.prefix { $0.isNumber }) }
        return parts.count == 2 && (parts[0], parts[1]) >= (6, 6)
    }
}
