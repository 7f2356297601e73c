import CBPF

#if canImport(Glibc)
    import Glibc
#endif

/// One run of a loaded tc program on a packet through the kernel's test harness
/// (`BPF_PROG_TEST_RUN`): the kernel makes an skb of the bytes on the device given, runs the
/// program once in the caller's network namespace, and reports its verdict, its run time and
/// the packet as the program left it. Maps and helpers are the real ones (a flow's conntrack
/// entries are made and found as for a packet on the wire); nothing is sent (a redirect is a
/// verdict only).
public struct BPFTestRun: Sendable, Equatable {
    /// The program's return value (a TC verdict: `TC_ACT_REDIRECT` is 7, `TC_ACT_SHOT` 2).
    public var verdict: UInt32
    /// The kernel's time for the run, in nanoseconds.
    public var nanoseconds: UInt32
    /// The packet after the run, from its Ethernet header.
    public var packet: [UInt8]

    public init(verdict: UInt32, nanoseconds: UInt32, packet: [UInt8]) {
        (self.verdict, self.nanoseconds, self.packet) = (verdict, nanoseconds, packet)
    }
}

extension BPFProgramHandle {
    /// Runs this (tc) program once on `packet` (an Ethernet frame) as if it arrived on
    /// `interfaceIndex`, a device of the calling thread's network namespace (nil: loopback).
    /// The program sees `skb->ifindex` as that device's. Throws with the kernel's errno when
    /// the kernel refuses the run (no such device, a packet shorter than an Ethernet header).
    public func testRun(packet: [UInt8], interfaceIndex: Int32? = nil) throws -> BPFTestRun {
        var context = __sk_buff()
        context.ifindex = UInt32(bitPattern: interfaceIndex ?? 0)
        var out = [UInt8](repeating: 0, count: packet.count + 256)
        var opts = bpf_test_run_opts()
        opts.sz = MemoryLayout<bpf_test_run_opts>.size
        opts.repeat = 1
        let rc = packet.withUnsafeBytes { data in
            out.withUnsafeMutableBytes { output in
                withUnsafeMutableBytes(of: &context) { ctx in
                    opts.data_in = data.baseAddress
                    opts.data_size_in = UInt32(data.count)
                    opts.data_out = output.baseAddress
                    opts.data_size_out = UInt32(output.count)
                    opts.ctx_in = UnsafeRawPointer(ctx.baseAddress)
                    opts.ctx_size_in = UInt32(ctx.count)
                    return bpf_prog_test_run_opts(fd, &opts)
                }
            }
        }
        guard rc == 0 else {
            throw BPFError.libbpf(rc, "test run of program fd \(fd) on a \(packet.count)-byte packet")
        }
        return BPFTestRun(
            verdict: opts.retval, nanoseconds: opts.duration, packet: Array(out.prefix(Int(opts.data_size_out))))
    }
}
