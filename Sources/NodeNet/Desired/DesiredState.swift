import CNodeNetBPF

/// Everything a spec asks of the kernel, derived from the spec alone (plus the native
/// device's MTU when the spec does not set one).
public struct DesiredState: Sendable, Equatable {
    public struct Endpoint: Sendable, Equatable {
        public var pod: PodSpec
        /// Host-side veth (`lxc…`).
        public var hostDevice: String
        /// In the pod: the router IP on-link, then the default route through it.
        public var podRoutes: [RouteIntent]
        /// On the node: `podIP/32 dev lxc… scope link` (the kernel path to the pod).
        public var podRoute: RouteIntent
    }

    public var mtu: UInt32
    /// BIG TCP: the IPv4 GSO and GRO size of nodenet's devices (`BigTCPMode.segmentSize`);
    /// nil: left as they are (a kernel without BIG TCP, or nobody said).
    public var ipv4SegmentSize: UInt32?
    /// ", gso/gro ipv4 N" for the plan's description of a device made with the size; "" without.
    var segmentSizeDescription: String { ipv4SegmentSize.map { ", gso/gro ipv4 \($0)" } ?? "" }
    /// Why something the spec asks for cannot be had on this node (`ipv4BigTCP: on` where it is
    /// not carried): a plan reports these as unavailable and leaves the rest to do.
    public var unavailable: [String] = []
    public var routerIP: IPAddress
    public var endpoints: [Endpoint]
    /// `routerIP dev cilium_host scope link`: the router IP on-link.
    public var routerRoute: RouteIntent
    /// `podCIDR via routerIP dev cilium_host src routerIP`: the node's own pod CIDR.
    public var podCIDRRoute: RouteIntent
    /// Per remote node: `remotePodCIDR via remoteNodeIP dev <native device>`
    /// (autoDirectNodeRoutes).
    public var directRoutes: [RouteIntent]
    /// Every node-namespace route but the pods' /32s: router, pod CIDR, direct routes.
    public var nodeRoutes: [RouteIntent] { [routerRoute, podCIDRRoute] + directRoutes }
    /// Sysctls in the node's namespace, in the order they are applied.
    public var sysctls: [SysctlSetting]
    /// BPF datapath: the settings map's entry (nil in kernel mode).
    public var settings: NodeSettings?
    /// Service frontends (empty unless services are enabled).
    public var frontends: [DesiredFrontend] = []
    /// How large the service tables are (their frontend ids).
    public var serviceCapacity: ServiceMapCapacity = .default
    /// The cluster's node addresses for the service programs.
    public var serviceNodes: [IPAddress: NodeFlags] = [:]
    /// The cgroup socket LB attaches to (nil: socket LB off).
    public var socketCgroup: String?
    /// What a plan of this state covers (the whole node unless narrowed by `scoped(toEndpoint:)`
    /// or `removing(_:)`).
    public internal(set) var scope: PlanScope = .node

    public init(spec: NodeSpec, deviceMTU: UInt32) {
        let node = spec.node
        let mtu = node.mtu ?? deviceMTU
        self.mtu = mtu
        routerIP = node.routerIP
        let routerHost = IPPrefix(host: node.routerIP)
        routerRoute = RouteIntent(destination: routerHost, device: NodeNetNames.hostDevice, scope: .link)
        podCIDRRoute = RouteIntent(
            destination: node.podCIDR, gateway: node.routerIP, device: NodeNetNames.hostDevice, source: node.routerIP)
        directRoutes =
            spec.autoDirectNodeRoutes
            ? spec.nodes.map { RouteIntent(destination: $0.podCIDR, gateway: $0.address, device: node.device) } : []
        endpoints = spec.pods.map { pod in
            let device = NodeNetNames.endpointDevice(for: pod)
            return Endpoint(
                pod: pod, hostDevice: device,
                podRoutes: [
                    RouteIntent(destination: routerHost, device: NodeNetNames.podDevice, scope: .link),
                    RouteIntent(
                        destination: "0.0.0.0/0", gateway: node.routerIP, device: NodeNetNames.podDevice,
                        mtu: mtu),
                ],
                podRoute: RouteIntent(destination: IPPrefix(host: pod.ip), device: device, scope: .link))
        }
        var sysctls = NodeNetNames.globalSysctls.sorted().map { SysctlSetting(key: $0, value: "1") }
        for device in [NodeNetNames.hostDevice, NodeNetNames.netDevice] {
            sysctls += SysctlSetting.forwardingDevice(device)
        }
        for endpoint in endpoints {
            sysctls += SysctlSetting.endpointDevice(endpoint.hostDevice, datapath: spec.datapath.mode)
        }
        self.sysctls = sysctls
        if spec.datapath.mode == .bpf {
            settings = NodeSettings(spec: spec)
            serviceCapacity = spec.loadBalancer.mapCapacity
            if spec.servicesEnabled {
                frontends = spec.serviceFrontends
                serviceNodes = [node.address: .local]
                for remote in spec.nodes where remote.address != node.address { serviceNodes[remote.address] = .remote }
                socketCgroup = spec.socketLB.cgroup
            }
        }
    }
}

