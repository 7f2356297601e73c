import BPF

/// Why a pinned tcx link of ours does not carry this build's program where its name says.
public struct TCXLinkProblem: Sendable, Equatable, CustomStringConvertible {
    public var reason: String
    /// True when only the program is wrong (bpf_link_update fixes it); false when the link
    /// itself is unusable (detached, on another device, not tcx) and must be replaced.
    public var replaceable: Bool
    public var description: String { reason }

    /// Reads the link pinned as `name` and its program; nil when it is as this build wants.
    static func check(_ layout: BPFFSLayout, name: String) -> TCXLinkProblem? {
        guard let (program, _, ifindex) = BPFFSLayout.parseTCXLinkName(name) else {
            return TCXLinkProblem(reason: "not a link pin name of this build", replaceable: false)
        }
        let info: BPFLinkInfo
        do { info = try BPFLink.info(pinnedAt: layout.tcxLinkPath(name)) } catch {
            return TCXLinkProblem(reason: "unreadable: \(error)", replaceable: false)
        }
        guard info.isTCX else {
            return TCXLinkProblem(reason: "not a tcx link (link type \(info.type))", replaceable: false)
        }
        guard !info.isDetached else { return TCXLinkProblem(reason: "detached (ifindex 0)", replaceable: false) }
        guard info.ifindex == ifindex else {
            return TCXLinkProblem(
                reason: "attached to ifindex \(info.ifindex ?? 0), not \(ifindex)", replaceable: false)
        }
        guard info.attachType == BPFLinkInfo.attachTCXIngress else {
            return TCXLinkProblem(
                reason: "attached to attach type \(info.attachType ?? 0), not tcx ingress", replaceable: false)
        }
        guard let running = try? BPFProgramInfo(id: info.programID) else {
            return TCXLinkProblem(reason: "its program (id \(info.programID)) cannot be read", replaceable: true)
        }
        if running.name != program.kernelName {
            return TCXLinkProblem(
                reason: "runs program \(running.name) (id \(running.id)), not \(program.kernelName)", replaceable: true)
        }
        if let tag = DatapathProgram.buildTags[program], tag != running.tag {
            let wanted = BPFProgramInfo.hex(tag)
            return TCXLinkProblem(
                reason: "runs another build of \(running.name) (tag \(running.tagHex), this build \(wanted))",
                replaceable: true)
        }
        return nil
    }
}
