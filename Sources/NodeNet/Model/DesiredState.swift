import CNodeNetBPF

/// Everything a spec asks of the kernel, derived from the spec alone (plus the native
/// device's MTU when the spec does not set one).
public struct DesiredState: Sendable, Equatable {
    public struct Endpoint: Sendable, Equatable {
        public var pod: PodSpec
        /// Host-side veth (`lxc…`).
        public var hostDevice: String
        public var podRoutes: [RouteIntent]
        public var hostRoute: RouteIntent
    }

    public var mtu: UInt32
    public var routerIP: IPAddress
    public var endpoints: [Endpoint]
    /// Routes in the node's namespace: router, pod CIDR, direct routes (pod /32 routes are
    /// per endpoint).
    public var nodeRoutes: [RouteIntent]
    /// Sysctls in the node's namespace, in the order they are applied.
    public var sysctls: [SysctlSetting]
    /// BPF datapath: the settings map's entry (nil in kernel mode).
    public var settings: NodeSettings?
    /// Service frontends (empty unless services are enabled).
    public var frontends: [DesiredFrontend] = []
    /// The cluster's node addresses for the service programs (NODENET_NODE_* flags).
    public var serviceNodes: [IPAddress: UInt32] = [:]
    /// The cgroup socket LB attaches to (nil: socket LB off).
    public var socketCgroup: String?

    public init(spec: NodeSpec, deviceMTU: UInt32) {
        let node = spec.node
        let mtu = node.mtu ?? deviceMTU
        self.mtu = mtu
        routerIP = node.routerIP
        let routerHost = IPPrefix(node.routerIP, length: 32)!
        var routes = [
            RouteIntent(destination: routerHost, device: NodeNetNames.hostDevice, scope: .link),
            RouteIntent(destination: node.podCIDR, gateway: node.routerIP, device: NodeNetNames.hostDevice, source: node.routerIP),
        ]
        if spec.autoDirectNodeRoutes {
            routes += spec.nodes.map { RouteIntent(destination: $0.podCIDR, gateway: $0.address, device: node.device) }
        }
        nodeRoutes = routes
        endpoints = spec.pods.map { pod in
            let device = NodeNetNames.endpointDevice(for: pod)
            return Endpoint(
                pod: pod, hostDevice: device,
                podRoutes: [
                    RouteIntent(destination: routerHost, device: NodeNetNames.podDevice, scope: .link),
                    RouteIntent(destination: IPPrefix("0.0.0.0/0")!, gateway: node.routerIP, device: NodeNetNames.podDevice, mtu: mtu),
                ],
                hostRoute: RouteIntent(destination: IPPrefix(pod.ip, length: 32)!, device: device, scope: .link))
        }
        var sysctls = [SysctlSetting(key: "net.ipv4.ip_forward", value: "1")]
        for device in [NodeNetNames.hostDevice, NodeNetNames.netDevice] + endpoints.map(\.hostDevice) {
            sysctls += SysctlSetting.forwardingDevice(device)
        }
        self.sysctls = sysctls
        if spec.datapath.mode == .bpf {
            settings = NodeSettings(spec: spec)
            if spec.servicesEnabled {
                frontends = spec.serviceFrontends
                serviceNodes = [node.address: UInt32(NODENET_NODE_LOCAL)]
                for remote in spec.nodes where remote.address != node.address { serviceNodes[remote.address] = UInt32(NODENET_NODE_REMOTE) }
                socketCgroup = spec.socketLB.cgroup
            }
        }
    }
}

/// One `/proc/sys` value.
public struct SysctlSetting: Sendable, Equatable, Hashable {
    public var key: String
    public var value: String

    public init(key: String, value: String) {
        self.key = key
        self.value = value
    }

    /// What every device nodenet forwards through needs: forwarding on, no reverse-path
    /// filter (replies may come in elsewhere), local sources accepted, no ICMP redirects.
    static func forwardingDevice(_ device: String) -> [SysctlSetting] {
        [
            SysctlSetting(key: "net/ipv4/conf/\(device)/forwarding", value: "1"),
            SysctlSetting(key: "net/ipv4/conf/\(device)/rp_filter", value: "0"),
            SysctlSetting(key: "net/ipv4/conf/\(device)/accept_local", value: "1"),
            SysctlSetting(key: "net/ipv4/conf/\(device)/send_redirects", value: "0"),
        ]
    }

    /// The device a per-device key belongs to (`net/ipv4/conf/DEV/...`), if any.
    var device: String? {
        let parts = key.split(separator: "/")
        return parts.count == 5 && parts[2] == "conf" ? String(parts[3]) : nil
    }
}
