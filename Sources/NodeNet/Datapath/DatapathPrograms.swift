import BPF
import CNodeNetBPF
import Foundation

/// The BPF programs of the datapath, where they attach and what their filters are called.
public enum DatapathProgram: String, Sendable, CaseIterable {
    /// Ingress of each pod's lxc (bpf/bpf_lxc.c).
    case fromContainer = "from-container"
    /// Ingress of the native device (bpf/bpf_netdev.c).
    case fromNetdev = "from-netdev"

    var object: String { self == .fromContainer ? "bpf_lxc" : "bpf_netdev" }
    var function: String { self == .fromContainer ? "nodenet_from_container" : "nodenet_from_netdev" }

    /// `nodenet-from-container-1a2b3c4d`: the digest names the build, so an attached filter
    /// from an older build is recognised and replaced.
    public var filterName: String { "nodenet-\(rawValue)-\(BPFObject.digest(embedded: object) ?? "00000000")" }

    /// Priority and handle of our filter. On the native device (shared with others) the
    /// handle is distinctive; lxc devices are ours alone.
    var priority: UInt16 { 1 }
    var handle: UInt32 { self == .fromContainer ? 1 : 0x6E6E }

    static func isOurs(_ filter: TCFilter) -> Bool { filter.bpf?.name?.hasPrefix("nodenet-") == true }
}

extension NodeSpec {
    /// The attach mode in effect: `auto` is tcx on kernels that have it, clsact otherwise.
    public var effectiveAttachMode: AttachMode {
        datapath.attachMode == .auto ? (TCXLink.isSupported ? .tcx : .clsact) : datapath.attachMode
    }

    /// Where tcx links are pinned.
    var linkDirectory: String { bpffsDirectory + "/links" }

    /// Where socket-LB (cgroup) links are pinned.
    var socketLinkDirectory: String { bpffsDirectory + "/sock" }
}

/// Socket-level load balancing: bpf/bpf_sock.c's programs on the cgroup hooks.
extension CgroupLink.Hook {
    static let object = "bpf_sock"

    /// The program for this hook on this kernel.
    var function: String { "nodenet_sock_\(rawValue)" + (refuses && !CgroupLink.canSetReturnValue ? "_eperm" : "") }

    /// The build of this hook's program the kernel cannot load (if any).
    var unusedFunction: String? { refuses ? (CgroupLink.canSetReturnValue ? "nodenet_sock_\(rawValue)_eperm" : "nodenet_sock_\(rawValue)") : nil }

    /// `connect4@1234@1a2b3c4d`: hook, cgroup id (a recreated cgroup is noticed) and build.
    func pinName(cgroupID: UInt64) -> String { "\(rawValue)@\(cgroupID)@\(BPFObject.digest(embedded: Self.object) ?? "0")" }

    func pinPrefix(cgroupID: UInt64) -> String { "\(rawValue)@\(cgroupID)@" }

    /// Whether `name` is one of our socket-LB link pins (`hook@cgroupID@digest`).
    static func parsePin(_ name: String) -> Bool {
        let parts = name.split(separator: "@")
        return parts.count == 3 && CgroupLink.Hook(rawValue: String(parts[0])) != nil && UInt64(parts[1]) != nil
    }
}

extension DatapathProgram {
    /// `from-container@lxc1a2b3c4d5e6f@7@1a2b3c4d`: what, where (name and ifindex, so a
    /// recreated device is noticed) and which build.
    func linkPinName(device: String, ifindex: Int32) -> String { "\(rawValue)@\(device)@\(ifindex)@\(BPFObject.digest(embedded: object) ?? "0")" }

    /// The pin names of this program on `device`, whatever ifindex or build.
    func linkPinPrefix(device: String) -> String { "\(rawValue)@\(device)@" }

    /// The program's name as the kernel keeps it (15 characters).
    var kernelName: String { String(function.prefix(15)) }

    /// This build's programs' tags (the kernel's hash of the instructions), found by loading
    /// each embedded object once, unpinned; nil where that fails (then names alone are compared).
    static let buildTags: [DatapathProgram: [UInt8]] = {
        var tags: [DatapathProgram: [UInt8]] = [:]
        for program in allCases {
            guard let object = try? BPFObject(embedded: program.object), (try? object.load()) != nil,
                  let fd = try? object.programFD(named: program.function), let info = try? BPFProgramInfo(fd: fd) else { continue }
            tags[program] = info.tag
        }
        return tags
    }()

