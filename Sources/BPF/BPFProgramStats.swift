import CBPF

#if canImport(Glibc)
    import Glibc
#endif

/// What a program has cost since statistics were on (`run_time_ns`, `run_cnt` of
/// `struct bpf_prog_info`): both stay 0 unless `BPFStatistics` (or the global sysctl
/// `kernel.bpf_stats_enabled`) has them counted.
public struct BPFProgramStats: Sendable, Equatable {
    public var runTimeNanoseconds: UInt64
    public var runCount: UInt64

    public init(runTimeNanoseconds: UInt64, runCount: UInt64) {
        self.runTimeNanoseconds = runTimeNanoseconds
        self.runCount = runCount
    }

    /// The program behind `fd`.
    public init(fd: Int32) throws {
        let info = try objectInfo(bpf_prog_info(), fd: fd, what: "program statistics")
        self.init(runTimeNanoseconds: info.run_time_ns, runCount: info.run_cnt)
    }

    /// No run, no time.
    public static let none = BPFProgramStats(runTimeNanoseconds: 0, runCount: 0)

    /// What was spent between `earlier` and this reading.
    public func since(_ earlier: BPFProgramStats) -> BPFProgramStats {
        BPFProgramStats(
            runTimeNanoseconds: runTimeNanoseconds &- earlier.runTimeNanoseconds, runCount: runCount &- earlier.runCount
        )
    }

    /// The time per run (nil without a run).
    public var nanosecondsPerRun: Double? {
        runCount > 0 ? Double(runTimeNanoseconds) / Double(runCount) : nil
    }

    /// What was spent between `earlier` and this reading, per run (nil without a run).
    public func nanosecondsPerRun(since earlier: BPFProgramStats) -> Double? { since(earlier).nanosecondsPerRun }
}

/// Run-time statistics of every BPF program, on while this handle lives (`BPF_ENABLE_STATS`,
/// kernel 5.8+): the kernel counts time and runs per program, at a cost of its own on every
/// run, so only a measurement holds one. Nothing global is written: closing the handle (or the
/// process ending) turns the counting off again unless someone else holds it on.
public final class BPFStatistics: @unchecked Sendable {
    private let fd: Int32

    public init() throws {
        let fd = bpf_enable_stats(BPF_STATS_RUN_TIME)
        guard fd >= 0 else { throw BPFError.libbpf(fd, "turning on BPF run-time statistics") }
        self.fd = fd
    }

    deinit { close(fd) }
}
