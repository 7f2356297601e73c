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
        try BPFLink.create(programFD: programFD, target: ifindex, attachType: bpf_attach_type(rawValue: UInt32(nodenet_tcx_ingress())),
                           pinAt: path, what: "a tcx link to ifindex \(ifindex)")
    }

    /// Swaps the program of the link pinned at `path` (atomic for packets in flight).
    public static func replaceProgram(pinnedAt path: String, with programFD: Int32) throws {
        try BPFLink.replaceProgram(pinnedAt: path, with: programFD)
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

    /// Whether this kernel has tcx (6.6 and later).
    public static var isSupported: Bool {
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let parts = release.split(separator: ".").prefix(2).compactMap { Int($0.prefix { $0.isNumber }) }
        return parts.count == 2 && (parts[0], parts[1]) >= (6, 6)
    }
}

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
        func u32(_ offset: Int) -> UInt32 { buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self) } }
        self.init(type: u32(0), id: u32(4), programID: u32(8))
        if isTCX {
            ifindex = u32(16)
            attachType = u32(20)
        }
    }
}

/// A loaded program as the kernel describes it (`struct bpf_prog_info`).
public struct BPFProgramInfo: Sendable, Equatable {
    public var id: UInt32
    public var type: UInt32
    /// The name given at load, truncated to 15 characters.
    public var name: String
    /// The kernel's tag: a hash of the instructions (map references zeroed), so the same
    /// program from the same build has the same tag whatever maps it was loaded with.
    public var tag: [UInt8]

    public var tagHex: String { Self.hex(tag) }

    public static func hex(_ bytes: [UInt8]) -> String { bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }

    /// The program behind `fd`.
    public init(fd: Int32) throws {
        var info = bpf_prog_info()
        var length = UInt32(MemoryLayout<bpf_prog_info>.size)
        let rc = bpf_obj_get_info_by_fd(fd, &info, &length)
        guard rc == 0 else { throw BPFError.libbpf(rc, "reading program info") }
        id = info.id
        type = info.type
        name = withUnsafeBytes(of: info.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        tag = withUnsafeBytes(of: info.tag) { Array($0) }
    }

    /// The loaded program with this id.
    public init(id: UInt32) throws {
        let handle = try BPFProgramHandle(id: id)
        try self.init(fd: handle.fd)
    }
}

/// An fd of a loaded program, closed when the handle goes (keeps the program alive meanwhile).
public final class BPFProgramHandle: @unchecked Sendable {
    public let fd: Int32

    /// Opens the program with this id (bpf_prog_get_fd_by_id).
    public init(id: UInt32) throws {
        let fd = bpf_prog_get_fd_by_id(id)
        guard fd >= 0 else { throw BPFError.libbpf(fd, "opening program id \(id)") }
        self.fd = fd
    }

    public var info: BPFProgramInfo { get throws { try BPFProgramInfo(fd: fd) } }

    deinit { close(fd) }
}