    /// `from-container@lxc…@7@1a2b3c4d` → (program, device, ifindex).
    static func parseLinkPin(_ name: String) -> (DatapathProgram, device: String, ifindex: UInt32)? {
        let parts = name.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 4, let program = DatapathProgram(rawValue: String(parts[0])), let index = UInt32(parts[2]) else { return nil }
        return (program, String(parts[1]), index)
    }
}

/// Why a pinned tcx link of ours does not carry this build's program where its name says.
public struct TCXLinkProblem: Sendable, Equatable, CustomStringConvertible {
    public var reason: String
    /// True when only the program is wrong (bpf_link_update fixes it); false when the link
    /// itself is unusable (detached, on another device, not tcx) and must be replaced.
    public var replaceable: Bool
    public var description: String { reason }

    /// Reads the link pinned at `directory/name` and its program; nil when it is as this build wants.
    static func check(directory: String, name: String) -> TCXLinkProblem? {
        guard let (program, _, ifindex) = DatapathProgram.parseLinkPin(name) else {
            return TCXLinkProblem(reason: "not a link pin name of this build", replaceable: false)
        }
        let info: BPFLinkInfo
        do { info = try BPFLink.info(pinnedAt: "\(directory)/\(name)") } catch {
            return TCXLinkProblem(reason: "unreadable: \(error)", replaceable: false)
        }
        guard info.isTCX else { return TCXLinkProblem(reason: "not a tcx link (link type \(info.type))", replaceable: false) }
        guard !info.isDetached else { return TCXLinkProblem(reason: "detached (ifindex 0)", replaceable: false) }
        guard info.ifindex == ifindex else { return TCXLinkProblem(reason: "attached to ifindex \(info.ifindex ?? 0), not \(ifindex)", replaceable: false) }
        guard info.attachType == BPFLinkInfo.attachTCXIngress else {
            return TCXLinkProblem(reason: "attached to attach type \(info.attachType ?? 0), not tcx ingress", replaceable: false)
        }
        guard let running = try? BPFProgramInfo(id: info.programID) else {
            return TCXLinkProblem(reason: "its program (id \(info.programID)) cannot be read", replaceable: true)
        }
        if running.name != program.kernelName {
            return TCXLinkProblem(reason: "runs program \(running.name) (id \(running.id)), not \(program.kernelName)", replaceable: true)
        }
        if let tag = DatapathProgram.buildTags[program], tag != running.tag {
            let wanted = BPFProgramInfo.hex(tag)
            return TCXLinkProblem(reason: "runs another build of \(running.name) (tag \(running.tagHex), this build \(wanted))", replaceable: true)
        }
        return nil
    }
}

/// An endpoints-map entry as plain values (the C struct is not Equatable).
public struct EndpointEntry: Sendable, Equatable, CustomStringConvertible {
    public var ifindex: UInt32
    public var hostMAC: MACAddress
    public var podMAC: MACAddress

    init(_ e: nodenet_endpoint) {
        ifindex = e.ifindex
        hostMAC = MACAddress(bytes: withUnsafeBytes(of: e.host_mac) { Array($0) })!
        podMAC = MACAddress(bytes: withUnsafeBytes(of: e.pod_mac) { Array($0) })!
    }

    init(ifindex: UInt32, hostMAC: MACAddress, podMAC: MACAddress) {
        self.ifindex = ifindex
        self.hostMAC = hostMAC
        self.podMAC = podMAC
    }

    var c: nodenet_endpoint {
        let h = hostMAC.bytes, p = podMAC.bytes
        return nodenet_endpoint(ifindex: ifindex, host_mac: (h[0], h[1], h[2], h[3], h[4], h[5]), pod_mac: (p[0], p[1], p[2], p[3], p[4], p[5]), flags: 0)
    }

    public var description: String { "ifindex \(ifindex), lxc \(hostMAC), pod \(podMAC)" }

    static func key(_ ip: IPAddress) -> nodenet_endpoint_key { nodenet_endpoint_key(ip: ip.ipv4Value!.bigEndian) }
}

/// The loaded programs of one node for one apply; maps are pinned under the node's bpffs
/// directory and shared between the objects.
final class DatapathObjects {
    /// Every embedded object of the datapath (tc programs and socket LB).
    static let objectNames = DatapathProgram.allCases.map(\.object) + [CgroupLink.Hook.object]

    let objects: [DatapathProgram: BPFObject]
    let socket: BPFObject
    let endpoints: BPFMap<nodenet_endpoint_key, nodenet_endpoint>
    let services: ServiceMaps

