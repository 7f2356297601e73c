import BPF

/// How each program attaches on a node: the spec's `attachMode` resolved for the kernel.
///
/// `auto` on a kernel with tcx (6.6+) uses tcx links on the native device, which other
/// software shares (links are owned, ordered and survive a `tc qdisc del`), and a clsact
/// qdisc with a direct-action filter on each pod's lxc device, which nodenet creates and
/// nobody else attaches to. The split is for CNI ADD and DEL: attaching or detaching a tcx
/// link waits out a full RCU grace period under the RTNL lock (tcx swaps its program arrays
/// and calls `synchronize_rcu`; 5–20 ms here, one after another when pods come together),
/// and so does deleting a device that has one; clsact's filter swap waits only when an
/// earlier swap's grace period has not passed (a fraction of a millisecond). `tcx` and
/// `clsact` are what they say on every device.
public struct AttachModes: Sendable, Hashable, CustomStringConvertible {
    /// from-netdev on the native device.
    public var nativeDevice: AttachMode
    /// from-container on the pods' lxc devices.
    public var endpoints: AttachMode

    public init(nativeDevice: AttachMode, endpoints: AttachMode) {
        self.nativeDevice = nativeDevice
        self.endpoints = endpoints
    }

    /// The same mode everywhere.
    public init(_ mode: AttachMode) { self.init(nativeDevice: mode, endpoints: mode) }

    public static let tcx = AttachModes(.tcx)
    public static let clsact = AttachModes(.clsact)

    /// The mode of `program`'s attachments.
    public func mode(for program: DatapathProgram) -> AttachMode {
        program == .fromContainer ? endpoints : nativeDevice
    }

    /// Whether any program attaches through tcx links.
    public var usesTCX: Bool { nativeDevice == .tcx || endpoints == .tcx }

    public var description: String {
        nativeDevice == endpoints
            ? nativeDevice.rawValue : "\(nativeDevice.rawValue) on the native device, \(endpoints.rawValue) on pods"
    }
}

extension AttachMode {
    /// The modes in effect on a kernel of `version`: `auto` is tcx on the native device and
    /// clsact on pods' devices on kernels that have tcx, clsact everywhere otherwise; `tcx`
    /// and `clsact` are what they say.
    public func effective(onKernel version: (major: Int, minor: Int)?) -> AttachModes {
        switch self {
        case .auto:
            TCXLink.isSupported(onKernel: version) ? AttachModes(nativeDevice: .tcx, endpoints: .clsact) : .clsact
        case .tcx, .clsact: AttachModes(self)
        }
    }
}
