import NodeNet
import Prometheus

/// The agent's Prometheus metrics (prefix `nodenet_`).
public final class AgentMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let reconciles: [ReconcileCause: Counter]
    let reconcileFailures: Counter
    let reconcileDuration: DurationHistogram
    let repairDuration: DurationHistogram
    let kernelErrors: Counter
    let specReloads: Counter
    let specReloadErrors: Counter
    let bpfAudits: Counter
    let bpfAuditDrift: Counter
    let endpoints: Gauge
    let remoteNodes: Gauge
    let services: Gauge
    let backends: Gauge
    let healthy: Gauge
    let frontends: Gauge
    let conntrackEntries: Gauge
    let conntrackCollected: Counter

    private let repairsByKind: [ChangeKind: Counter]

    public init() {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        func counter(_ name: String, _ help: String) -> Counter {
            registry.makeCounter(descriptor: Self.name(name, help))
        }
        func gauge(_ name: String, _ help: String) -> Gauge { registry.makeGauge(descriptor: Self.name(name, help)) }
        let buckets: [Duration] = [
            .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
        ]
        reconciles = Dictionary(
            uniqueKeysWithValues: ReconcileCause.allCases.map {
                (
                    $0,
                    registry.makeCounter(
                        descriptor: Self.name(
                            "nodenet_reconcile_runs_total",
                            "Reconcile runs (plan + apply + verify) by what triggered them."),
                        labels: [("trigger", $0.rawValue)])
                )
            })
        reconcileFailures = counter("nodenet_reconcile_failures_total", "Reconcile runs that failed or did not verify.")
        reconcileDuration = registry.makeDurationHistogram(
            descriptor: Self.name("nodenet_reconcile_duration_seconds", "Time of one reconcile run."), buckets: buckets)
        repairDuration = registry.makeDurationHistogram(
            descriptor: Self.name(
                "nodenet_drift_repair_duration_seconds",
                "Time from a netlink event showing drift to the end of its repair."), buckets: buckets)
        repairsByKind = Dictionary(
            uniqueKeysWithValues: ChangeKind.allCases.map {
                (
                    $0,
                    registry.makeCounter(
                        descriptor: Self.name(
                            "nodenet_drift_repairs_total", "Kernel objects restored after they drifted, by kind."),
                        labels: [("kind", $0.rawValue)])
                )
            })
        kernelErrors = counter("nodenet_kernel_errors_total", "Errors returned by the kernel while applying.")
        specReloads = counter("nodenet_spec_reloads_total", "Spec reloads that were accepted.")
        specReloadErrors = counter(
            "nodenet_spec_reload_errors_total", "Spec reloads rejected as invalid (the running spec stays).")
        bpfAudits = counter("nodenet_bpf_audits_total", "Audits of the BPF datapath against the last verified apply.")
        bpfAuditDrift = counter(
            "nodenet_bpf_audit_drift_total", "Audits that found the BPF datapath changed (each starts a reconcile).")
        endpoints = gauge("nodenet_endpoints", "Pod endpoints in the spec.")
        remoteNodes = gauge("nodenet_remote_nodes", "Remote nodes in the spec.")
        services = gauge("nodenet_services", "Services in the spec.")
        backends = gauge("nodenet_service_backends", "Service backends in the spec.")
        healthy = gauge("nodenet_healthy", "1 when the last reconcile succeeded and the kernel matches the spec.")
        frontends = gauge(
            "nodenet_service_frontends",
            "Service frontends the spec asks for (ClusterIP, node address and wildcard NodePort).")
        conntrackEntries = gauge(
            "nodenet_conntrack_entries", "Entries in the BPF conntrack table at the last garbage collection.")
        conntrackCollected = counter(
            "nodenet_conntrack_collected_total", "Idle BPF conntrack entries removed by garbage collection.")
    }

    /// `nodenet_<name>` split into metric name and unit (`total`, `seconds`) as Prometheus wants.
    static func name(_ full: String, _ help: String) -> MetricNameDescriptor {
        var base = String(full.dropFirst("nodenet_".count))
        var unit = ""
        for u in ["total", "seconds"] where base.hasSuffix("_" + u) {
            base = String(base.dropLast(u.count + 1))
            unit = u
        }
        return MetricNameDescriptor(namespace: "nodenet", metricName: base, unitName: unit, helpText: help)
    }

    func repaired(kind: ChangeKind) { repairsByKind[kind]?.increment() }

    func describe(_ spec: NodeSpec) {
        endpoints.set(to: Double(spec.pods.count))
        remoteNodes.set(to: Double(spec.nodes.count))
        services.set(to: Double(spec.services.count))
        backends.set(to: Double(spec.services.map(\.backends.count).reduce(0, +)))
        frontends.set(to: Double(spec.servicesEnabled ? spec.serviceFrontends.count : 0))
    }

    /// The Prometheus text exposition.
    public func exposition() -> String { registry.emitToString() }
}
