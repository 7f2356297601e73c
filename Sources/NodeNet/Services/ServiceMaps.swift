import BPF
import CNodeNetBPF
import Foundation

/// Slot 0 of a frontend in the services map.
public struct FrontendMaster: Sendable, Equatable {
    public var count: UInt16
    public var id: UInt16
    public var flags: UInt8
}

/// A frontend as the maps should hold it: its id, flags and backend ids in slot order.
public struct FrontendEntry: Sendable, Equatable {
    public var id: UInt16
    public var flags: UInt8
    public var backendIDs: [UInt32]
}

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
    /// The native device's ifindex (masquerading applies to traffic leaving through it); set
    /// by the planner from the kernel, 0 when unknown.
    public var nativeIfindex: UInt32 = 0

    public var description: String {
        var on: [String] = []
        if services { on.append("services") }
        if packetLB { on.append("per-packet service translation") }
        if masquerade { on.append("masquerade to \(nodeIP) outside \(nativeCIDR?.description ?? "-") via ifindex \(nativeIfindex)") }
        return on.isEmpty ? "node \(nodeIP), all off" : "node \(nodeIP), " + on.joined(separator: ", ")
    }

    var c: nodenet_config {
        var c = nodenet_config()
        c.router_ip = routerIP.ipv4Value!.bigEndian
        c.node_ip = nodeIP.ipv4Value!.bigEndian
        if let nativeCIDR {
            let mask: UInt32 = nativeCIDR.length == 0 ? 0 : ~UInt32(0) << (32 - UInt32(nativeCIDR.length))
            c.native_mask = mask.bigEndian
            c.native_cidr = (nativeCIDR.address.ipv4Value! & mask).bigEndian
        }
        c.flags = (services ? UInt32(NODENET_CONFIG_SERVICES) : 0) | (packetLB ? UInt32(NODENET_CONFIG_PACKET_LB) : 0)
            | (masquerade && nativeCIDR != nil ? UInt32(NODENET_CONFIG_MASQUERADE) : 0)
            | (nativeCIDR != nil ? UInt32(NODENET_CONFIG_NATIVE_CIDR) : 0)
        c.native_ifindex = nativeIfindex
        return c
    }

    init(_ c: nodenet_config) {
        routerIP = IPAddress(ipv4: UInt32(bigEndian: c.router_ip))
        nodeIP = IPAddress(ipv4: UInt32(bigEndian: c.node_ip))
        services = c.flags & UInt32(NODENET_CONFIG_SERVICES) != 0
        packetLB = c.flags & UInt32(NODENET_CONFIG_PACKET_LB) != 0
        masquerade = c.flags & UInt32(NODENET_CONFIG_MASQUERADE) != 0
        let mask = UInt32(bigEndian: c.native_mask)
        nativeCIDR = c.flags & UInt32(NODENET_CONFIG_NATIVE_CIDR) != 0
            ? IPPrefix(IPAddress(ipv4: UInt32(bigEndian: c.native_cidr)), length: mask.nonzeroBitCount) : nil
        nativeIfindex = c.native_ifindex
    }

    init(spec: NodeSpec) {
        routerIP = spec.node.routerIP
        nodeIP = spec.node.address
        services = spec.servicesEnabled
        packetLB = spec.servicesEnabled && !spec.socketLB.enabled
        masquerade = spec.masquerade && spec.nativeRoutingCIDR != nil
        nativeCIDR = spec.nativeRoutingCIDR
    }
}

/// What the node's service maps hold (read from its pins), decoded.
public struct ObservedServices: Sendable, Equatable {
    public var masters: [FrontendKey: FrontendMaster] = [:]
    /// Backend slots (1...) by frontend, including slots beyond the count.
    public var slots: [FrontendKey: [UInt16: UInt32]] = [:]
    public var backends: [UInt32: BackendAddress] = [:]
    public var revnat: [UInt16: FrontendKey] = [:]
    public var nodes: [IPAddress: UInt32] = [:]
    public var settings: NodeSettings?

    public init() {}

