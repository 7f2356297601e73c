import CNodeNetBPF

/// A node's desired networking (`apiVersion: nodenet/v1`). Build one with
/// `NodeSpec.load(_:)`, which decodes strictly and validates; see docs/spec.md.
public struct NodeSpec: Sendable, Hashable {
    public static let apiVersion = "nodenet/v1"

    public var node: LocalNode
    /// Destinations inside it are never masqueraded (pod IPs stay visible across nodes).
    public var nativeRoutingCIDR: IPPrefix?
    /// Install `remotePodCIDR via remoteNodeIP dev <device>` for every remote node.
    public var autoDirectNodeRoutes: Bool
    /// Handle services in BPF instead of iptables (the services datapath).
    public var kubeProxyReplacement: Bool
    public var datapath: DatapathSettings
    public var pods: [PodSpec]
    public var nodes: [RemoteNode]
    public var services: [ServiceSpec]
    public var nodePortRange: ClosedRange<Int>
    /// Where the ledger of applied state lives. Default `/var/lib/nodenet/<node.name>`.
    public var stateDirectory: String
    /// The node's bpffs directory (pinned maps). Default `/sys/fs/bpf/nodenet/<node.name>`.
    public var bpffsDirectory: String
    /// Socket-level load balancing (services translated at connect time).
    public var socketLB: SocketLBSettings
    /// Pod traffic to destinations outside `nativeRoutingCIDR` (and not to a node) leaves
    /// with the node's address (BPF datapath).
    public var masquerade: Bool
    /// Cluster mode: remote nodes and services come from etcd (see `ClusterSettings`); the
    /// spec's own `nodes` and `services` must then be empty.
    public var cluster: ClusterSettings?
    /// How the packet path chooses a new flow's backend (`loadBalancer`).
    public var loadBalancer: LoadBalancerSettings = LoadBalancerSettings()
    /// Limits on the BPF datapath's connection tracking (`conntrack`).
    public var conntrack: ConntrackSettings = ConntrackSettings()
    /// BIG TCP for IPv4 on nodenet's devices (`ipv4BigTCP`).
    public var ipv4BigTCP: BigTCPMode = .auto
    /// Set by validation; a spec changed since no longer matches it (see `isValidated`).
    var validation = SpecValidationMark()
    /// The pods that came from the endpoint store (a container runtime, through CNI), by id:
    /// the ledger records them as such, so a lost store can be rebuilt from it.
    public internal(set) var runtimePodIDs: Set<String> = []

    public init(
        node: LocalNode, nativeRoutingCIDR: IPPrefix? = nil, autoDirectNodeRoutes: Bool = true,
        kubeProxyReplacement: Bool = true, datapath: DatapathSettings = DatapathSettings(), pods: [PodSpec] = [],
        nodes: [RemoteNode] = [], services: [ServiceSpec] = [], nodePortRange: ClosedRange<Int> = 30000...32767,
        stateDirectory: String? = nil, bpffsDirectory: String? = nil, socketLB: SocketLBSettings = SocketLBSettings(),
        masquerade: Bool = true, cluster: ClusterSettings? = nil
    ) {
        self.node = node
        self.nativeRoutingCIDR = nativeRoutingCIDR
        self.autoDirectNodeRoutes = autoDirectNodeRoutes
        self.kubeProxyReplacement = kubeProxyReplacement
        self.datapath = datapath
        self.pods = pods
        self.nodes = nodes
        self.services = services
        self.nodePortRange = nodePortRange
        self.stateDirectory = stateDirectory ?? "/var/lib/nodenet/\(node.name)"
        self.bpffsDirectory = bpffsDirectory ?? "/sys/fs/bpf/nodenet/\(node.name)"
        self.socketLB = socketLB
        self.masquerade = masquerade
        self.cluster = cluster
    }
}

public struct LocalNode: Sendable, Hashable {
    public var name: String
    /// The native device (`eth0`): direct routes leave through it.
    public var device: String
    public var address: IPAddress
    public var podCIDR: IPPrefix
    /// Held by `cilium_host` as /32; the pods' gateway. Default: first host of `podCIDR`.
    public var routerIP: IPAddress
    /// MTU of the host pair and the pods. Default: the native device's MTU.
    public var mtu: UInt32?

    public init(
        name: String, device: String, address: IPAddress, podCIDR: IPPrefix, routerIP: IPAddress? = nil,
        mtu: UInt32? = nil
    ) {
        self.name = name
        self.device = device
        self.address = address
        self.podCIDR = podCIDR
        self.routerIP = routerIP ?? LocalNode.defaultRouterIP(podCIDR)
        self.mtu = mtu
    }