    init(spec: NodeSpec) throws {
        try BPFFS.prepare(spec.bpffsDirectory)
        var objects: [DatapathProgram: BPFObject] = [:]
        for program in DatapathProgram.allCases {
            let o = try BPFObject(embedded: program.object, pinRoot: spec.bpffsDirectory)
            try o.load()
            objects[program] = o
        }
        self.objects = objects
        socket = try BPFObject(embedded: CgroupLink.Hook.object, pinRoot: spec.bpffsDirectory)
        for hook in CgroupLink.Hook.allCases { if let unused = hook.unusedFunction { try socket.setAutoload(program: unused, false) } }
        try socket.load()
        endpoints = try objects[.fromContainer]!.map(named: "nodenet_endpoints", key: nodenet_endpoint_key.self, value: nodenet_endpoint.self)
        services = try ServiceMaps(objects[.fromContainer]!)
    }

    func programFD(_ p: DatapathProgram) throws -> Int32 { try objects[p]!.programFD(named: p.function) }

    func programFD(_ hook: CgroupLink.Hook) throws -> Int32 { try socket.programFD(named: hook.function) }

    /// Entries of the pinned endpoints map of a node (empty when nothing is pinned yet).
    static func pinnedEntries(_ spec: NodeSpec) throws -> [IPAddress: EndpointEntry] {
        guard let map = try BPFMap<nodenet_endpoint_key, nodenet_endpoint>.pinned(at: "\(spec.bpffsDirectory)/nodenet_endpoints") else { return [:] }
        var result: [IPAddress: EndpointEntry] = [:]
        for key in try map.keys() {
            if let value = try map.lookup(key) { result[IPAddress(ipv4: UInt32(bigEndian: key.ip))] = EndpointEntry(value) }
        }
        return result
    }

    /// Pinned maps of the node whose shape differs from what this build declares (an
    /// upgrade that changed a layout): name -> (pinned, wanted).
    static func incompatiblePins(_ spec: NodeSpec) throws -> [String: String] {
        var result: [String: String] = [:]
        for (name, wanted) in try declaredShapes.get() {
            if let pinned = try BPFMapShape.pinned(at: "\(spec.bpffsDirectory)/\(name)"), pinned != wanted {
                result[name] = "pinned \(pinned); this build wants \(wanted)"
            }
        }
        return result
    }

    /// The maps this build's objects declare, by name (shared maps once). Read once per
    /// process: the embedded objects do not change, and opening them parses their ELF.
    static let declaredShapes: Result<[String: BPFMapShape], Error> = Result {
        var shapes: [String: BPFMapShape] = [:]
        for object in objectNames { shapes.merge(try BPFMapShape.declared(inEmbedded: object)) { a, _ in a } }
        return shapes
    }

    /// nodenet's own entries in a bpffs directory: maps pinned by name (`nodenet_*`, with
    /// `nodenet_*_old` set aside by a migration) and our link pins in `links/`. Nothing else:
    /// the directory may be shared (e.g. /sys/fs/bpf/tc/globals).
    static func ownedPins(in directory: String) -> [String] {
        let fm = FileManager.default
        var result: [String] = []
        for name in ((try? fm.contentsOfDirectory(atPath: directory + "/links")) ?? []).sorted() where DatapathProgram.parseLinkPin(name) != nil {
            result.append("links/\(name)")
        }
        for name in ((try? fm.contentsOfDirectory(atPath: directory + "/sock")) ?? []).sorted() where CgroupLink.Hook.parsePin(name) {
            result.append("sock/\(name)")
        }
        for name in ((try? fm.contentsOfDirectory(atPath: directory)) ?? []).sorted() where name.hasPrefix("nodenet_") {
            var isDirectory: ObjCBool = false
            if fm.fileExists(atPath: "\(directory)/\(name)", isDirectory: &isDirectory), !isDirectory.boolValue { result.append(name) }
        }
        return result
    }

    /// Unpins nodenet's own entries in `directory` (`ownedPins`), then removes `links/` and the
    /// directory itself only if they are empty. Never recursive. True when anything went.
    @discardableResult
    static func removeOwnedPins(in directory: String) -> Bool {
        guard Paths.isStrictlyBelow(directory, BPFFS.root) else { return false }
        var removed = false
        for entry in ownedPins(in: directory) where unlink("\(directory)/\(entry)") == 0 { removed = true }
        if rmdir(directory + "/links") == 0 { removed = true }
        if rmdir(directory + "/sock") == 0 { removed = true }
        if rmdir(directory) == 0 { removed = true }
        return removed
    }
}
