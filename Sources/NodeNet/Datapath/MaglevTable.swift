import CNodeNetBPF

/// A frontend's Maglev lookup table (Eisenbud et al., "Maglev: A Fast and Reliable Software
/// Network Load Balancer", NSDI 2016, section 3.4): `size` entries, each a backend id, filled
/// by letting every backend take turns claiming the next free entry of its own permutation.
/// Every backend gets `size / n` entries (± 1), and a backend joining or leaving changes little
/// more than its own share of entries.
///
/// The table depends only on the size and the backends' addresses (sorted, hashed with fixed
/// seeds), never on the order the spec lists them in or on anything of the node: every node
/// builds the same table for the same backends, so a flow that reaches any node picks the same
/// backend there (bpf/lib/maglev.h hashes the 5-tuple alike on every node).
public struct MaglevTable: Sendable, Equatable {
    public let size: Int
    /// The backend id of each entry.
    public let entries: [UInt32]
    /// What the table was built from (the index entry apply compares).
    public let index: MaglevIndex

    /// The table of `backends` (address and backend id; at least one, at most `size`).
    public init(size: Int, backends: [(address: BackendAddress, id: UInt32)]) {
        precondition(LoadBalancerSettings.isPrime(size) && !backends.isEmpty && backends.count <= size)
        let sorted = backends.sorted { $0.address < $1.address }
        self.size = size
        index = MaglevIndex(size: size, backends: sorted)
        // Each backend's permutation: offset + j·skip (mod size); skip in 1..<size, and size is
        // prime, so it visits every entry.
        let n = sorted.count
        var position = [Int](repeating: 0, count: n)
        var skip = [Int](repeating: 0, count: n)
        for (i, backend) in sorted.enumerated() {
            let word = Self.word(backend.address)
            position[i] = Int(FixedHash(seed: 0x6d61_676c_6576_3031).adding(word).value % UInt64(size))
            skip[i] = Int(FixedHash(seed: 0x6d61_676c_6576_3032).adding(word).value % UInt64(size - 1)) + 1
        }
        var owner = [Int32](repeating: -1, count: size)
        var filled = 0
        fill: while true {
            for i in 0..<n {
                var c = position[i]
                while owner[c] >= 0 {
                    c += skip[i]
                    if c >= size { c -= size }
                }
                owner[c] = Int32(i)
                c += skip[i]
                position[i] = c >= size ? c - size : c
                filled += 1
                if filled == size { break fill }
            }
        }
        let ids = sorted.map(\.id)
        entries = owner.map { ids[Int($0)] }
    }

    /// The backend ids of chunk `chunk` (`NODENET_MAGLEV_CHUNK` entries; the last is padded with
    /// its first entry, never read).
    func chunk(_ chunk: Int) -> nodenet_maglev_chunk {
        var value = nodenet_maglev_chunk()
        let start = chunk * MaglevIndex.chunkSize
        withUnsafeMutableBytes(of: &value.backend_ids) { raw in
            let ids = raw.bindMemory(to: UInt32.self)
            for i in 0..<MaglevIndex.chunkSize {
                ids[i] = start + i < size ? entries[start + i] : entries[start]
            }
        }
        return value
    }

    /// A backend as every node names it: IPv4 address, port and protocol in one word.
    static func word(_ b: BackendAddress) -> UInt64 {
        UInt64(b.address.ipv4Value ?? 0) << 32 | UInt64(b.port) << 8 | UInt64(b.protocol.ipProtocol)
    }
}

/// FNV-1a (64 bit) over little-endian words from a fixed seed, finished with SplitMix64's
/// mixer: the same on every node and in every run (Swift's `Hasher` is seeded per process).
struct FixedHash {
    private var h: UInt64

    init(seed: UInt64) { h = 0xcbf2_9ce4_8422_2325 ^ seed }

    func adding(_ word: UInt64) -> FixedHash {
        var next = self
        next.add(word)
        return next
    }

    mutating func add(_ word: UInt64) {
        for shift in stride(from: 0, to: 64, by: 8) {
            h ^= (word >> UInt64(shift)) & 0xff
            h = h &* 0x100_0000_01b3
        }
    }

    var value: UInt64 {
        var x = h
        x = (x ^ (x >> 30)) &* 0xbf58_476d_1ce4_e5b9
        x = (x ^ (x >> 27)) &* 0x94d0_49bb_1331_11eb
        return x ^ (x >> 31)
    }
}

/// What a frontend's Maglev table was built from: its size, its backends and a digest of the
/// size and the (address, id) pairs. The `nodenet_maglev_index` map holds one per frontend id;
/// apply compares it instead of reading the tables back.
public struct MaglevIndex: Sendable, Equatable, CustomStringConvertible {
    public var size: Int
    public var backends: Int
    public var digest: UInt64

    /// Entries per map value (`NODENET_MAGLEV_CHUNK`).
    static let chunkSize = Int(NODENET_MAGLEV_CHUNK)

    /// Map values a table of this size takes.
    public var chunks: Int { LoadBalancerSettings.maglevChunks(size: size) }

    public var description: String {
        "Maglev table of \(size) entries over \(backends) backend\(backends == 1 ? "" : "s")"
    }

    init(size: Int, backends: Int, digest: UInt64) {
        (self.size, self.backends, self.digest) = (size, backends, digest)
    }

    /// The index of a table of `size` over `backends`, sorted by address.
    init(size: Int, backends sorted: [(address: BackendAddress, id: UInt32)]) {
        var hash = FixedHash(seed: 0)
        hash.add(UInt64(size))
        for b in sorted {
            hash.add(MaglevTable.word(b.address))
            hash.add(UInt64(b.id))
        }
        self.init(size: size, backends: sorted.count, digest: hash.value)
    }

    init(_ v: nodenet_maglev_index) { self.init(size: Int(v.size), backends: Int(v.backends), digest: v.digest) }

    var mapValue: nodenet_maglev_index {
        nodenet_maglev_index(size: UInt32(size), backends: UInt32(backends), digest: digest)
    }
}
