import BPF
import Testing

@testable import NodeNet

/// The bpffs layout is the one owner of pin names: these pin its shapes down as literals.
@Suite struct BPFFSLayoutTests {
    let layout = BPFFSLayout(directory: "/sys/fs/bpf/nodenet/worker2")

    @Test func everyMapTheEmbeddedObjectsDeclareIsListed() throws {
        // Reading the objects' ELF needs no privileges; a map declared in bpf/ but missing from
        // BPFFSLayout.Map fails here (and would otherwise be left out of migrations).
        var declared: Set<String> = []
        for object in DatapathObjects.objectNames {
            declared.formUnion(try BPFMapShape.declared(inEmbedded: object).keys)
        }
        #expect(declared == Set(BPFFSLayout.Map.allCases.map(\.rawValue)))
        #expect(throws: Never.self) { try DatapathObjects.declaredShapes.get() }
    }

    @Test func pathsAndNames() {
        #expect(layout.path(.endpoints) == "/sys/fs/bpf/nodenet/worker2/nodenet_endpoints")
        #expect(layout.setAsidePath(.services) == "/sys/fs/bpf/nodenet/worker2/nodenet_services_old")
        #expect(layout.tcxLinkPath("x") == "/sys/fs/bpf/nodenet/worker2/links/x")
        #expect(layout.socketLinkPath("x") == "/sys/fs/bpf/nodenet/worker2/sock/x")
        let name = BPFFSLayout.tcxLinkName(.fromContainer, device: "lxc0123456789ab", ifindex: 7)
        #expect(name.hasPrefix("from-container@lxc0123456789ab@7@") && name.split(separator: "@").count == 4)
        #expect(BPFFSLayout.parseTCXLinkName(name)?.device == "lxc0123456789ab")
        #expect(BPFFSLayout.parseTCXLinkName(name)?.ifindex == 7)
        #expect(
            BPFFSLayout.isTCXLink(
                "from-container@lxc0123456789ab@7@00000000", of: .fromContainer, device: "lxc0123456789ab", ifindex: 7))
        #expect(
            !BPFFSLayout.isTCXLink(
                "from-container@lxc0123456789ab@70@00000000", of: .fromContainer, device: "lxc0123456789ab", ifindex: 7)
        )
        #expect(BPFFSLayout.parseTCXLinkName("from-container@lxc0@x@0") == nil, "ifindex must be a number")
        #expect(BPFFSLayout.isSocketLinkName("connect4@4242@0000"))
        #expect(!BPFFSLayout.isSocketLinkName("connect9@4242@0000") && !BPFFSLayout.isSocketLinkName("connect4@x@0000"))
        #expect(BPFFSLayout.isSocketLink("sendmsg4@4242@ffff", of: .sendmsg4, cgroupID: 4242))
        #expect(BPFFSLayout.setAsideName(.backends) == "nodenet_backends_old")
    }
}
