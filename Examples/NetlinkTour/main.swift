// A short tour of the Netlink library, run against namespaces it makes itself (and always
// removes): a veth pair across two namespaces, addresses and routes from literals, a route read,
// changed and replaced with what the library does not model kept, the kernel's own words when it
// refuses, an owned namespace descriptor, and `delete(_:)` for every kind of object. Needs root;
// it never touches the namespace it runs in.
//
//     swift run netlink-tour
import Netlink

#if canImport(Glibc)
    import Glibc
#endif

func step(_ text: String) { print("• \(text)") }

let a = "tour-\(getpid())-a"
let b = "tour-\(getpid())-b"

func tour() throws {
    try NetworkNamespace.create(a)
    try NetworkNamespace.create(b)
    let sa = try NetlinkSocket(namespace: .named(a))
    let sb = try NetlinkSocket(namespace: .named(b))

    // A veth pair: `va` here, its peer `vb` made directly in the other namespace.
    try sa.add(
        LinkConfiguration(
            name: "va", kind: .veth(peer: VethPeer(name: "vb", namespace: .named(b))), mtu: 1500, up: true))
    try sb.setLink(named: "vb", LinkChange(up: true))
    guard let va = try sa.link(named: "va"), let vb = try sb.link(named: "vb") else { return }
    step("veth \(va.name) (\(va.index)) in \(a), its peer \(vb.name) (\(vb.index)) in \(b)")

    // Addresses and prefixes are literals; text from outside goes through a throwing init.
    try sa.add(InterfaceAddress(interfaceIndex: va.index, prefix: "10.77.0.1/24"))
    let fromUser = try IPPrefix(parsing: "10.77.0.2/24")
    try sb.add(InterfaceAddress(interfaceIndex: vb.index, prefix: fromUser))
    step("addresses: \(try sa.addresses(family: .inet, interfaceIndex: va.index).map(\.prefix))")

    // A route with a protocol of our own and an attribute the library has no field for
    // (RTA_FLOW, the realms): it travels in `unknownAttributes`.
    let realms = NetlinkAttribute(type: 11, payload: [0x03, 0x00, 0x05, 0x00][...])
    var route = Route(
        destination: "10.88.0.0/24", gateway: "10.77.0.2", interfaceIndex: va.index,
        protocol: RouteProtocol(rawValue: 207))
    route.unknownAttributes = [realms]
    try sa.add(route)
    // Read it back (filtered in the kernel), change the gateway, replace: the realms survive.
    let filter = RouteFilter(family: .inet, protocol: RouteProtocol(rawValue: 207))
    guard var read = try sa.routes(filter).first else { return }
    try sb.add(InterfaceAddress(interfaceIndex: vb.index, prefix: "10.77.0.3/24"))
    read.gateway = "10.77.0.3"
    try sa.replace(read)
    guard let replaced = try sa.routes(filter).first else { return }
    step(
        "route \(replaced.destination) via \(replaced.gateway.map { "\($0)" } ?? "-"), realms kept: "
            + "\(replaced.unknownAttributes.contains(realms))")

    // The kernel refuses: the error carries its own words (extended ACK) and what we were doing.
    do {
        try sa.add(Route(destination: "10.99.0.0/24", gateway: "192.0.2.1", interfaceIndex: va.index))
    } catch let error as NetlinkError {
        step("refused: \(error)")
    }

    // An owned descriptor: the namespace file stays open while the object lives (here, to move
    // a link into that namespace).
    try sa.add(LinkConfiguration(name: "vc", kind: .veth(peer: VethPeer(name: "vd"))))
    let namespaceB: FileDescriptor = try NetworkNamespace.open(.named(b))
    guard let vc = try sa.link(named: "vc") else { return }
    _ = try sa.execute(LinkChange().request(index: vc.index, namespace: namespaceB))
    step("vc moved through \(namespaceB) into \(b): \(try sb.link(named: "vc") != nil)")

    // One `delete(_:)` for every object: a route, an address, a link by value or by name.
    try sa.delete(replaced)
    try sb.delete(InterfaceAddress(interfaceIndex: vb.index, prefix: "10.77.0.3/24"))
    try sb.delete(.link(named: "vc"))
    try sa.delete(va)
    step("deleted: routes \(try sa.routes(filter).count), links in \(b) \(try sb.links().map(\.name))")
}

var failed = false
do {
    try tour()
} catch {
    print("netlink-tour: \(error)")
    failed = true
}
for namespace in [a, b] { try? NetworkNamespace.delete(namespace) }
exit(failed ? 1 : 0)