    /// The first host address of a pod CIDR (`10.0.2.1` for `10.0.2.0/24`).
    public static func defaultRouterIP(_ cidr: IPPrefix) -> IPAddress {
        let network = cidr.network.address
        return IPAddress(ipv4: (network.ipv4Value ?? 0) &+ 1)
    }
}

public struct PodSpec: Sendable, Hashable {
    public var name: String
    /// Kubernetes namespace (default `default`); part of the endpoint's identity.
    public var namespace: String
    /// The pod's network namespace: a name under /var/run/netns or an absolute path.
    public var netns: String
    public var ip: IPAddress

    public init(name: String, namespace: String = "default", netns: String, ip: IPAddress) {
        self.name = name
        self.namespace = namespace
        self.netns = netns
        self.ip = ip
    }

    public var id: String { "\(namespace)/\(name)" }
    public var netnsReference: NamespaceReference { NamespaceReference(netns) }
}

public struct RemoteNode: Sendable, Hashable {
    public var name: String
    public var address: IPAddress
    public var podCIDR: IPPrefix

    public init(name: String, address: IPAddress, podCIDR: IPPrefix) {
        self.name = name
        self.address = address
        self.podCIDR = podCIDR
    }
}

public enum ServiceType: String, Sendable, Equatable, CaseIterable {
    case clusterIP = "ClusterIP"
    case nodePort = "NodePort"
    /// A NodePort service that is also reached on `loadBalancerIPs` (the addresses an outside
    /// load balancer gives it, routed to the nodes).
    case loadBalancer = "LoadBalancer"

    /// Whether the service has node ports (NodePort and LoadBalancer).
    public var hasNodePorts: Bool { self != .clusterIP }
}

/// Kubernetes' `sessionAffinity`.
public enum SessionAffinity: String, Sendable, Equatable, CaseIterable {
    case none = "None"
    case clientIP = "ClientIP"
}

/// Which backends a frontend's traffic may reach (Kubernetes' `externalTrafficPolicy` and
/// `internalTrafficPolicy`).
public enum TrafficPolicy: String, Sendable, Equatable, CaseIterable {
    /// Every backend of the service.
    case cluster = "Cluster"
    /// Only the backends on this node (in its pod CIDR); with none, the traffic is dropped.
    case local = "Local"
}

public enum TransportProtocol: String, Sendable, Equatable, CaseIterable {
    case tcp = "TCP"
    case udp = "UDP"
}

public struct ServiceSpec: Sendable, Hashable {
    public var name: String
    public var type: ServiceType
    public var clusterIP: IPAddress
    public var ports: [ServicePort]
    public var backends: [ServiceBackend]
    /// Backends named by pod (cluster services only): resolved to the pod's address through the
    /// endpoints the nodes publish, so a re-created pod with a new address is followed.
    public var podBackends: [PodBackend]
    /// Traffic from outside the node to the node ports, load balancer and external addresses:
    /// `local` keeps the client's address (no source NAT) and reaches only this node's backends.
    public var externalTrafficPolicy: TrafficPolicy
    /// Traffic to the clusterIP: `local` reaches only this node's backends.
    public var internalTrafficPolicy: TrafficPolicy
    /// `clientIP`: a client's connections go to the backend its first one did, while it is
    /// one of the service's and for `sessionAffinityTimeoutSeconds` after its last one.
    public var sessionAffinity: SessionAffinity = .none
    public var sessionAffinityTimeoutSeconds: Int = 10800
    /// Addresses routed to the nodes on which the service's ports are reached too (any type).
    public var externalIPs: [IPAddress] = []
    /// A LoadBalancer service's addresses (its load balancer's), reached like `externalIPs`.
    public var loadBalancerIPs: [IPAddress] = []
    /// The clients a LoadBalancer service's `loadBalancerIPs` take from outside the cluster
    /// (the packet path); empty: every client. Others are dropped (verdict `drop source range`).
    public var loadBalancerSourceRanges: [IPPrefix] = []
    /// A LoadBalancer service with `externalTrafficPolicy: Local`: the agent answers HTTP on
    /// this TCP port of every address of the node, 200 with the node's count of ready local
    /// backends, 503 with none, so the load balancer sends traffic only to nodes that serve it
    /// (kube-proxy's health check node port).
    public var healthCheckNodePort: Int?

    public init(
        name: String, type: ServiceType, clusterIP: IPAddress, ports: [ServicePort], backends: [ServiceBackend],
        podBackends: [PodBackend] = [], externalTrafficPolicy: TrafficPolicy = .cluster,
        internalTrafficPolicy: TrafficPolicy = .cluster
    ) {
        self.name = name
        self.type = type
        self.clusterIP = clusterIP
        self.ports = ports
        self.backends = backends
        self.podBackends = podBackends
        self.externalTrafficPolicy = externalTrafficPolicy
        self.internalTrafficPolicy = internalTrafficPolicy
    }
}