    /// The frontend as it is, when it is complete and consistent (slot 0, slots 1...count and
    /// nothing beyond); nil otherwise.
    public func entry(_ key: FrontendKey) -> FrontendEntry? {
        guard let master = masters[key] else { return nil }
        let slots = self.slots[key] ?? [:]
        guard slots.count == Int(master.count), master.count == 0 || (1...master.count).allSatisfy({ slots[$0] != nil }) else { return nil }
        return FrontendEntry(id: master.id, flags: master.flags, backendIDs: master.count == 0 ? [] : (1...master.count).map { slots[$0]! })
    }

    /// Every frontend key with anything in the services map.
    public var frontendKeys: Set<FrontendKey> { Set(masters.keys).union(slots.keys) }

    /// The snapshot of one frontend, for undo.
    func snapshot(_ key: FrontendKey) -> FrontendSnapshot? {
        let master = masters[key], slots = self.slots[key] ?? [:]
        if master == nil && slots.isEmpty { return nil }
        return FrontendSnapshot(master: master, slots: slots)
    }

    /// Reads the service maps pinned in `directory`; empty when nothing is pinned yet.
    static func read(bpffsDirectory directory: String) throws -> ObservedServices {
        var result = ObservedServices()
        if let map = try BPFMap<nodenet_service_key, nodenet_service>.pinned(at: "\(directory)/nodenet_services") {
            for (k, v) in try map.entries() {
                guard let key = FrontendKey(k) else { continue }
                if k.slot == 0 {
                    result.masters[key] = FrontendMaster(count: v.count, id: v.id, flags: v.flags)
                } else {
                    result.slots[key, default: [:]][k.slot] = v.backend_id
                }
            }
        }
        if let map = try BPFMap<UInt32, nodenet_backend>.pinned(at: "\(directory)/nodenet_backends") {
            for (id, v) in try map.entries() {
                guard let proto = TransportProtocol(ipProtocol: v.proto) else { continue }
                result.backends[id] = BackendAddress(address: IPAddress(ipv4: UInt32(bigEndian: v.address)), port: UInt16(bigEndian: v.port), protocol: proto)
            }
        }
        if let map = try BPFMap<UInt32, nodenet_revnat>.pinned(at: "\(directory)/nodenet_revnat") {
            for (id, v) in try map.entries() {
                guard let proto = TransportProtocol(ipProtocol: v.proto), id <= UInt32(UInt16.max) else { continue }
                result.revnat[UInt16(id)] = FrontendKey(address: IPAddress(ipv4: UInt32(bigEndian: v.address)), port: UInt16(bigEndian: v.port), protocol: proto)
            }
        }
        if let map = try BPFMap<nodenet_node_key, nodenet_node>.pinned(at: "\(directory)/nodenet_nodes") {
            for (k, v) in try map.entries() { result.nodes[IPAddress(ipv4: UInt32(bigEndian: k.address))] = v.flags }
        }
        if let map = try BPFMap<UInt32, nodenet_config>.pinned(at: "\(directory)/nodenet_settings"), let c = try map.lookup(0), c.node_ip != 0 {
            result.settings = NodeSettings(c)
        }
        return result
    }
}

/// A frontend's entries exactly as they were (undo).
struct FrontendSnapshot: Sendable, Equatable {
    var master: FrontendMaster?
    var slots: [UInt16: UInt32]
}

// MARK: C layouts

extension FrontendKey {
    init?(_ k: nodenet_service_key) {
        guard let proto = TransportProtocol(ipProtocol: k.proto) else { return nil }
        self.init(address: IPAddress(ipv4: UInt32(bigEndian: k.address)), port: UInt16(bigEndian: k.port), protocol: proto)
    }

    func c(slot: UInt16) -> nodenet_service_key {
        var k = nodenet_service_key()
        k.address = address.ipv4Value!.bigEndian
        k.port = port.bigEndian
        k.proto = `protocol`.ipProtocol
        k.slot = slot
        return k
    }

    var revnat: nodenet_revnat {
        var v = nodenet_revnat()
        v.address = address.ipv4Value!.bigEndian
        v.port = port.bigEndian
        v.proto = `protocol`.ipProtocol
        return v
    }
}

extension BackendAddress {
    var c: nodenet_backend {
        var v = nodenet_backend()
        v.address = address.ipv4Value!.bigEndian
        v.port = port.bigEndian
        v.proto = `protocol`.ipProtocol
        return v
    }
}

