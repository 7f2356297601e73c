/// IPv4 prefixes in insertion order, for the spec's clash checks at cluster scale: which earlier
/// prefix overlaps a new one, which prefixes hold an address. Pod CIDRs that do not clash are
/// disjoint and found by binary search; the few that clash are kept aside and scanned, so a
/// thousand nodes cost O(n log n), not O(n²), and the answers are the plain scan's.
struct PrefixIndex {
    private struct Range {
        var start: UInt32
        var end: UInt32
        var order: Int
    }
    /// Disjoint ranges, by start.
    private var disjoint: [Range] = []
    /// Ranges that overlap an earlier one.
    private var overlapping: [Range] = []
    private(set) var prefixes: [IPPrefix] = []

    private static func range(_ p: IPPrefix, order: Int) -> Range {
        let start = p.network.address.ipv4Value ?? 0
        let host = p.length >= 32 ? 0 : UInt32.max >> UInt32(p.length)
        return Range(start: start, end: start | host, order: order)
    }

    /// The first index in `disjoint` whose start is above `value`.
    private func upperBound(_ value: UInt32) -> Int {
        var low = 0
        var high = disjoint.count
        while low < high {
            let mid = (low + high) / 2
            if disjoint[mid].start <= value { low = mid + 1 } else { high = mid }
        }
        return low
    }

    private func anyDisjointOverlap(_ r: Range) -> Bool {
        let i = upperBound(r.start)
        if i > 0, disjoint[i - 1].end >= r.start { return true }
        return i < disjoint.count && disjoint[i].start <= r.end
    }

    mutating func insert(_ p: IPPrefix) {
        let r = Self.range(p, order: prefixes.count)
        prefixes.append(p)
        if anyDisjointOverlap(r) || overlapping.contains(where: { $0.start <= r.end && $0.end >= r.start }) {
            overlapping.append(r)
        } else {
            disjoint.insert(r, at: upperBound(r.start))
        }
    }

    /// The index (insertion order) of the first prefix that overlaps `p`.
    func firstOverlap(_ p: IPPrefix) -> Int? {
        let r = Self.range(p, order: -1)
        guard anyDisjointOverlap(r) || overlapping.contains(where: { $0.start <= r.end && $0.end >= r.start }) else {
            return nil
        }
        return prefixes.firstIndex { $0.overlaps(p) }
    }

    /// The indices (insertion order) of the prefixes that hold `address`.
    func containing(_ address: IPAddress) -> [Int] {
        guard let a = address.ipv4Value else { return [] }
        var found: [Int] = []
        let i = upperBound(a)
        if i > 0, disjoint[i - 1].end >= a { found.append(disjoint[i - 1].order) }
        for r in overlapping where r.start <= a && r.end >= a { found.append(r.order) }
        return found.sorted()
    }
}
