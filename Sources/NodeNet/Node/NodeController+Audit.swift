extension NodeController {
    /// The node's datapath fingerprint now (BPF mode; empty in kernel mode). Filters count
    /// only on the native device in clsact mode: the pods' filters have netlink events (the
    /// agent watches tc), which a dump of each pod's filters every audit would only repeat
    /// (2.6 ms a second at 100 pods, in the loop CNI requests wait in).
    public func datapathFingerprint() throws -> DatapathFingerprint {
        guard spec.datapath.mode == .bpf else { return DatapathFingerprint() }
        return try DatapathFingerprint(
            layout: spec.bpffs, node: session.node,
            clsactDevices: attachModes.nativeDevice == .clsact ? [spec.node.device] : [])
    }
}
