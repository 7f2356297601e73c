import CBPF

#if canImport(Glibc)
    import Glibc
#endif

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

    public static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    /// The program behind `fd`.
    public init(fd: Int32) throws {
        let info = try objectInfo(bpf_prog_info(), fd: fd, what: "program info")
        id = info.id
        type = info.type
        name = infoName(info.name)
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
