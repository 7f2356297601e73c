// A short tour of the Netlink library: what `ip -br link`, `ip -br addr` and
// `ip route show proto 207` print, read over rtnetlink with typed messages. Read-only: it
// changes nothing. Run it in a namespace of your own to see a lab node:
//
//     swift run netlink-tour [NETNS]       # e.g. netlink-tour nnl-seed-n-worker2
import Netlink

#if canImport(Glibc)
    import Glibc
#endif

let arguments = CommandLine.arguments.dropFirst()
let namespace: NamespaceReference = arguments.first.map { NamespaceReference($0) } ?? .current

do {
    let socket = try NetlinkSocket(namespace: namespace)
    let links = try socket.links()
    let names = Dictionary(links.map { ($0.index, $0.name) }, uniquingKeysWith: { a, _ in a })
    print("links in \(namespace):")
    for link in links.sorted(by: { $0.index < $1.index }) {
        let state = link.isUp ? "UP" : "DOWN"
        print("  \(link.index): \(link.name) \(link.kind ?? "-") \(state) mtu \(link.mtu.map(String.init) ?? "?")")
    }
    print("IPv4 addresses:")
    for address in try socket.addresses(family: .inet) {
        print("  \(names[address.interfaceIndex] ?? "if\(address.interfaceIndex)") \(address.prefix)")
    }
    // Filtered in the kernel (strict checking): only routes carrying nodenet's protocol.
    let owned = try socket.routes(
        RouteFilter(family: .inet, table: RouteTable.main, protocol: RouteProtocol(rawValue: 207)))
    print("routes of protocol 207 (nodenet): \(owned.count)")
    for route in owned {
        let via = route.gateway.map { " via \($0)" } ?? ""
        print("  \(route.destination)\(via) dev \(route.interfaceIndex.flatMap { names[$0] } ?? "?")")
    }
} catch let error as NetlinkError {
    // The kernel's own words (extended ACK) and what we were doing.
    print("netlink-tour: \(error)")
    exit(1)
}
