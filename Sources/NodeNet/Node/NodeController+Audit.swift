extension NodeController {
    /// The node's datapath fingerprint now (BPF mode; empty in kernel mode).
    public func datapathFingerprint() throws -> DatapathFingerprint {
        guard spec.datapath.mode == .bpf else { return DatapathFingerprint() }
        return try DatapathFingerprint(
            layout: spec.bpffs, node: session.node,
            clsactDevices: (attachModes.nativeDevice == .clsact ? [spec.node.device] : [])
                + (attachModes.endpoints == .clsact ? spec.pods.map(NodeNetNames.endpointDevice(for:)) : []))
    }
}
