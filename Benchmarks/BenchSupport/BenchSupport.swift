// Helpers shared by the benchmark executables (not product code).
import Foundation

/// Wall time of `body`, in seconds.
public func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = ContinuousClock.now
    try body()
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

public func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

/// The nearest-rank percentile (`p` in 0...1: 0.99 is the value 99 % of the samples do not exceed).
public func percentile(_ xs: [Double], _ p: Double) -> Double {
    let s = xs.sorted()
    return s[max(0, min(s.count - 1, Int((Double(s.count) * p).rounded(.up)) - 1))]
}

public struct BenchError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// Runs `ip ARGS` (optionally `-batch FILE` with `batch` as its contents), stdout and stderr
/// on /dev/null, and returns its exit status. posix_spawn + waitpid: Foundation's Process
/// polls for exit in 50 ms steps, which would distort a baseline.
@discardableResult
public func ip(_ args: [String], batch: String? = nil) throws -> Int32 {
    var argsWithBatch = args
    var file: URL?
    if let batch {
        let f = FileManager.default.temporaryDirectory.appendingPathComponent(
            "bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).batch")
        try batch.write(to: f, atomically: true, encoding: .utf8)
        argsWithBatch += ["-batch", f.path]
        file = f
    }
    defer { file.map { try? FileManager.default.removeItem(at: $0) } }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    let argv = (["ip"] + argsWithBatch).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawnp(&pid, "ip", &actions, nil, argv, environ)
    guard rc == 0 else { throw BenchError("posix_spawnp(ip): \(String(cString: strerror(rc)))") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status >> 8) & 0xFF
}

/// The command line of a benchmark, option by option.
public struct BenchArguments {
    private var rest = Array(CommandLine.arguments.dropFirst())
    public init() {}

    /// The next option, nil when there is none.
    public mutating func next() -> String? { rest.isEmpty ? nil : rest.removeFirst() }

    /// The option's value ("" when it is missing).
    public mutating func value() -> String { rest.isEmpty ? "" : rest.removeFirst() }

    /// The option's value as a whole number in `range`, else `fallback`.
    public mutating func int(in range: ClosedRange<Int>, default fallback: Int) -> Int {
        Int(value()).map { min(max($0, range.lowerBound), range.upperBound) } ?? fallback
    }
}

/// Runs an async body from a benchmark's main thread, blocking it until the body is done.
public func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let box = BlockingResult<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        do {
            box.result = .success(try await body())
        } catch {
            box.result = .failure(error)
        }
        done.signal()
    }
    done.wait()
    return try box.result!.get()
}

private final class BlockingResult<T>: @unchecked Sendable {
    var result: Result<T, any Error>?
}

/// What a benchmark throws when its arguments are wrong (`runBenchmark` prints the usage).
public protocol UsageError: Error {}

/// A benchmark's main: runs `body`; a `UsageError` prints `usage` (exit 2), any other error
/// `name: error` (exit 1).
public func runBenchmark(_ name: String, usage: String, _ body: () throws -> Void) -> Never {
    do {
        try body()
        exit(0)
    } catch is any UsageError {
        print(usage)
        exit(2)
    } catch {
        print("\(name): \(error)")
        exit(1)
    }
}

/// Prints `value` as pretty, key-sorted JSON (every benchmark's `--json`).
public func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// In-round ratios (path B / path A of the same round) over the rounds: their median and range.
public struct RatioSummary: Codable, CustomStringConvertible {
    public var median: Double, min: Double, max: Double, rounds: Int

    public init(_ ratios: [Double]) {
        median = BenchSupport.median(ratios)
        min = ratios.min() ?? 0
        max = ratios.max() ?? 0
        rounds = ratios.count
    }

    public var description: String {
        String(format: "%.2f (%.2f–%.2f over %d rounds)", median, min, max, rounds)
    }
}

/// A benchmark's target judged against every round, not the median alone: **met** when every
/// round meets it, **met by the median only** when the median does but the spread crosses it
/// (noise could have made the median), **not met** when the median misses.
public struct TargetVerdict: Codable, CustomStringConvertible {
    public enum Bound: String, Codable { case atLeast = ">=", atMost = "<=" }
    public enum Outcome: String, Codable {
        case met, medianOnly = "met by the median only", notMet = "not met"
    }

    public var name: String
    public var bound: Bound
    public var value: Double
    public var rounds: RatioSummary
    public var outcome: Outcome

    /// `values`: one per round (an in-round ratio, or a round's own figure).
    public init(_ name: String, _ bound: Bound, _ value: Double, values: [Double]) {
        (self.name, self.bound, self.value) = (name, bound, value)
        rounds = RatioSummary(values)
        func meets(_ x: Double) -> Bool { bound == .atLeast ? x >= value : x <= value }
        outcome =
            values.isEmpty
            ? .notMet : values.allSatisfy(meets) ? .met : meets(rounds.median) ? .medianOnly : .notMet
    }

    public var description: String {
        String(
            format: "target %@ %@ %g: %@ (median %.3g, range %.3g–%.3g over %d)", name, bound.rawValue, value,
            outcome.rawValue, rounds.median, rounds.min, rounds.max, rounds.rounds)
    }
}

/// Prints each verdict on a line of its own.
public func printTargets(_ targets: [TargetVerdict]) {
    for t in targets { print(t) }
}