/// A backend named by its pod (`namespace/name`), as cluster services may name them.
public struct PodBackend: Sendable, Hashable {
    /// `namespace/name`.
    public var pod: String
    public var port: Int?

    public init(pod: String, port: Int? = nil) {
        self.pod = pod
        self.port = port
    }
}

public struct ServicePort: Sendable, Hashable {
    public var name: String?
    public var `protocol`: TransportProtocol
    public var port: Int
    public var targetPort: Int
    public var nodePort: Int?

    public init(
        name: String? = nil, protocol: TransportProtocol = .tcp, port: Int, targetPort: Int? = nil, nodePort: Int? = nil
    ) {
        self.name = name
        self.protocol = `protocol`
        self.port = port
        self.targetPort = targetPort ?? port
        self.nodePort = nodePort
    }
}

public struct ServiceBackend: Sendable, Hashable {
    public var ip: IPAddress
    /// Overrides the service port's `targetPort` for this backend.
    public var port: Int?
    /// Kubernetes' endpoint conditions (KEP-1669). New flows go to ready backends; when none is
    /// ready, to the serving ones (terminating included). A terminating backend keeps the flows
    /// it has.
    public var ready: Bool
    public var serving: Bool
    public var terminating: Bool

    public init(ip: IPAddress, port: Int? = nil, ready: Bool = true, serving: Bool? = nil, terminating: Bool = false) {
        self.ip = ip
        self.port = port
        self.ready = ready
        self.serving = serving ?? ready
        self.terminating = terminating
    }
}

/// How pod traffic is forwarded.
public enum DatapathMode: String, Sendable, Equatable, CaseIterable {
    /// Plain kernel routing: /32 routes to each pod's lxc, direct /24 routes between nodes.
    case kernel
    /// Kernel routing state as above, plus BPF on each lxc (from-container) and on the native
    /// device (from-netdev) that carries pod traffic past the routing stack.
    case bpf
}

/// How the BPF programs attach to devices.
public enum AttachMode: String, Sendable, Equatable, CaseIterable {
    /// tcx where the kernel has it (6.6+), else clsact.
    case auto
    /// tcx links (kernel >= 6.6), pinned so they outlive the process.
    case tcx
    /// A clsact qdisc with direct-action cls_bpf filters (every kernel >= 5.10).
    case clsact
}

public struct DatapathSettings: Sendable, Hashable {
    public var mode: DatapathMode
    public var attachMode: AttachMode
    public init(mode: DatapathMode = .kernel, attachMode: AttachMode = .auto) {
        self.mode = mode
        self.attachMode = attachMode
    }
}

/// How the packet path (traffic from outside to node ports, load balancer and external
/// addresses; pods' traffic when socket LB is off) chooses a new flow's backend, node-wide
/// (Cilium's `loadBalancer.algorithm`). Socket LB always chooses at random: at connect() there
/// is no 5-tuple to hash.
public struct LoadBalancerSettings: Sendable, Hashable {
    public var algorithm: LoadBalancerAlgorithm
    /// Entries of each frontend's Maglev table: a prime in `maglevTableSizes`, at least the
    /// backends of any service (about 100 × them keeps the shares within 1 %).
    public var maglevTableSize: Int
    /// How large the service tables are made (`mapEntries`): what bounds the spec's services.
    public var mapCapacity: ServiceMapCapacity

    public init(
        algorithm: LoadBalancerAlgorithm = .random, maglevTableSize: Int = Self.defaultMaglevTableSize,
        mapCapacity: ServiceMapCapacity = .default
    ) {
        self.algorithm = algorithm
        self.maglevTableSize = maglevTableSize
        self.mapCapacity = mapCapacity
    }

    /// Cilium's default, and ours: a prime about 100 × a large service's backends.
    public static let defaultMaglevTableSize = 16381
    /// The table sizes a spec may ask for (primes in this range; Cilium's largest is 131071).
    public static let maglevTableSizes = 251...131071

    /// Map values (`NODENET_MAGLEV_CHUNK` entries each) a table of `size` entries takes.
    public static func maglevChunks(size: Int) -> Int {
        (size + Int(NODENET_MAGLEV_CHUNK) - 1) / Int(NODENET_MAGLEV_CHUNK)
    }

    /// Whether `n` is prime (table sizes are small: trial division).
    public static func isPrime(_ n: Int) -> Bool {
        guard n >= 2 else { return false }
        var d = 2
        while d * d <= n {
            if n % d == 0 { return false }
            d += 1
        }
        return true
    }
}

