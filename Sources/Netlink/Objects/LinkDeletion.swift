import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

extension NetlinkSocket {
    /// Deletes the links named `names` in `namespace` and returns, one result per name, as soon
    /// as the kernel has unregistered each of them, without sitting out their release.
    ///
    /// A deletion request is acknowledged only after the kernel has also released the device:
    /// once the RTNL lock is dropped, the deleting call waits for pending RCU callbacks
    /// (`rcu_barrier` in `netdev_run_todo`) and for the device's last references, 10–30 ms
    /// here for a veth pair with nothing on it. The device is gone from its namespace before
    /// that: unlisted (its name free, lookups fail), its addresses, routes and neighbours
    /// flushed, and `RTM_DELLINK` announced. Each device is looked up first and deleted by
    /// its index from a thread of its own (a request sent late can then only fail, never
    /// take a device created under the same name since); this returns when the kernel has
    /// announced each index's removal and the index is gone, or the request has failed, and
    /// the threads sit out the release. A name that does not exist fails with `ENODEV`.
    ///
    /// Without the announcement (the event socket overflowed) a deletion counts when its
    /// request is acknowledged. A request that fails after its device was announced gone
    /// (nothing in the kernel does that) would go unreported.
    public static func deleteLinks(_ names: [String], in namespace: NamespaceReference) -> [Result<Void, NetlinkError>]
    {
        guard !names.isEmpty else { return [] }
        let events: NetlinkSocket
        let query: NetlinkSocket
        let senders: [NetlinkSocket]
        let progress: DeletionProgress
        do {
            // Subscribed before any request is sent: no announcement can be missed.
            events = try NetlinkSocket(namespace: namespace, groups: .link)
            events.setReceiveBuffer(Self.requestReceiveBuffer)
            query = try NetlinkSocket(namespace: namespace)
            // One socket per request (each waits in the kernel on its own), opened together.
            senders = try open(in: names.map { _ in namespace }).map { try $0.get() }
            progress = try DeletionProgress(count: names.count)
        } catch {
            let failure = error as? NetlinkError ?? .malformed("\(error)")
            return names.map { _ in .failure(failure) }
        }
        var indexes: [InterfaceIndex?] = []
        for (i, name) in names.enumerated() {
            let link: Link?
            do { link = try query.link(named: name) } catch {
                progress.finish(i, .failure(error as? NetlinkError ?? .malformed("\(error)")))
                indexes.append(nil)
                continue
            }
            guard let link else {
                progress.finish(
                    i, .failure(NetlinkError(.noSuchDevice, context: "deleting link \(name)", detail: "no such device"))
                )
                indexes.append(nil)
                continue
            }
            indexes.append(link.index)
            let socket = senders[i]
            let delete: @Sendable () -> Void = {
                let result: Result<Void, NetlinkError>
                do {
                    try socket.execute(link.deleteRequest)
                    result = .success(())
                } catch {
                    result = .failure(error as? NetlinkError ?? .malformed("\(error)"))
                }
                progress.finish(i, result)
            }
            if (try? runDetached(delete)) == nil { delete() }
        }

        var gone = Set<Int>()
        var watching = true
        while true {
            let acknowledged = progress.results
            guard names.indices.contains(where: { !gone.contains($0) && acknowledged[$0] == nil }) else { break }
            var fds = [
                pollfd(fd: progress.wakeFD, events: Int16(POLLIN), revents: 0),
                pollfd(fd: watching ? events.fileDescriptor : -1, events: Int16(POLLIN), revents: 0),
            ]
            let ready = poll(&fds, 2, 1000)
            if ready < 0 && errno != EINTR { watching = false }
            if fds[0].revents != 0 { progress.drainWake() }
            guard watching, fds[1].revents != 0 else { continue }
            do {
                for message in try events.receiveEvents(context: "reading link events")
                where message.header.type == RTM.delLink {
                    guard let link = try? Link(message: message),
                        let i = names.indices.first(where: { indexes[$0] == link.index && !gone.contains($0) })
                    else { continue }
                    // The announcement is the kernel's; that the index is gone now is checked.
                    if (try? query.link(interfaceIndex: link.index)) == .some(nil) { gone.insert(i) }
                }
            } catch {
                // Overflowed or unreadable: the acknowledgements decide from here.
                watching = false
            }
        }
        let acknowledged = progress.results
        return names.indices.map { acknowledged[$0] ?? .success(()) }
    }
}

/// The deleting threads' results, and a pipe that wakes the waiting thread when one arrives.
/// Shared by the waiter and the threads: the pipe closes when the last of them lets go (a
/// thread that finishes after the waiter returned still writes into this pipe, never into a
/// descriptor reused by someone else).
private final class DeletionProgress: Sendable {
    private let state: Mutex<[Result<Void, NetlinkError>?]>
    private let pipeFDs: (read: Int32, write: Int32)

    init(count: Int) throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw NetlinkError.syscall("pipe") }
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        pipeFDs = (fds[0], fds[1])
        state = Mutex(Array(repeating: nil, count: count))
    }

    deinit {
        close(pipeFDs.read)
        close(pipeFDs.write)
    }

    var wakeFD: Int32 { pipeFDs.read }
    var results: [Result<Void, NetlinkError>?] { state.withLock { $0 } }

    func finish(_ index: Int, _ result: Result<Void, NetlinkError>) {
        state.withLock { $0[index] = result }
        var byte: UInt8 = 1
        _ = write(pipeFDs.write, &byte, 1)
    }

    func drainWake() {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(pipeFDs.read, &buffer, buffer.count) > 0 {}
    }
}
