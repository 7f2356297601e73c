#if canImport(Glibc)
    import Glibc
#endif

/// Work handed to a fresh pthread.
private final class ThreadWork: @unchecked Sendable {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// Runs `body` on a brand-new pthread and waits for it. Namespace switches (`setns`,
/// `unshare`) affect only the calling thread, so they are done on a thread that exists
/// for this one job and then exits: no pool thread is ever left in a foreign namespace.
func runOnFreshThread(_ body: @escaping () -> Void) throws {
    pthread_join(try startThread(body), nil)
}

/// Runs `body` on a brand-new pthread that nobody waits for (blocking kernel calls whose
/// end the caller does not need to see).
func runDetached(_ body: @escaping () -> Void) throws {
    pthread_detach(try startThread(body))
}

private func startThread(_ body: @escaping () -> Void) throws -> pthread_t {
    let work = Unmanaged.passRetained(ThreadWork(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(
        &thread, nil,
        { raw in
            let work = Unmanaged<ThreadWork>.fromOpaque(raw!).takeRetainedValue()
            work.body()
            return nil
        }, work)
    guard rc == 0 else {
        Unmanaged<ThreadWork>.fromOpaque(work).release()
        throw NetlinkError(Errno(rawValue: rc), kind: .system, detail: "pthread_create")
    }
    return thread
}
