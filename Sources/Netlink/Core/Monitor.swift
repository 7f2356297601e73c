import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A change the kernel announced on a multicast group.
public enum NetlinkEvent: Sendable {
    case newLink(Link)
    case deletedLink(Link)
    case newAddress(InterfaceAddress)
    case deletedAddress(InterfaceAddress)
    case newRoute(Route)
    case deletedRoute(Route)
    case newNeighbour(Neighbour)
    case deletedNeighbour(Neighbour)
    /// An IPv4 per-device setting changed (`RTM_NEWNETCONF`: forwarding, rp_filter, ...),
    /// for the interface with this index (nil: the `all`/`default` settings).
    case netconf(interfaceIndex: InterfaceIndex?)
    /// A qdisc or tc filter was added, replaced or deleted on the interface with this index
    /// (`RTM_NEWQDISC`, `RTM_DELQDISC`, `RTM_NEWTFILTER`, `RTM_DELTFILTER`; group
    /// `.trafficControl`), under `parent` (`tcm_parent`: 0xFFFFFFF1 for a clsact or ingress
    /// qdisc, 0xFFFFFFF2 for a filter on clsact's ingress hook, 0xFFFFFFFF for a root qdisc).
    case trafficControl(interfaceIndex: InterfaceIndex, parent: UInt32)
    /// The socket's buffer overflowed and the kernel dropped events. State may have
    /// changed unseen: the consumer must re-dump what it cares about.
    case overrun
    /// A message that could not be decoded (kept so nothing is lost silently).
    case undecodable(type: UInt16, error: NetlinkError)

    /// Decodes one multicast message; nil for message types the monitor does not cover.
    static func decode(_ message: NetlinkMessage) -> NetlinkEvent? {
        do {
            switch message.header.type {
            case RTM.newLink: return .newLink(try Link(message: message))
            case RTM.delLink: return .deletedLink(try Link(message: message))
            case RTM.newAddress: return .newAddress(try InterfaceAddress(message: message))
            case RTM.delAddress: return .deletedAddress(try InterfaceAddress(message: message))
            case RTM.newRoute: return .newRoute(try Route(message: message))
            case RTM.delRoute: return .deletedRoute(try Route(message: message))
            case RTM.newNeighbour: return .newNeighbour(try Neighbour(message: message))
            case RTM.delNeighbour: return .deletedNeighbour(try Neighbour(message: message))
            case RTM.newNetconf:
                // struct netconfmsg (family + 3 pad bytes), then NETCONFA_IFINDEX (1, s32).
                let r = ByteReader(message.payload)
                let attrs = try AttributeList(parsing: try r.slice(4, r.count - 4))
                let index = attrs[1]?.interfaceIndex
                return .netconf(interfaceIndex: index.flatMap { $0.rawValue > 0 ? $0 : nil })
            case RTM.newQdisc, RTM.delQdisc, RTM.newFilter, RTM.delFilter:
                // struct tcmsg: family, 3 pad bytes, ifindex (s32), handle, parent (u32 each).
                let r = ByteReader(message.payload)
                return .trafficControl(interfaceIndex: try r.interfaceIndex(4), parent: try r.u32(12))
            default: return nil
            }
        } catch let error as NetlinkError {
            return .undecodable(type: message.header.type, error: error)
        } catch {
            return .undecodable(type: message.header.type, error: .malformed("\(error)"))
        }
    }
}

/// Link, address, route and neighbour events from one namespace, as an async sequence.
///
/// The socket is subscribed before `init` returns, so every change made after that is seen.
/// A dedicated thread reads it; the sequence ends when `stop()` is called or the consumer
/// stops iterating. A kernel buffer overrun arrives as `.overrun`, and reading goes on.
public struct NetlinkMonitor: AsyncSequence, Sendable {
    public typealias Element = NetlinkEvent

    private let stream: AsyncStream<NetlinkEvent>
    private let stopped: StopFlag
    private let ignored: IgnoredSenders

