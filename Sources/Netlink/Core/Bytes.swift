/// Bounds-checked, host-endian reads from a byte slice. Every read that would go past
/// the end throws a `.malformed` error instead of trapping: decoders never crash.
struct ByteReader {
    let bytes: ArraySlice<UInt8>

    init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }
    init(_ bytes: [UInt8]) { self.bytes = bytes[...] }

    var count: Int { bytes.count }

    func slice(_ offset: Int, _ length: Int) throws -> ArraySlice<UInt8> {
        guard offset >= 0, length >= 0, offset <= bytes.count - length else {
            throw NetlinkError.malformed("need \(length) bytes at offset \(offset), have \(bytes.count)")
        }
        let start = bytes.startIndex + offset
        return bytes[start..<start + length]
    }

    private func check(_ offset: Int, _ length: Int) throws {
        guard offset >= 0, offset <= bytes.count - length else {
            throw NetlinkError.malformed("need \(length) bytes at offset \(offset), have \(bytes.count)")
        }
    }

    func u8(_ offset: Int) throws -> UInt8 {
        try check(offset, 1)
        return bytes[bytes.startIndex + offset]
    }

    // Netlink is host-endian: plain unaligned loads.
    func u16(_ offset: Int) throws -> UInt16 {
        try check(offset, 2)
        return bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt16.self) }
    }

    func u32(_ offset: Int) throws -> UInt32 {
        try check(offset, 4)
        return bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self) }
    }

    func i32(_ offset: Int) throws -> Int32 { Int32(bitPattern: try u32(offset)) }
    func interfaceIndex(_ offset: Int) throws -> InterfaceIndex { InterfaceIndex(try i32(offset)) }
}

/// Host-endian appends (netlink is host-endian; nodenet targets little-endian Linux).
extension Array where Element == UInt8 {
    mutating func appendU8(_ v: UInt8) { append(v) }
    mutating func appendU16(_ v: UInt16) {
        append(UInt8(v & 0xFF))
        append(UInt8(v >> 8))
    }
    mutating func appendU32(_ v: UInt32) {
        for i in 0..<4 { append(UInt8((v >> (8 * UInt32(i))) & 0xFF)) }
    }
    mutating func appendI32(_ v: Int32) { appendU32(UInt32(bitPattern: v)) }
    mutating func appendIndex(_ index: InterfaceIndex) { appendI32(index.rawValue) }
    mutating func padToAlignment() {
        while count % 4 != 0 { append(0) }
    }
    mutating func storeU32(_ v: UInt32, at offset: Int) {
        for i in 0..<4 { self[offset + i] = UInt8((v >> (8 * UInt32(i))) & 0xFF) }
    }
    mutating func storeU16(_ v: UInt16, at offset: Int) {
        self[offset] = UInt8(v & 0xFF)
        self[offset + 1] = UInt8(v >> 8)
    }
}

extension ArraySlice where Element == UInt8 {
    /// A NUL-terminated (or unterminated) C string in an attribute payload.
    var cString: String {
        let end = firstIndex(of: 0) ?? endIndex
        return String(decoding: self[startIndex..<end], as: UTF8.self)
    }
}
