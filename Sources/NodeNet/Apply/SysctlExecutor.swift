/// Sysctls: a run of writes goes out together; each records the value it overwrote.
struct SysctlExecutor: ChangeExecutor {
    let namespace: NamespaceReference

    func run(_ changes: DomainChanges<SysctlChange>, undo: inout [UndoStep]) throws {
        let (written, error) = Sysctl.write(
            changes.map { (key: $0.setting.key, value: $0.setting.value) }, in: namespace)
        for change in changes.prefix(written) {
            guard let previous = change.previous else { continue }
            let (key, namespace) = (change.setting.key, namespace)
            undo.append(
                UndoStep("restoring sysctl \(key)=\(previous)") { try Sysctl.write(key, previous, in: namespace) })
        }
        if let error { throw ChangeFailure(index: written, error: error) }
    }
}
