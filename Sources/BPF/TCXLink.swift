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
        try BPFLink.create(
            programFD: programFD, target: ifindex, attachType: bpf_attach_type(rawValue: UInt32(nodenet_tcx_ingress())),
            pinAt: path, what: "a tcx link to ifindex \(ifindex)")
    }

    /// Whether this kernel has tcx (6.6 and later).
    public static let isSupported = isSupported(onKernel: KernelRelease.version)

    /// Whether a kernel of `version` has tcx: 6.6 and later; an unknown version does not.
    public static func isSupported(onKernel version: (major: Int, minor: Int)?) -> Bool {
        guard let version else { return false }
        return (version.major, version.minor) >= (6, 6)
    }
}
