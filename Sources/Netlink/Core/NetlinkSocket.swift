import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// An rtnetlink socket (libmnl), bound to the network namespace it was opened in.
///
/// Extended ACKs, capped ACKs and strict dump checking are on. Every request asks for an
/// acknowledgement and waits for it; replies are matched by sequence number; dumps are read
/// to `NLMSG_DONE` and retried when the kernel marks them interrupted. One request is in
/// flight at a time, so a socket can be shared by several tasks or threads.
public final class NetlinkSocket: @unchecked Sendable {
    /// Receive buffer per `recvmsg`: the kernel builds dump batches of up to 32 KiB.
    public static let receiveBufferSize = 64 * 1024
    /// Bytes of requests sent in one `sendmsg` by `batch` (kept under the default `wmem_max`).
    public static let batchBytes = 128 * 1024
    /// Requests per `sendmsg` at most: each failure queues an error ACK (about 1 KiB of
    /// receive buffer) before we read any, so a packet must never fail more than fits.
    public static let batchRequests = 1024
    /// Receive buffer of request sockets: room for `batchRequests` error ACKs.
    static let requestReceiveBuffer: Int32 = 4 << 20
    /// How many times an interrupted dump is retried before `.dumpInterrupted` is thrown.
    public static let dumpRetries = 8

    public let namespace: NamespaceReference
    public let portID: UInt32
    let transport: any NetlinkTransport
    /// Sequence counter and the receive buffer, reused for every datagram (a fresh 64 KiB
    /// per datagram showed up as page faults in dump profiles). Messages handed out keep
    /// the bytes alive: the buffer is copied on write only while they are still held.
    private struct State {
        var sequence: UInt32
        var buffer: [UInt8]
        mutating func next() -> UInt32 {
            sequence &+= 1
            return sequence
        }
    }
    private let state: Mutex<State>

    /// Opens a socket in `namespace` (the calling thread's own namespace for `.current`).
    public convenience init(namespace: NamespaceReference = .current) throws {
        try self.init(namespace: namespace, groups: [])
    }

    convenience init(namespace: NamespaceReference, groups: MulticastGroups) throws {
        self.init(transport: try MnlTransport(namespace: namespace, groups: groups), namespace: namespace)
        setReceiveBuffer(Self.requestReceiveBuffer)
    }

    /// Opens one socket per namespace, switching namespaces on a single helper thread
    /// (much cheaper than a thread per namespace when there are hundreds of pods).
    public static func open(in namespaces: [NamespaceReference]) -> [Result<NetlinkSocket, NetlinkError>] {
        var fds = [Result<Int32, NetlinkError>](repeating: .failure(NetlinkError(.badMessage)), count: namespaces.count)
        do {
            try NetworkNamespace.runEach(namespaces) { i, reference in
                fds[i] = Result { try MnlTransport.openSocket(reference) }.mapError {
                    $0 as? NetlinkError ?? NetlinkError(.protocolError)
                }
            } failed: { i, error in
                fds[i] = .failure(error)
            }
        } catch let e as NetlinkError {
            return namespaces.map { _ in .failure(e) }
        } catch {
            return namespaces.map { _ in .failure(NetlinkError(.protocolError)) }
        }
        return zip(fds, namespaces).map { fd, reference in
            fd.flatMap { fd in
                Result {
                    let socket = NetlinkSocket(
                        transport: try MnlTransport(fd: fd, namespace: reference, groups: []), namespace: reference)
                    socket.setReceiveBuffer(Self.requestReceiveBuffer)
                    return socket
                }.mapError { $0 as? NetlinkError ?? NetlinkError(.protocolError) }
            }
        }
    }

    init(transport: any NetlinkTransport, namespace: NamespaceReference = .current) {
        self.transport = transport
        self.namespace = namespace
        self.portID = transport.portID
        self.state = Mutex(
            State(
                sequence: UInt32.random(in: 1...0x7FFF_FFFF),
                buffer: [UInt8](repeating: 0, count: Self.receiveBufferSize)))
    }

    var fileDescriptor: Int32 { transport.fileDescriptor }

    /// Sets `SO_RCVBUF` (forcing past `rmem_max` when privileged).
    func setReceiveBuffer(_ bytes: Int32) {
        var size = bytes
        if setsockopt(fileDescriptor, SOL_SOCKET, SO_RCVBUFFORCE, &size, 4) != 0 {
            _ = setsockopt(fileDescriptor, SOL_SOCKET, SO_RCVBUF, &size, 4)
        }
    }

