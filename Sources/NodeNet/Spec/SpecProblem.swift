/// One thing wrong with a spec: where (a JSON path like `pods[3].ip`) and why.
public struct SpecProblem: Sendable, Equatable, CustomStringConvertible {
    public var path: String
    public var message: String

    public init(_ path: String, _ message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { path.isEmpty ? message : "\(path): \(message)" }
}

/// A rejected spec, with every problem found (not just the first).
public struct SpecError: Error, Sendable, CustomStringConvertible {
    public var problems: [SpecProblem]
    /// The spec file, when it was read from one.
    public var file: String?

    public init(_ problems: [SpecProblem], file: String? = nil) {
        self.problems = problems
        self.file = file
    }

    public var description: String {
        "invalid spec\(file.map { " \($0)" } ?? "") (\(problems.count) problem\(problems.count == 1 ? "" : "s")):\n"
            + problems.map { "  \($0)" }.joined(separator: "\n")
    }
}
