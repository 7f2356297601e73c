import Foundation

#if canImport(Glibc)
    import Glibc
#endif

extension NodeSpec {
    /// Decodes and validates a spec. Throws `SpecError` with every problem found; touches
    /// nothing (it only checks that the pods' network namespaces exist). The spec comes back
    /// marked as validated, so `NodeController` does not check it again.
    public static func load(_ data: Data) throws -> NodeSpec {
        var spec = try load(data, namespaceExists: Self.namespaceExists)
        spec.markValidated()
        return spec
    }

    /// As `load(_:)`, with the namespace check given by the caller (tests); the spec is not
    /// marked, so `NodeController` validates it again with the real check.
    public static func load(_ data: Data, namespaceExists: @escaping (String) -> Bool) throws -> NodeSpec {
        let root = try SpecReader.document(data)
        var reader = SpecReader()
        let spec = reader.read(root)
        var problems = reader.problems
        if let spec {
            var validator = SpecValidator(
                spec: spec, podPaths: reader.podPaths, nodePaths: reader.nodePaths, servicePaths: reader.servicePaths,
                namespaceExists: namespaceExists)
            problems += validator.validate()
            if problems.isEmpty { return spec }
        }
        throw SpecError(problems)
    }

    /// Runs the semantic checks on a spec built in code (`load` already does this).
    /// Paths use the arrays' indices, as if the spec had been read from JSON.
    public func validate(namespaceExists: @escaping (String) -> Bool = Self.namespaceExists) throws {
        var validator = SpecValidator(
            spec: self, podPaths: pods.indices.map { "pods[\($0)]" }, nodePaths: nodes.indices.map { "nodes[\($0)]" },
            servicePaths: services.indices.map { "services[\($0)]" }, namespaceExists: namespaceExists)
        let problems = validator.validate()
        if !problems.isEmpty { throw SpecError(problems) }
    }

    /// This spec, validated with the real namespace check and marked as such.
    func validated() throws -> NodeSpec {
        try validate()
        var spec = self
        spec.markValidated()
        return spec
    }

    /// The namespace check of a real validation: the path (or /var/run/netns name) is a pod's
    /// network namespace (see `namespaceProblem`).
    public static func namespaceExists(_ path: String) -> Bool { namespaceProblem(path) == nil }

    /// Why `path` cannot be a pod's network namespace, nil when it can: it must exist, be a
    /// network namespace (a FIFO or any other file is not), and not be the node's own (the
    /// pod's eth0 and default route would land in it). `node`: the node's namespace (by
    /// default the one nodenet runs in, which is the node's on a real node).
    public static func namespaceProblem(_ path: String, node: NamespaceReference = .current) -> String? {
        guard access(path, F_OK) == 0 else { return "does not exist (\(path))" }
        guard let identity = try? NetworkNamespace.identity(NamespaceReference(path)) else {
            return "is not a network namespace (\(path))"
        }
        if identity == (try? NetworkNamespace.identity(node)) {
            return "is the node's own network namespace (\(path)), never a pod's"
        }
        return nil
    }

    /// The largest spec file read (100 000 services with 3 backends each is about 30 MiB).
    public static let fileSizeLimit = 64 << 20

    /// Reads and validates the spec file at `path`. A path that is not a readable text file of
    /// at most `fileSizeLimit` bytes is one problem in a sentence that names it.
    public static func load(path: String) throws -> NodeSpec {
        let data: Data
        do { data = try StateFile.readText(path, limit: fileSizeLimit) } catch {
            throw SpecError([SpecProblem("", "\(error)")])
        }
        do {
            return try load(data)
        } catch var error as SpecError {
            error.file = path
            throw error
        }
    }
}
