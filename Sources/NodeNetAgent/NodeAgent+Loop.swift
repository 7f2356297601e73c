import Foundation
import Logging

#if canImport(Glibc)
    import NodeNet
#endif

/// What the agent's loop carries from one trigger to the next.
struct AgentLoop {
    var node: RunningNode
    /// The spec file as last taken (in cluster mode `node.spec` is it merged with etcd's view).
    var fileSpec: NodeSpec
    /// The spec file's stamp as last checked (it moves on when a reload is rejected too).
    var stamp: FileStamp
    let clusterLink: NodeAgent.ClusterLink?
    /// What the netlink monitor's events are checked against (ours or not), kept with the spec.
    let owned: OwnedBox
    /// When the last full reconcile started: an event from before it was seen by it.
    var lastStart = ContinuousClock.now
    var stopping = false

    var controller: NodeController { node.controller }
}

/// The agent's start (its endpoint store, its event sources) and its loop's answer to each
/// trigger.
extension NodeAgent {
    /// The node's endpoint store, rebuilt from the ledger when it cannot be trusted (never a
    /// reason not to start: the node would go unmanaged), with the deletions `nodenet-cni DEL`
    /// recorded while no agent answered done.
    func loadEndpointStore(for spec: NodeSpec, log: Logger) throws -> EndpointStore {
        let loaded = EndpointStore.loadRecovering(
            stateDirectory: spec.stateDirectory, node: spec.node.name, podCIDR: spec.node.podCIDR,
            specPods: spec.pods)
        var endpoints = loaded.store
        if let warning = loaded.warning {
            log.warning("the endpoint store was rebuilt", metadata: ["why": "\(warning)"])
            state.with { $0.storeWarning = "endpoint store rebuilt: \(warning)" }
        }
        if let pruned = endpoints.droppingVanishedRecovered() {
            endpoints = pruned
            try endpoints.save()
        }
        let recorded = EndpointStore.recordedDeletions(stateDirectory: spec.stateDirectory)
        for name in recorded.ignored {
            log.warning("ignoring a file that is not a recorded deletion", metadata: ["file": "\(name)"])
        }
        for attachment in recorded.attachments {
            if let removed = endpoints.remove(attachment) {
                log.info(
                    "completing a deletion recorded while the agent was down",
                    metadata: ["attachment": "\(attachment)", "pod": "\(removed.pod.id)"])
            }
        }
        if !recorded.attachments.isEmpty { try endpoints.save() }
        for attachment in recorded.attachments {
            EndpointStore.clearRecordedDeletion(attachment, stateDirectory: spec.stateDirectory)
        }
        return endpoints
    }

