import CBPF
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Replaces the map pinned at `path` with an empty one of another layout, as an older build
/// would have left it.
func pinMapOfAnotherLayout(
    at path: String, type: bpf_map_type, name: String, keySize: UInt32, valueSize: UInt32, maxEntries: UInt32
) throws {
    #expect(unlink(path) == 0)
    let fd = bpf_map_create(type, name, keySize, valueSize, maxEntries, nil)
    try #require(fd >= 0)
    defer { close(fd) }
    #expect(bpf_obj_pin(fd, path) == 0)
}
