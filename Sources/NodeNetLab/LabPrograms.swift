import BPF
import Foundation
import Netlink
import NodeNet

/// The BPF programs lab nodes run, by kind, for the benchmarks' run-time statistics: the tc
/// programs of their tcx links (`from-netdev`; `from-container` under `attachMode: tcx`) and
/// cls_bpf filters (`from-container` under `attachMode: auto`), and the socket-LB hooks of
/// their cgroup links (`connect4`, `release`, …).
public enum LabPrograms {
    /// One program a node runs, open (it stays loaded while this lives).
    public struct Program: Sendable {
        /// `from-container`, `from-netdev`, or a socket hook's name (`connect4`).
        public var kind: String
        public var handle: BPFProgramHandle
    }

    /// The programs of the nodes whose namespaces and bpffs directories are given, each once
    /// (a node's pods share one from-container program: counted per filter, its statistics
    /// would be summed once per pod).
    public static func attached(bpffsDirectories: [String], namespaces: [String]) throws -> [Program] {
        var result: [Program] = []
        var seen: Set<UInt32> = []
        for namespace in namespaces {
            let node = try NetlinkSocket(namespace: .named(namespace))
            for link in try node.links() {
                for filter in try node.filters(interfaceIndex: link.index, direction: .ingress) {
                    guard let bpf = filter.bpf, let name = bpf.name, let id = bpf.programID,
                        let program = DatapathProgram(filterName: name), seen.insert(id).inserted
                    else { continue }
                    result.append(Program(kind: program.rawValue, handle: try BPFProgramHandle(id: id)))
                }
            }
        }
        for directory in bpffsDirectories {
            let layout = BPFFSLayout(directory: directory)
            // Pins are named `<kind>@…` (a tcx link's program, a socket hook's).
            for (linkDirectory, path) in [
                (layout.tcxLinkDirectory, layout.tcxLinkPath), (layout.socketLinkDirectory, layout.socketLinkPath),
            ] {
                // (A node without such links has no such directory.)
                guard FileManager.default.fileExists(atPath: linkDirectory) else { continue }
                for name in try FileManager.default.contentsOfDirectory(atPath: linkDirectory).sorted() {
                    guard let link = try BPFPin.open(path(name)) else { continue }
                    let info = try BPFLinkInfo(fd: link.fd, what: path(name))
                    guard seen.insert(info.programID).inserted else { continue }
                    result.append(
                        Program(
                            kind: String(name.prefix { $0 != "@" }), handle: try BPFProgramHandle(id: info.programID)))
                }
            }
        }
        return result
    }

    /// Their run-time statistics so far, summed by kind (they count only while a
    /// `BPFStatistics` is held).
    public static func statistics(_ programs: [Program]) throws -> [String: BPFProgramStats] {
        var sums: [String: BPFProgramStats] = [:]
        for p in programs {
            let s = try BPFProgramStats(fd: p.handle.fd)
            var sum = sums[p.kind] ?? .none
            sum.runTimeNanoseconds += s.runTimeNanoseconds
            sum.runCount += s.runCount
            sums[p.kind] = sum
        }
        return sums
    }

    /// What each kind's programs ran during `body`, with statistics on for it alone.
    public static func costs(of programs: [Program], during body: () throws -> Void) throws -> [String: BPFProgramStats]
    {
        let statistics = try BPFStatistics()
        defer { withExtendedLifetime(statistics) {} }
        let before = try Self.statistics(programs)
        try body()
        var costs: [String: BPFProgramStats] = [:]
        for (kind, after) in try Self.statistics(programs) { costs[kind] = after.since(before[kind] ?? .none) }
        return costs
    }
}