    /// The tasks that feed the loop besides the endpoint API, the cluster link and `stop()` or
    /// `reload(reason:)`: the netlink
    /// monitor's events about what the agent owns, the periodic re-plan, the BPF audit's pace
    /// and the spec file's changes.
    func eventSources(
        monitor: NetlinkMonitor, deviceNames: NetlinkSocket, owned: OwnedBox, stamp: FileStamp
    ) -> [Task<Void, Never>] {
        [
            Task { [continuation, logger] in
                let log = logger("monitor")
                for await event in monitor {
                    if case .overrun = event {
                        log.warning("netlink monitor overran; re-planning")
                        continuation.yield(.event("monitor overrun", at: .now))
                    } else if case .undecodable(_, let error) = event {
                        log.warning("netlink monitor error; re-planning", metadata: ["error": "\(error)"])
                        continuation.yield(.event("monitor error", at: .now))
                    } else if case .trafficControl(let index, let parent) = event {
                        // Our filters on pods' devices (clsact) have no pin to audit: their changes
                        // come as events. Only the clsact qdisc and its ingress filters are ours
                        // (a chained plugin's root qdisc is not); a device already gone has its
                        // link event.
                        guard parent == 0xFFFF_FFF1 || parent == 0xFFFF_FFF2 else { continue }
                        do {
                            if let name = try deviceNames.link(interfaceIndex: index)?.name,
                                owned.value.owns(device: name)
                            {
                                continuation.yield(
                                    .event("tc ingress changed on \(name)", at: .now, subject: .link(name)))
                            }
                        } catch {
                            log.warning("cannot name a tc event's device; re-planning", metadata: ["error": "\(error)"])
                            continuation.yield(.event("tc ingress changed on ifindex \(index)", at: .now))
                        }
                    } else if let reason = owned.value.concerns(event) {
                        continuation.yield(.event(reason, at: .now, subject: EventSubject(event)))
                    }
                }
                if !Task.isCancelled {
                    log.error("netlink monitor stopped; only the periodic re-plan repairs drift now")
                }
            },
            Task { [continuation, options] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: options.resyncInterval)
                    continuation.yield(.resync)
                }
            },
            Task { [continuation, interval = options.bpfAuditInterval, lastAuditCost] in
                guard let interval else { return }
                while !Task.isCancelled {
                    // (At most a minute: one audit slowed by a stalled machine does not stop them.)
                    let paced = min(lastAuditCost.duration * Self.auditPace, .seconds(60))
                    try? await Task.sleep(for: max(interval, paced))
                    continuation.yield(.audit)
                }
            },
            Task { [continuation, options] in
                var last = stamp
                while !Task.isCancelled {
                    try? await Task.sleep(for: options.specCheckInterval)
                    let now = FileStamp(options.specPath)
                    if now != last {
                        last = now
                        continuation.yield(.reload("spec file changed"))
                    }
                }
            },
        ]
    }

    /// The loop's answer to one trigger.
    func respond(to trigger: Trigger, _ loop: inout AgentLoop) async {
        if loop.stopping {
            refusePendingEndpoints("the agent is stopping")
            return
        }
        let spec = loop.node.spec
        switch trigger {
        case .endpoints:
            let requests = takePendingEndpoints()
            guard !requests.isEmpty else { return }
            if let fullReconcileAt = await handle(requests, in: &loop.node) { loop.lastStart = fullReconcileAt }
            loop.owned.value = OwnershipFilter(spec: loop.controller.spec, device: spec.node.device)
        case .cluster(let reason):
            await adoptClusterView(reason, &loop)
        case .stop:
            logger("agent").info("stopping; the datapath stays as it is")
            // Endpoint requests still queued get an answer (the runtime retries them).
            state.with { $0.acceptingEndpoints = false }
            loop.stopping = true
            continuation.finish()
            refusePendingEndpoints("the agent is stopping")
        case .resync:
            // Recovered endpoints no DEL can name go with their network namespace.
            if let pruned = loop.node.endpoints.droppingVanishedRecovered(),
                let error = loop.node.adopt(pruned, agent: self)
            {
                logger("agent").warning(
                    "cannot drop recovered endpoints whose namespace went", metadata: ["error": "\(error)"])
            }
            loop.lastStart = .now
            let report = await reconcile(loop.controller, cause: .resync, reason: "periodic re-plan", eventAt: nil)
            recordDatapathRepair(report, cause: .resync, spec: spec)
            if spec.datapath.mode == .bpf { collectConntrack(spec) }
        case .audit:
            guard spec.datapath.mode == .bpf, let drift = await audit(loop.controller) else { return }
            loop.lastStart = .now
            let report = await reconcile(
                loop.controller, cause: .audit, reason: "bpf audit: \(drift.first!)", eventAt: .now)
            recordDrift(drift, repaired: report?.verified == true, spec: spec)
        case .event(let reason, let at, let subject):
            // A reconcile that started after this event already saw its effect, and so did the
            // reading that last found the node converged (the events of the reconcile's own
            // changes that carry no socket's id: links, device settings).
            guard at >= loop.lastStart, at >= state.with({ $0.convergedAt }) ?? at else { return }
            // So did an endpoint change that verified what the event is about.
            if let subject, let verifiedAt = state.with({ $0.ownChanges[subject] }), at <= verifiedAt { return }
            loop.lastStart = .now
            let report = await reconcile(loop.controller, cause: .event, reason: reason, eventAt: at)
            recordDatapathRepair(report, cause: .event, spec: spec)
        case .reload(let reason):
            await reloadSpec(reason, &loop)
        }
    }

    /// The cluster's view changed: merged into the spec file's, and reconciled when that
    /// changes the node's spec.
    private func adoptClusterView(_ reason: String, _ loop: inout AgentLoop) async {
        state.with { $0.clusterPending = false }
        guard let link = loop.clusterLink else { return }
        let spec = loop.node.spec
        let view = link.view
        let merged = loop.fileSpec.merging(view)
        let skippedBefore = state.with { box in
            defer { box.clusterSkipped = merged.skipped }
            return box.clusterSkipped
        }
        if merged.skipped != skippedBefore {
            for line in merged.skipped where !skippedBefore.contains(line) {
                logger("cluster").warning("cluster record left out", metadata: ["why": "\(line)"])
            }
        }
        saveClusterCache(view, stateDirectory: spec.stateDirectory)
        guard merged.spec != spec else { return }
        do {
            try loop.node.adopt(merged.spec, agent: self)
            loop.owned.value = OwnershipFilter(spec: loop.controller.spec, device: spec.node.device)
            logger("cluster").info(
                "cluster changed",
                metadata: [
                    "why": "\(reason)", "nodes": "\(merged.spec.nodes.count)",
                    "services": "\(merged.spec.services.count)",
                ])
            loop.lastStart = .now
            await reconcile(loop.controller, cause: .cluster, reason: reason, eventAt: nil)
        } catch {
            logger("cluster").error(
                "the cluster's state could not be taken; keeping the running one",
                metadata: ["why": "\(reason)", "error": "\(error)"])
        }
    }

    /// The spec file changed (or SIGHUP): taken when it is valid and changes nothing the
    /// running agent cannot change, else the running spec is kept and the reason logged.
    private func reloadSpec(_ reason: String, _ loop: inout AgentLoop) async {
        let current = FileStamp(options.specPath)
        if reason == "spec file changed" && current == loop.stamp { return }
        loop.stamp = current
        let spec = loop.node.spec
        let fileSpec = loop.fileSpec
        do {
            let nextFile = try NodeSpec.load(path: options.specPath)
            guard nextFile.cluster == fileSpec.cluster else {
                throw NodeNetError.state("the cluster section cannot change under a running agent; restart it")
            }
            // The node's registration and CIDR claim in etcd say what it was started with.
            guard
                fileSpec.cluster == nil
                    || (nextFile.node.address == fileSpec.node.address
                        && nextFile.node.podCIDR == fileSpec.node.podCIDR)
            else {
                throw NodeNetError.state(
                    "in cluster mode node.address and node.podCIDR cannot change under a running agent (they are registered in etcd); restart it"
                )
            }
            let next = loop.clusterLink.map { nextFile.merging($0.view).spec } ?? nextFile
            guard next != spec else {
                logger("spec").info("spec unchanged", metadata: ["reason": "\(reason)"])
                return
            }
            // The lock, the ledger and the endpoint store live in the state directory:
            // moving it under a running agent would leave them behind.
            guard next.stateDirectory == spec.stateDirectory, next.node.name == spec.node.name,
                next.node.podCIDR == spec.node.podCIDR || loop.node.endpoints.endpoints.isEmpty
            else {
                throw NodeNetError.state(
                    "node.name, stateDirectory and (with CNI endpoints) node.podCIDR cannot change under a running agent; restart it"
                )
            }
            try loop.node.adopt(next, agent: self)
            loop.fileSpec = nextFile
            loop.owned.value = OwnershipFilter(spec: loop.controller.spec, device: next.node.device)
            metrics.specReloads.increment()
            logger("spec").info(
                "spec reloaded",
                metadata: ["reason": "\(reason)", "pods": "\(next.pods.count)", "nodes": "\(next.nodes.count)"])
            loop.lastStart = .now
            await reconcile(loop.controller, cause: .reload, reason: reason, eventAt: nil)
        } catch let error as SpecError {
            metrics.specReloadErrors.increment()
            logger("spec").error(
                "new spec rejected; keeping the running one",
                metadata: [
                    "reason": "\(reason)",
                    "problems": "\(error.problems.map(\.description).joined(separator: "; "))",
                ])
        } catch {
            metrics.specReloadErrors.increment()
            logger("spec").error(
                "new spec rejected; keeping the running one",
                metadata: ["reason": "\(reason)", "error": "\(error)"])
        }
    }
}