    /// - Parameter receiveBuffer: `SO_RCVBUF` for the subscription (larger = fewer overruns).
    public init(
        namespace: NamespaceReference = .current, groups: MulticastGroups = .all, receiveBuffer: Int32 = 4 << 20
    ) throws {
        let socket = try NetlinkSocket(namespace: namespace, groups: groups)
        socket.setReceiveBuffer(receiveBuffer)
        try self.init(subscribed: socket)
    }

    /// Starts reading a socket that is already subscribed to multicast groups.
    init(subscribed socket: NetlinkSocket) throws {
        let stopped = StopFlag()
        let (stream, continuation) = AsyncStream<NetlinkEvent>.makeStream(bufferingPolicy: .unbounded)
        continuation.onTermination = { _ in stopped.stop() }
        self.stream = stream
        self.stopped = stopped
        let ignored = IgnoredSenders()
        self.ignored = ignored
        let reader = MonitorReader(socket: socket, continuation: continuation, stopped: stopped, ignored: ignored)
        try reader.start()
    }

    public func makeAsyncIterator() -> AsyncStream<NetlinkEvent>.Iterator { stream.makeAsyncIterator() }

    /// From now on, leaves out the notifications of changes requested through these sockets (a
    /// process's own changes, which it knows about), replacing the set given before.
    ///
    /// The kernel puts the port id of the socket whose request caused a change in the
    /// notifications of routes, addresses and tc objects (a link's settings, what the kernel
    /// does on its own and sysctl files come with 0, and are reported), and no other socket in
    /// the namespace has that id while the socket is open. So give only sockets that are open:
    /// once one is closed, its id may go to another process's socket. (A request made from
    /// another namespace, as a veth whose peer is put here, carries an id of that namespace,
    /// which may be the same number.)
    public func ignoreChanges(madeBy portIDs: Set<UInt32>) { ignored.set(portIDs.subtracting([0])) }

    /// Ends the sequence; the reader thread exits within its poll interval.
    public func stop() { stopped.stop() }
}

/// The port ids whose notifications a monitor leaves out, shared with its reader thread.
private final class IgnoredSenders: Sendable {
    private let ids = Mutex<Set<UInt32>>([])
    func set(_ new: Set<UInt32>) { ids.withLock { $0 = new } }
    func contains(_ id: UInt32) -> Bool { id != 0 && ids.withLock { $0.contains(id) } }
}

/// A flag a thread polls to know when to stop.
public final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    public init() {}
    public func stop() { flag.store(true, ordering: .releasing) }
    public var isStopped: Bool { flag.load(ordering: .acquiring) }
}

private final class MonitorReader: @unchecked Sendable {
    let socket: NetlinkSocket
    let continuation: AsyncStream<NetlinkEvent>.Continuation
    let stopped: StopFlag
    let ignored: IgnoredSenders
    static let pollMilliseconds: Int32 = 100

    init(
        socket: NetlinkSocket, continuation: AsyncStream<NetlinkEvent>.Continuation, stopped: StopFlag,
        ignored: IgnoredSenders
    ) {
        self.socket = socket
        self.continuation = continuation
        self.stopped = stopped
        self.ignored = ignored
    }

    func start() throws {
        try runDetached { self.run() }
    }

    private func run() {
        defer { continuation.finish() }
        var pfd = pollfd(fd: socket.fileDescriptor, events: Int16(POLLIN), revents: 0)
        while !stopped.isStopped {
            pfd.revents = 0
            let ready = poll(&pfd, 1, Self.pollMilliseconds)
            if ready == 0 || (ready < 0 && errno == EINTR) { continue }
            if ready < 0 {
                continuation.yield(.undecodable(type: 0, error: .syscall("poll(netlink monitor)")))
                return
            }
            do {
                for message in try socket.receiveEvents(context: "reading netlink events") {
                    if ignored.contains(message.header.portID) { continue }
                    if let event = NetlinkEvent.decode(message) { continuation.yield(event) }
                }
            } catch let error as NetlinkError where error.errno == .noBufferSpace {
                continuation.yield(.overrun)
            } catch {
                continuation.yield(.undecodable(type: 0, error: error as? NetlinkError ?? .malformed("\(error)")))
            }
        }
    }
}