extension FrontendMaster {
    var c: nodenet_service {
        var v = nodenet_service()
        v.count = count
        v.id = id
        v.flags = flags
        return v
    }
}

func slotValue(_ backendID: UInt32) -> nodenet_service {
    var v = nodenet_service()
    v.backend_id = backendID
    return v
}

/// The node's service maps, opened from its loaded objects, with the writes apply makes.
final class ServiceMaps {
    /// The pinned maps apply writes (checked for layout changes before they are read).
    static let names: Set<String> = ["nodenet_services", "nodenet_backends", "nodenet_revnat", "nodenet_nodes", "nodenet_settings"]

    let services: BPFMap<nodenet_service_key, nodenet_service>
    let backends: BPFMap<UInt32, nodenet_backend>
    let revnat: BPFMap<UInt32, nodenet_revnat>
    let nodes: BPFMap<nodenet_node_key, nodenet_node>
    let settings: BPFMap<UInt32, nodenet_config>

    /// The maps pinned in `directory`; nil unless all of them are.
    init?(pinnedIn directory: String) throws {
        guard let services = try BPFMap<nodenet_service_key, nodenet_service>.pinned(at: "\(directory)/nodenet_services"),
              let backends = try BPFMap<UInt32, nodenet_backend>.pinned(at: "\(directory)/nodenet_backends"),
              let revnat = try BPFMap<UInt32, nodenet_revnat>.pinned(at: "\(directory)/nodenet_revnat"),
              let nodes = try BPFMap<nodenet_node_key, nodenet_node>.pinned(at: "\(directory)/nodenet_nodes"),
              let settings = try BPFMap<UInt32, nodenet_config>.pinned(at: "\(directory)/nodenet_settings")
        else { return nil }
        (self.services, self.backends, self.revnat, self.nodes, self.settings) = (services, backends, revnat, nodes, settings)
    }

    init(_ object: BPFObject) throws {
        services = try object.map(named: "nodenet_services", key: nodenet_service_key.self, value: nodenet_service.self)
        backends = try object.map(named: "nodenet_backends", key: UInt32.self, value: nodenet_backend.self)
        revnat = try object.map(named: "nodenet_revnat", key: UInt32.self, value: nodenet_revnat.self)
        nodes = try object.map(named: "nodenet_nodes", key: nodenet_node_key.self, value: nodenet_node.self)
        settings = try object.map(named: "nodenet_settings", key: UInt32.self, value: nodenet_config.self)
    }

    /// Make-before-break: the revnat entry and the new backend slots first, then slot 0
    /// (the count readers choose from), then slots beyond the new count go.
    func put(_ key: FrontendKey, _ entry: FrontendEntry, previousSlots: [UInt16: UInt32]) throws {
        try revnat.update(UInt32(entry.id), key.revnat)
        for (i, id) in entry.backendIDs.enumerated() where previousSlots[UInt16(i + 1)] != id {
            try services.update(key.c(slot: UInt16(i + 1)), slotValue(id))
        }
        try services.update(key.c(slot: 0), FrontendMaster(count: UInt16(entry.backendIDs.count), id: entry.id, flags: entry.flags).c)
        for slot in previousSlots.keys where Int(slot) > entry.backendIDs.count {
            try services.delete(key.c(slot: slot))
        }
    }

    /// Slot 0 first (no new choices), then the slots.
    func remove(_ key: FrontendKey, slots: [UInt16: UInt32]) throws {
        try services.delete(key.c(slot: 0))
        for slot in slots.keys.sorted() { try services.delete(key.c(slot: slot)) }
    }

    /// Puts a frontend back exactly as `snapshot` (nil: absent).
    func restore(_ key: FrontendKey, _ snapshot: FrontendSnapshot?, currentSlots: [UInt16: UInt32]) throws {
        guard let snapshot else { return try remove(key, slots: currentSlots) }
        for (slot, id) in snapshot.slots { try services.update(key.c(slot: slot), slotValue(id)) }
        if let master = snapshot.master { try services.update(key.c(slot: 0), master.c) } else { try services.delete(key.c(slot: 0)) }
        for slot in currentSlots.keys where snapshot.slots[slot] == nil { try services.delete(key.c(slot: slot)) }
    }
}