/// One `/proc/sys` value.
public struct SysctlSetting: Sendable, Equatable, Hashable {
    public let key: String
    public var value: String
    /// The device a per-device key belongs to (`net/ipv4/conf/DEV/NAME`) and the setting's
    /// name there, if it is one: read from the key once (plans ask it of every setting).
    let device: String?
    let deviceSetting: String?

    public init(key: String, value: String) {
        self.key = key
        self.value = value
        let parts = DeviceConfiguration.deviceKey(key)
        device = parts?.device
        deviceSetting = parts?.name
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

    /// A pod's host device (lxc): forwarding as above, and nothing a pod may abuse. In kernel
    /// mode a strict reverse-path filter: the pod's /32 route is the only way back to its
    /// address, so a packet from any other source (a spoofed one) is dropped on the lxc; in BPF
    /// mode from-container checks the source itself (and redirects past the filter). IPv6 is
    /// off until nodenet models it: a pod's router advertisement would otherwise give the node
    /// a default route or an address through the pod.
    static func endpointDevice(_ device: String, datapath: DatapathMode) -> [SysctlSetting] {
        var settings = forwardingDevice(device)
        if datapath == .kernel { settings[1].value = "1" }
        settings.append(SysctlSetting(key: "net/ipv6/conf/\(device)/disable_ipv6", value: "1"))
        return settings
    }

    /// Whether the key is IPv6's (absent on a kernel booted without IPv6).
    var isIPv6: Bool { key.hasPrefix("net/ipv6/") || key.hasPrefix("net.ipv6.") }
}

/// What a plan covers. `node`: everything nodenet owns, read and compared in full. `endpoints`:
/// some pods' endpoints (veths, addresses, routes, sysctls, map entries, programs) created or
/// repaired without reading or touching the rest of the node: what CNI ADDs need, in
/// milliseconds whatever the node's size. `removal`: endpoints the ledger knows, taken away.
/// The periodic full reconcile stays the safety net for everything a scoped plan does not read.
public enum PlanScope: Sendable, Equatable {
    case node
    case endpoints(hostDevices: Set<String>)
    case removal([Ledger.Endpoint])
}

extension DesiredState {
    /// This state narrowed to the endpoints on `hostDevices`; nil unless the state has them all.
    public func scoped(toEndpoints hostDevices: Set<String>) -> DesiredState? {
        let chosen = endpoints.filter { hostDevices.contains($0.hostDevice) }
        guard chosen.count == hostDevices.count, !chosen.isEmpty else { return nil }
        var scoped = self
        scoped.endpoints = chosen
        scoped.sysctls = sysctls.filter { $0.device.map(hostDevices.contains) ?? false }
        scoped.frontends = []
        scoped.scope = .endpoints(hostDevices: hostDevices)
        return scoped
    }

    /// What a scoped plan reads of the node: its endpoints' host devices and pod addresses
    /// (nil: the whole node).
    var scopedEndpoints: (devices: Set<String>, ips: [IPAddress])? {
        switch scope {
        case .node: nil
        case .endpoints(let devices): (devices, endpoints.map(\.pod.ip))
        case .removal(let removed): (Set(removed.map(\.hostDevice)), removed.compactMap { IPAddress($0.ip) })
        }
    }

    /// A state that plans only the removal of `removed` (which it must not want).
    public func removing(_ removed: [Ledger.Endpoint]) -> DesiredState {
        var scoped = self
        scoped.endpoints = []
        scoped.sysctls = []
        scoped.frontends = []
        scoped.scope = .removal(removed)
        return scoped
    }
}
