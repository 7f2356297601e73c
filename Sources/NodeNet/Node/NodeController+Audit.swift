extension NodeController {
    /// The node's datapath fingerprint now (BPF mode; empty in kernel mode).
    public func datapathFingerprint() throws -> DatapathFingerprint {
        guard spec.datapath.mode == .bpf else { return DatapathFingerprint() }
        return try DatapathFingerprint(
            layout: spec.bpffs, node: session.node,
            devices: [spec.node.device] + spec.pods.map(NodeNetNames.endpointDevice(for:)), attachMode: attachMode)
    }
}