/// Limits on the BPF datapath's connection-tracking table (262 144 entries, shared). A pod's
/// flows may hold a quarter of it and the flows opened from outside together half; within that
/// half each client outside (a source address) holds at most `outsideClientEntries`, so one host
/// cannot take the node ports from the others. A connection to a node port takes 2 entries (4
/// with a backend on another node), a connection from outside straight to a pod 1.
public struct ConntrackSettings: Sendable, Hashable {
    /// The entries one client outside may hold; 0 (the default): no limit of its own (only the
    /// outside's share). Off by default: a client's closed flows count until the agent's next
    /// collection removes them, so one client opening thousands of short connections (a node
    /// port with a remote backend: 4 entries a connection) would reach a limit like 16 384 within
    /// seconds at benchmark rates and be held back until then; and a node behind a load balancer
    /// that replaces the clients' addresses sees only a few of its own. Set it where single
    /// hosts outside should not be able to take the node ports from the others.
    public var outsideClientEntries: Int

    public init(outsideClientEntries: Int = Self.defaultOutsideClientEntries) {
        self.outsideClientEntries = outsideClientEntries
    }

    /// Off (see `outsideClientEntries`).
    public static let defaultOutsideClientEntries = 0
    /// What a spec may ask for: up to the outside's whole share.
    public static let outsideClientEntriesRange = 0...Int(NODENET_CT_QUOTA_OUTSIDE_MAX)
}

/// BIG TCP for IPv4 (Cilium's `enable-ipv4-big-tcp`) on the devices nodenet makes: the host
/// pair, each endpoint's veth and the pod's `eth0` take GSO and GRO packets of up to 192 KiB
/// instead of 64 KiB, so a pod's TCP stream is carried in a third as many packets. The native
/// device is the administrator's and nodenet never changes it.
public enum BigTCPMode: String, Sendable, Hashable, CaseIterable {
    /// On where the kernel has it (6.3+) and the native device already carries it (its
    /// `gso_ipv4_max_size` is 192 KiB or more), so a pod's large packets leave the node as they
    /// are; otherwise the kernel's 64 KiB.
    case auto
    /// On, and an error where the kernel or the native device does not carry it: a node whose
    /// native device is still at 64 KiB would cut the pods' large packets again on their way to
    /// other nodes (measured here: a quarter of the throughput between nodes).
    case on
    /// The kernel's 64 KiB on nodenet's devices.
    case off

    /// The GSO and GRO size BIG TCP sets (Cilium's: 192 KiB).
    public static let bigSize: UInt32 = 196_608
    /// The kernel's default.
    public static let defaultSize: UInt32 = 65_536
}

public enum LoadBalancerAlgorithm: String, Sendable, Hashable, CaseIterable {
    /// A backend at random (uniform).
    case random
    /// Maglev consistent hashing of the 5-tuple: the same backend for a flow on every node,
    /// and a backend change moves about its own share of flows only.
    case maglev
}

/// Where socket-level load balancing attaches: the cgroup (v2) whose processes' sockets have
/// service addresses translated at connect/sendmsg time.
public struct SocketLBSettings: Sendable, Hashable {
    /// Absolute path of a cgroup v2 directory; nil turns socket LB off (then pods' service
    /// traffic is translated per packet by from-container). A spec file that does not say
    /// otherwise gets the cgroup v2 root (all processes, as Cilium does); a spec built in
    /// Swift has it off unless a cgroup is named, so no test or embedding program attaches
    /// to a root cgroup by accident.
    public var cgroup: String?

    public init(cgroup: String? = nil) { self.cgroup = cgroup }

    public var enabled: Bool { cgroup != nil }
}

extension NodeSpec {
    /// Whether services are programmed: kube-proxy replacement on the BPF datapath.
    public var servicesEnabled: Bool { kubeProxyReplacement && datapath.mode == .bpf }
}

/// Remembers that a spec passed validation, so that a spec loaded with `NodeSpec.load` (which
/// validates) is not validated again by `NodeController`. It takes no part in equality or
/// hashing; it holds the hash of the spec as it was validated, so any later change to the
/// spec voids it.
struct SpecValidationMark: Sendable, Hashable {
    var validatedHash: Int?
    static func == (_: Self, _: Self) -> Bool { true }
    func hash(into hasher: inout Hasher) {}
}

extension NodeSpec {
    /// Whether this exact spec passed validation in this process.
    var isValidated: Bool { validation.validatedHash == hashValue }

    /// Records that this spec passed validation.
    mutating func markValidated() { validation.validatedHash = hashValue }
}
