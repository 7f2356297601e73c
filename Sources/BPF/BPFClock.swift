#if canImport(Glibc)
    import Glibc
#endif

/// The clock BPF programs read with bpf_ktime_get_ns (CLOCK_MONOTONIC), for comparing with
/// times they store (conntrack last use, the monitor lease).
public enum BPFClock {
    public static func nanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}