    // MARK: Requests

    /// Sends one request with `NLM_F_ACK` and waits for the acknowledgement. Returns the
    /// replies that came before it (a non-dump GET answers with one message).
    @discardableResult
    public func execute(_ request: NetlinkRequest) throws -> [NetlinkMessage] {
        try state.withLock { state in
            let (seq, bytes) = try send(request, flags: .ack, state: &state)
            var replies: [NetlinkMessage] = []
            while true {
                for reply in try receive(into: &state.buffer, context: request.context)
                where reply.header.sequence == seq {
                    if reply.header.type == NetlinkMessageType.error {
                        if let failure = try ExtendedAck(parsing: reply).failure(
                            request: bytes, context: request.context)
                        {
                            throw failure
                        }
                        return replies
                    }
                    replies.append(reply)
                }
            }
        }
    }

    /// Runs a dump to the end. A dump the kernel marks interrupted (its object set changed
    /// while it was read) is retried up to `dumpRetries` times, then reported as `.dumpInterrupted`.
    public func dump(_ request: NetlinkRequest) throws -> [NetlinkMessage] {
        try dump(request) { $0 }
    }

    /// A dump whose messages are decoded by `transform` as they arrive (no intermediate
    /// array of raw messages); nil results are left out. Retried as a whole when interrupted.
    public func dump<T>(_ request: NetlinkRequest, _ transform: (NetlinkMessage) throws -> T?) throws -> [T] {
        for _ in 0...Self.dumpRetries {
            let (items, interrupted) = try dumpOnce(request, transform)
            if !interrupted { return items }
        }
        throw NetlinkError(.interrupted, kind: .dumpInterrupted, context: request.context)
    }

    private func dumpOnce<T>(
        _ request: NetlinkRequest, _ transform: (NetlinkMessage) throws -> T?
    ) throws -> ([T], Bool) {
        try state.withLock { state in
            let (seq, bytes) = try send(request, flags: .dump, state: &state)
            var items: [T] = []
            var interrupted = false
            var pending: (any Error)?
            // The kernel keeps a dump running until it is read to the end: after a failure
            // (decoding, the caller's transform), drain it, then report the failure.
            defer {
                if pending != nil { drain(sequence: seq, into: &state.buffer) }
            }
            while true {
                let batch: [NetlinkMessage]
                do { batch = try receive(into: &state.buffer, context: request.context) } catch {
                    pending = error
                    throw error
                }
                for reply in batch where reply.header.sequence == seq {
                    if reply.header.flags.contains(.dumpInterrupted) { interrupted = true }
                    switch reply.header.type {
                    case NetlinkMessageType.done:
                        if let failure = try Self.doneFailure(reply, context: request.context) { throw failure }
                        return (items, interrupted)
                    case NetlinkMessageType.error:
                        if let failure = try ExtendedAck(parsing: reply).failure(
                            request: bytes, context: request.context)
                        {
                            throw failure
                        }
                        return (items, interrupted)
                    default:
                        do {
                            if !interrupted, let item = try transform(reply) { items.append(item) }
                        } catch {
                            pending = error
                            throw error
                        }
                    }
                }
            }
        }
    }

    /// Reads and discards the rest of dump `sequence` (bounded).
    private func drain(sequence: UInt32, into buffer: inout [UInt8]) {
        for _ in 0..<100_000 {
            guard let batch = try? receive(into: &buffer, context: "draining a dump") else { return }
            if batch.contains(where: {
                $0.header.sequence == sequence
                    && ($0.header.type == NetlinkMessageType.done || $0.header.type == NetlinkMessageType.error)
            }) {
                return
            }
        }
    }

    /// `NLMSG_DONE` carries an `int` status and, with `NLM_F_ACK_TLVS`, extended-ACK attributes.
    static func doneFailure(_ message: NetlinkMessage, context: String) throws -> NetlinkError? {
        guard message.payload.count >= 4 else { return nil }
        let reader = ByteReader(message.payload)
        let status = try reader.i32(0)
        guard status < 0 else { return nil }
        var e = NetlinkError(Errno(rawValue: 0 &- status), kind: .kernel, context: context)
        if message.header.flags.contains(.ackTLVs), message.payload.count > 4 {
            let tlvs = try AttributeList(parsing: try reader.slice(4, message.payload.count - 4))
            e.kernelMessage = tlvs[ExtAckAttribute.message]?.string
        }
        return e
    }

