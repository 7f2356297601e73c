import CBPF

#if canImport(Glibc)
    import Glibc
#endif

/// A BPF link as the kernel describes it (`struct bpf_link_info`). For tcx links (type 11)
/// the device and hook are decoded; a tcx link whose device went away, or that was detached,
/// reports ifindex 0.
public struct BPFLinkInfo: Sendable, Equatable {
    /// `BPF_LINK_TYPE_TCX`, newer than Debian's UAPI headers.
    public static let typeTCX: UInt32 = 11
    public static let attachTCXIngress: UInt32 = 46
    public static let attachTCXEgress: UInt32 = 47

    public var type: UInt32
    public var id: UInt32
    public var programID: UInt32
    /// tcx only: the device (0 when detached), and `attachTCXIngress` or `attachTCXEgress`.
    public var ifindex: UInt32?
    public var attachType: UInt32?

    public var isTCX: Bool { type == Self.typeTCX }
    /// A tcx link that no longer holds its program on a device.
    public var isDetached: Bool { isTCX && (ifindex ?? 0) == 0 }

    public init(type: UInt32, id: UInt32, programID: UInt32, ifindex: UInt32? = nil, attachType: UInt32? = nil) {
        self.type = type
        self.id = id
        self.programID = programID
        self.ifindex = ifindex
        self.attachType = attachType
    }

    /// The link behind `fd`.
    public init(fd: Int32, what: String) throws {
        // struct bpf_link_info: type, id, prog_id (u32 each), then a union aligned to 8 whose
        // tcx member (kernel >= 6.6) is { u32 ifindex; u32 attach_type; }.
        var buffer = [UInt8](repeating: 0, count: max(MemoryLayout<bpf_link_info>.size, 64))
        var length = UInt32(buffer.count)
        let rc = buffer.withUnsafeMutableBytes { bpf_obj_get_info_by_fd(fd, $0.baseAddress, &length) }
        guard rc == 0 else { throw BPFError.libbpf(rc, "reading link info of \(what)") }
        func u32(_ offset: Int) -> UInt32 {
            buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self) }
        }
        self.init(type: u32(0), id: u32(4), programID: u32(8))
        if isTCX {
            ifindex = u32(16)
            attachType = u32(20)
        }
    }
}
