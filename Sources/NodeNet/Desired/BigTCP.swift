/// Which IPv4 GSO/GRO size nodenet's devices get on this node.
extension BigTCPMode {
    /// The size for a node whose native device the kernel reports as `nativeDevice`; nil on a
    /// kernel without BIG TCP (`auto` and `off` leave the devices alone there). `on` where the
    /// kernel or the native device cannot is an error that says which (`desiredState()` makes
    /// it an unavailable item of the plan: the node's other work goes on, CNI DEL included).
    public func segmentSize(nativeDevice: Link) throws -> UInt32? {
        guard nativeDevice.gsoIPv4MaxSize != nil else {
            guard self != .on else {
                throw NodeNetError.missing(
                    "ipv4BigTCP is on, but this kernel has no BIG TCP for IPv4 (IFLA_GSO_IPV4_MAX_SIZE, kernel 6.3 or later)"
                )
            }
            return nil
        }
        let carried = (nativeDevice.gsoIPv4MaxSize ?? 0) >= Self.bigSize
        switch self {
        case .off: return Self.defaultSize
        case .auto: return carried ? Self.bigSize : Self.defaultSize
        case .on:
            guard carried else {
                throw NodeNetError.missing(
                    "ipv4BigTCP is on, but native device \(nativeDevice.name) has gso_ipv4_max_size \(nativeDevice.gsoIPv4MaxSize ?? 0) (BIG TCP needs \(Self.bigSize) there too, or pods' large packets are cut again on their way to other nodes; its driver takes up to \(nativeDevice.tsoMaxSize.map(String.init) ?? "?"))"
                )
            }
            return Self.bigSize
        }
    }
}
