import CNodeNetBPF

/// The node's settings for the tc programs (the `nodenet_settings` map).
public struct NodeSettings: Sendable, Equatable, CustomStringConvertible {
    public var routerIP: IPAddress
    public var nodeIP: IPAddress
    /// nativeRoutingCIDR: never masqueraded, and pod-to-pod traffic inside it needs no
    /// translation lookups; nil: nothing is masqueraded.
    public var nativeCIDR: IPPrefix?
    public var services: Bool
    public var packetLB: Bool
    public var masquerade: Bool
    /// Some service has frontends on external or LoadBalancer addresses (from-netdev then
    /// looks up destinations that are not the node's).
    public var externalFrontends = false
    /// The native device's ifindex (masquerading applies to traffic leaving through it); set
    /// by the planner from the kernel, 0 when unknown.
    public var nativeIfindex: UInt32 = 0
    /// The size of the frontends' Maglev tables (`loadBalancer.algorithm: maglev`); 0: new flows
    /// on the packet path choose at random.
    public var maglevSize: UInt32 = 0
    /// This node's pod CIDR: from outside, sources inside it are checked against the local pods.
    public var podCIDR: IPPrefix?
    /// The conntrack entries one client outside may hold (`conntrack.outsideClientEntries`);
    /// 0: no limit of its own.
    public var outsideClientMax: UInt32 = 0

    public var description: String {
        var on: [String] = []
        if services { on.append("services") }
        if packetLB { on.append("per-packet service translation") }
        if externalFrontends { on.append("external frontends") }
        if maglevSize != 0 { on.append("Maglev (\(maglevSize) entries)") }
        if masquerade {
            on.append("masquerade to \(nodeIP) outside \(nativeCIDR?.description ?? "-") via ifindex \(nativeIfindex)")
        }
        return on.isEmpty ? "node \(nodeIP), all off" : "node \(nodeIP), " + on.joined(separator: ", ")
    }

    /// As the pinned map stores it (the layout of bpf/lib/maps.h).
    var mapValue: nodenet_config {
        var c = nodenet_config()
        c.router_ip = routerIP.ipv4Value!.bigEndian
        c.node_ip = nodeIP.ipv4Value!.bigEndian
        if let nativeCIDR { (c.native_cidr, c.native_mask) = Self.networkAndMask(nativeCIDR) }
        c.flags =
            (services ? UInt32(NODENET_CONFIG_SERVICES) : 0) | (packetLB ? UInt32(NODENET_CONFIG_PACKET_LB) : 0)
            | (masquerade && nativeCIDR != nil ? UInt32(NODENET_CONFIG_MASQUERADE) : 0)
            | (nativeCIDR != nil ? UInt32(NODENET_CONFIG_NATIVE_CIDR) : 0)
            | (externalFrontends ? UInt32(NODENET_CONFIG_EXTERNAL_IPS) : 0)
        c.native_ifindex = nativeIfindex
        c.maglev_size = maglevSize
        if let podCIDR { (c.pod_cidr, c.pod_mask) = Self.networkAndMask(podCIDR) }
        c.outside_client_max = outsideClientMax
        return c
    }

    /// A prefix as the settings map holds it: network and mask, in network byte order.
    private static func networkAndMask(_ prefix: IPPrefix) -> (UInt32, UInt32) {
        let mask: UInt32 = prefix.length == 0 ? 0 : ~UInt32(0) << (32 - UInt32(prefix.length))
        return ((prefix.address.ipv4Value! & mask).bigEndian, mask.bigEndian)
    }

    /// The prefix a network and mask in network byte order make.
    private static func prefix(_ network: UInt32, _ mask: UInt32) -> IPPrefix? {
        IPPrefix(IPAddress(ipv4: UInt32(bigEndian: network)), length: UInt32(bigEndian: mask).nonzeroBitCount)
    }

    init(_ c: nodenet_config) {
        routerIP = IPAddress(ipv4: UInt32(bigEndian: c.router_ip))
        nodeIP = IPAddress(ipv4: UInt32(bigEndian: c.node_ip))
        services = c.flags & UInt32(NODENET_CONFIG_SERVICES) != 0
        packetLB = c.flags & UInt32(NODENET_CONFIG_PACKET_LB) != 0
        masquerade = c.flags & UInt32(NODENET_CONFIG_MASQUERADE) != 0
        externalFrontends = c.flags & UInt32(NODENET_CONFIG_EXTERNAL_IPS) != 0
        nativeCIDR = c.flags & UInt32(NODENET_CONFIG_NATIVE_CIDR) != 0 ? Self.prefix(c.native_cidr, c.native_mask) : nil
        nativeIfindex = c.native_ifindex
        maglevSize = c.maglev_size
        podCIDR = c.pod_mask == 0 ? nil : Self.prefix(c.pod_cidr, c.pod_mask)
        outsideClientMax = c.outside_client_max
    }

    init(spec: NodeSpec) {
        routerIP = spec.node.routerIP
        nodeIP = spec.node.address
        services = spec.servicesEnabled
        packetLB = spec.servicesEnabled && !spec.socketLB.enabled
        masquerade = spec.masquerade && spec.nativeRoutingCIDR != nil
        nativeCIDR = spec.nativeRoutingCIDR
        externalFrontends =
            spec.servicesEnabled && spec.services.contains { !$0.externalIPs.isEmpty || !$0.loadBalancerIPs.isEmpty }
        podCIDR = spec.node.podCIDR
        maglevSize =
            spec.servicesEnabled && spec.loadBalancer.algorithm == .maglev
            ? UInt32(spec.loadBalancer.maglevTableSize) : 0
        outsideClientMax = UInt32(spec.conntrack.outsideClientEntries)
    }
}
