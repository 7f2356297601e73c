import BPF
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Endpoint map entries, attached programs and the node's pins, one change at a time.
final class DatapathExecutor: ChangeExecutor {
    private let context: ApplyContext
    /// Maps this apply set aside: when the endpoints map is one of them, entries go into a new
    /// map that rollback drops whole (its entries are not undone one by one, so a program
    /// still using it is never left with an emptied map).
    private var setAside: Set<BPFFSLayout.Map> = []

    init(context: ApplyContext) { self.context = context }

    func run(_ changes: DomainChanges<DatapathChange>, undo: inout [UndoStep]) throws {
        for (i, change) in changes.enumerated() {
            do { try execute(change, undo: &undo) } catch { throw ChangeFailure(index: i, error: error) }
        }
    }

    private var node: NetlinkSocket { context.session.node }
    private var layout: BPFFSLayout { context.bpffs }

    private func execute(_ change: DatapathChange, undo: inout [UndoStep]) throws {
        switch change {
        case .putEndpointEntry(let ip, let hostDevice, let netns, let previous):
            guard let host = try node.link(named: hostDevice), let mac = host.address else {
                throw NodeNetError.missing("\(hostDevice) does not exist")
            }
            guard let pod = try context.session.podSocket(netns).link(named: NodeNetNames.podDevice),
                let podMAC = pod.address
            else {
                throw NodeNetError.missing("eth0 does not exist in \(netns)")
            }
            let entry = EndpointEntry(ifindex: host.index.unsigned, hostMAC: mac, podMAC: podMAC)
            try context.loadedDatapath().endpoints.update(EndpointEntry.key(ip), entry.mapValue)
            if !setAside.contains(.endpoints) { undo.append(restoreEntry(ip, previous)) }
        case .deleteEndpointEntry(let ip, let previous):
            try context.loadedDatapath().endpoints.delete(EndpointEntry.key(ip))
            undo.append(restoreEntry(ip, previous))
        case .attachProgram(let device, let program, let replacing):
            guard let link = try node.link(named: device) else {
                throw NodeNetError.missing("\(device) does not exist")
            }
            if context.attachModes.mode(for: program) == .tcx {
                try attachTCX(program, on: link, replacing: replacing, undo: &undo)
            } else {
                try attachFilter(program, on: link, replacing: replacing, undo: &undo)
            }
        case .detachProgram(let device, let priority, let handle):
            guard let link = try node.link(named: device) else { return }
            try node.delete(
                .filter(interfaceIndex: link.index, direction: .ingress, priority: priority, handle: handle))
            undo.append(.irreversible("a program was detached from \(device)"))
        case .unpinLink(let name):
            try BPFPin.remove(layout.tcxLinkPath(name))
            undo.append(.irreversible("tcx link \(name) was removed"))
        case .setAsideMaps(let maps):
            for map in maps {
                let (path, aside) = (layout.path(map), layout.setAsidePath(map))
                try BPFPin.move(from: path, to: aside)
                undo.append(
                    UndoStep("restoring \(path)") {
                        unlink(path)
                        try BPFPin.move(from: aside, to: path)
                    })
                setAside.insert(map)
            }
        case .dropSetAsideMaps(let maps):
            for map in maps {
                let path = layout.setAsidePath(map)
                // Keep the map (the previous programs' fds reference it anyway) to pin it back on rollback.
                let held = try BPFPin.open(path)
                try BPFPin.remove(path)
                if let held {
                    undo.append(
                        UndoStep("pinning \(path) again") {
                            unlink(path)
                            try BPFPin.pin(fd: held.fd, at: path)
                        })
                }
            }
        case .dropFormerDirectory(let former):
            former.removeOwnedPins()
            undo.append(.irreversible("nodenet's pins in the former bpffs directory \(former.directory) were removed"))
        }
    }

    private func restoreEntry(_ ip: IPAddress, _ entry: EndpointEntry?) -> UndoStep {
        UndoStep("restoring endpoint map entry \(ip)") { [context] in
            let map = try context.loadedDatapath().endpoints
            if let entry {
                try map.update(EndpointEntry.key(ip), entry.mapValue)
            } else {
                try map.delete(EndpointEntry.key(ip))
            }
        }
    }

    private func attachTCX(_ program: DatapathProgram, on link: Link, replacing: Bool, undo: inout [UndoStep]) throws {
        try BPFFS.prepare(layout.tcxLinkDirectory)
        let path = layout.tcxLinkPath(BPFFSLayout.tcxLinkName(program, device: link.name, ifindex: link.index))
        let fd = try context.loadedDatapath().programFD(program)
        if replacing,
            let old = layout.tcxLinks().first(where: {
                BPFFSLayout.isTCXLink($0, of: program, device: link.name, ifindex: link.index)
            })
        {
            try context.replaceLinkProgram(pinnedAt: layout.tcxLinkPath(old), with: fd, renamingTo: path, undo: &undo)
        } else {
            try NetworkNamespace.run(in: context.session.namespace) {
                try TCXLink.attachIngress(programFD: fd, ifindex: link.index.rawValue, pinAt: path)
            }
            undo.append(.unpin(path))
        }
    }

    private func attachFilter(_ program: DatapathProgram, on link: Link, replacing: Bool, undo: inout [UndoStep]) throws
    {
        let node = self.node
        do {
            try node.addClsact(interfaceIndex: link.index)
            // Only when this apply added it (EEXIST: it was there).
            undo.append(
                UndoStep("deleting the clsact qdisc added to link \(link.index)") {
                    do {
                        try node.delete(.clsact(interfaceIndex: link.index))
                    } catch let e as NetlinkError
                        where e.errno == .noSuchDevice || e.errno == .invalidArgument
                        || e.errno == .noSuchFileOrDirectory
                    {
                        // the device (or the qdisc) is gone already
                    }
                })
        } catch let e as NetlinkError where e.errno == .exists {}
        let filter = BPFFilterConfiguration(
            interfaceIndex: link.index, direction: .ingress, programFD: try context.loadedDatapath().programFD(program),
            name: program.filterName, priority: program.priority, handle: program.handle)
        let removeFilter = filter.deleteRequest
        let removeStep = UndoStep("\(removeFilter.context) [node]") { try node.execute(removeFilter) }
        guard replacing else {
            try node.add(filter)
            undo.append(removeStep)
            return
        }
        // Hold the program the filter runs now (from the dump), to put it back on rollback.
        let current = try node.filters(interfaceIndex: link.index, direction: .ingress)
            .first { $0.priority == program.priority && $0.handle == program.handle }?.bpf
        let previous = try current?.programID.map { try BPFProgramHandle(id: $0) }
        try node.replace(filter)
        guard let previous, let current else { return undo.append(removeStep) }
        var back = filter
        back.programFD = previous.fd
        back.name = current.name ?? "nodenet-previous"
        undo.append(
            UndoStep("putting the previous program \(back.name) back on link \(link.index)") {
                // The filter takes the program by fd: hold it until then.
                try withExtendedLifetime(previous) { try node.replace(back) }
            })
    }
}
