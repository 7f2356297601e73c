import CBPF

#if canImport(Glibc)
    import Glibc
#endif

/// Reads records from a BPF ring buffer (libbpf `ring_buffer`), one callback per record.
public final class BPFRingBuffer: @unchecked Sendable {
    private var handle: OpaquePointer?
    private let box: Unmanaged<Sink>

    final class Sink {
        let onRecord: ([UInt8]) -> Void
        init(_ f: @escaping ([UInt8]) -> Void) { onRecord = f }
    }

    /// - Parameter mapFD: a `BPF_MAP_TYPE_RINGBUF` map.
    public init(mapFD: Int32, onRecord: @escaping ([UInt8]) -> Void) throws {
        box = Unmanaged.passRetained(Sink(onRecord))
        handle = ring_buffer__new(
            mapFD,
            { ctx, data, size in
                guard let ctx, let data else { return 0 }
                let sink = Unmanaged<Sink>.fromOpaque(ctx).takeUnretainedValue()
                sink.onRecord(Array(UnsafeRawBufferPointer(start: data, count: Int(size))))
                return 0
            }, box.toOpaque(), nil)
        // On failure deinit releases the box (the object is fully initialised here).
        guard handle != nil else { throw BPFError(errno, "opening the ring buffer") }
    }

    deinit {
        if let handle { ring_buffer__free(handle) }
        box.release()
    }

    /// Waits up to `milliseconds` for records and delivers them; returns how many.
    @discardableResult
    public func poll(milliseconds: Int32) throws -> Int {
        let n = ring_buffer__poll(handle, milliseconds)
        if n < 0 && n != -EINTR { throw BPFError.libbpf(n, "polling the ring buffer") }
        return Int(max(n, 0))
    }

    /// Opens the pinned ring buffer at `path`.
    public static func pinnedFD(at path: String) throws -> Int32 {
        let fd = bpf_obj_get(path)
        guard fd >= 0 else { throw BPFError(errno, "opening pinned map \(path)") }
        return fd
    }
}