    /// Sends many requests with few system calls and returns one result per request, in order.
    ///
    /// Requests are packed into `sendmsg` calls of up to `batchBytes`. They are sent without
    /// `NLM_F_ACK` (the kernel reports failures anyway) and each packet ends with an
    /// acknowledged `NLMSG_NOOP`: the kernel handles a packet's messages in order, so once the
    /// NOOP's ACK arrives every request before it without an error report has succeeded.
    /// Meant for mutations (NEW/DEL/SET), not for GET requests.
    public func batch(_ requests: [NetlinkRequest]) -> [Result<Void, NetlinkError>] {
        var results = [Result<Void, NetlinkError>](repeating: .success(()), count: requests.count)
        var start = 0
        while start < requests.count {
            var packet: [UInt8] = []
            packet.reserveCapacity(Self.batchBytes + 64)
            var sent: [[UInt8]] = []
            var end = start
            state.withLock { state in
                let base = state.sequence &+ 1
                while end < requests.count {
                    var message = requests[end].message
                    message.flags.insert(.request)
                    message.flags.remove(.ack)
                    let bytes = message.finished(sequence: base &+ UInt32(end - start), portID: portID)
                    if !packet.isEmpty
                        && (packet.count + bytes.count > Self.batchBytes || end - start >= Self.batchRequests)
                    {
                        break
                    }
                    packet.append(contentsOf: bytes)
                    sent.append(bytes)
                    end += 1
                }
                let fence = base &+ UInt32(end - start)
                state.sequence = fence
                var noop = MessageBuilder(type: NetlinkMessageType.noop, flags: [.request, .ack])
                noop.flags = [.request, .ack]
                packet.append(contentsOf: noop.finished(sequence: fence, portID: portID))
                do {
                    try send(packet, context: "sending a batch of \(end - start) requests")
                    var done = false
                    while !done {
                        for reply in try receive(into: &state.buffer, context: "reading batch acknowledgements") {
                            let seq = reply.header.sequence
                            if seq == fence {
                                done = true
                                continue
                            }
                            let index = Int(seq &- base)
                            guard seq &- base < UInt32(end - start), reply.header.type == NetlinkMessageType.error
                            else { continue }
                            let ack = try ExtendedAck(parsing: reply)
                            if let failure = ack.failure(request: sent[index], context: requests[start + index].context)
                            {
                                results[start + index] = .failure(failure)
                            }
                        }
                    }
                } catch let error as NetlinkError {
                    for i in start..<end { results[i] = .failure(error) }
                } catch {
                    for i in start..<end {
                        results[i] = .failure(NetlinkError(.protocolError, kind: .system, detail: "\(error)"))
                    }
                }
            }
            start = end
        }
        return results
    }

    // MARK: I/O

    /// Numbers `request` (the next sequence), adds `flags` and NLM_F_REQUEST, sends it; returns
    /// the sequence its replies carry and the bytes sent (an extended ACK quotes them).
    private func send(
        _ request: NetlinkRequest, flags: NetlinkFlags, state: inout State
    ) throws -> (sequence: UInt32, bytes: [UInt8]) {
        let sequence = state.next()
        var message = request.message
        message.flags.formUnion([.request, flags])
        let bytes = message.finished(sequence: sequence, portID: portID)
        try send(bytes, context: request.context)
        return (sequence, bytes)
    }

    private func send(_ bytes: [UInt8], context: String) throws {
        do { try transport.send(bytes) } catch let e as NetlinkError { throw e.context(context) }
    }

    /// Receives one datagram into `buffer` and splits it into messages.
    func receive(into buffer: inout [UInt8], context: String) throws -> [NetlinkMessage] {
        let count: Int
        do { count = try transport.receive(into: &buffer) } catch let e as NetlinkError { throw e.context(context) }
        return try NetlinkMessage.parse(buffer[0..<count])
    }

    /// Receives one datagram outside a request (the monitor's reader thread).
    func receiveEvents(context: String) throws -> [NetlinkMessage] {
        try state.withLock { state in try receive(into: &state.buffer, context: context) }
    }
}
