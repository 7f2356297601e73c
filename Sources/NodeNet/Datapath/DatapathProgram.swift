import BPF
import CNodeNetBPF
import Foundation

/// The BPF programs of the datapath, where they attach and what their filters are called.
public enum DatapathProgram: String, Sendable, CaseIterable {
    /// Ingress of each pod's lxc (bpf/bpf_lxc.c).
    case fromContainer = "from-container"
    /// Ingress of the native device (bpf/bpf_netdev.c).
    case fromNetdev = "from-netdev"

    /// Its object's name (`bpf_lxc`: bpf/bpf_lxc.c, built into bpf_lxc.o).
    public var object: String { self == .fromContainer ? "bpf_lxc" : "bpf_netdev" }
    /// Its function in the object.
    public var function: String { self == .fromContainer ? "nodenet_from_container" : "nodenet_from_netdev" }

    /// `nodenet-from-container-1a2b3c4d`: the digest names the build, so an attached filter
    /// from an older build is recognised and replaced.
    public var filterName: String { "nodenet-\(rawValue)-\(BPFObject.digest(embedded: object) ?? "00000000")" }

    /// This build's digest of the program's object (names pins and filters).
    var buildDigest: String { BPFObject.digest(embedded: object) ?? "0" }

    /// Priority and handle of our filter. On the native device (shared with others) the
    /// handle is distinctive; lxc devices are ours alone.
    var priority: UInt16 { 1 }
    var handle: UInt32 { self == .fromContainer ? 1 : 0x6E6E }

    static func isOurs(_ filter: TCFilter) -> Bool { filter.bpf?.name?.hasPrefix("nodenet-") == true }

    /// The program a filter of ours carries, by its name (any build's); nil for another name.
    public init?(filterName name: String) {
        guard let program = Self.allCases.first(where: { name.hasPrefix("nodenet-\($0.rawValue)-") }) else {
            return nil
        }
        self = program
    }
}

extension NodeSpec {
    /// The attach modes in effect on this kernel.
    public var effectiveAttachModes: AttachModes { datapath.attachMode.effective(onKernel: KernelRelease.version) }
}

/// Socket-level load balancing: bpf/bpf_sock.c's programs on the cgroup hooks.
extension CgroupLink.Hook {
    static let object = "bpf_sock"

    /// The program for this hook on this kernel.
    var function: String { "nodenet_sock_\(rawValue)" + (refuses && !CgroupLink.canSetReturnValue ? "_eperm" : "") }

    /// The build of this hook's program the kernel cannot load (if any).
    var unusedFunction: String? {
        refuses ? (CgroupLink.canSetReturnValue ? "nodenet_sock_\(rawValue)_eperm" : "nodenet_sock_\(rawValue)") : nil
    }

}

extension DatapathProgram {
    /// The program's name as the kernel keeps it (15 characters).
    var kernelName: String { String(function.prefix(15)) }

    /// This build's programs' tags (the kernel's hash of the instructions), found by loading
    /// each embedded object once, unpinned; nil where that fails (then names alone are compared).
    static let buildTags: [DatapathProgram: [UInt8]] = {
        var tags: [DatapathProgram: [UInt8]] = [:]
        for program in allCases {
            guard let object = try? BPFObject(embedded: program.object), (try? object.load()) != nil,
                let fd = try? object.programFD(named: program.function), let info = try? BPFProgramInfo(fd: fd)
            else { continue }
            tags[program] = info.tag
        }
        return tags
    }()

}
