import CBPF

/// `bpf_obj_get_info_by_fd` for a fixed-size info struct (`bpf_map_info`, `bpf_prog_info`):
/// `empty` filled in for the object behind `fd`; `what` names it in the error.
func objectInfo<Info>(_ empty: Info, fd: Int32, what: String) throws -> Info {
    var info = empty
    var length = UInt32(MemoryLayout<Info>.size)
    let rc = bpf_obj_get_info_by_fd(fd, &info, &length)
    guard rc == 0 else { throw BPFError.libbpf(rc, "reading \(what)") }
    return info
}

/// A NUL-terminated name field of an info struct (a C `char[16]`, imported as a tuple).
func infoName<Field>(_ field: Field) -> String {
    withUnsafeBytes(of: field) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}
