// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "nodenet",
    products: [
        .library(name: "Netlink", targets: ["Netlink"]),
        .library(name: "BPF", targets: ["BPF"]),
        .library(name: "NodeNet", targets: ["NodeNet"]),
        .library(name: "NodeNetAgent", targets: ["NodeNetAgent"]),
        .library(name: "Etcd", targets: ["Etcd"]),
        .executable(name: "nodenetd", targets: ["nodenetd"]),
        .executable(name: "nodenet-cni", targets: ["nodenet-cni"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.21.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.65.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.27.0"),
    ],
    targets: [
        // libmnl (socket handling) plus the few syscalls glibc hides behind _GNU_SOURCE.
        .systemLibrary(
            name: "CMnl", path: "Sources/CMnl", pkgConfig: "libmnl",
            providers: [.apt(["libmnl-dev"])]),
        // libbpf: object loading, programs, maps.
        .systemLibrary(
            name: "CBPF", path: "Sources/CBPF", pkgConfig: "libbpf",
            providers: [.apt(["libbpf-dev", "libelf-dev"])]),
        // glibc's allocator controls (malloc_trim): the agent gives freed heap back after work.
        .systemLibrary(name: "CMalloc", path: "Sources/CMalloc"),
        // The BPF map layouts (bpf/lib/maps.h), shared with the BPF programs.
        .systemLibrary(name: "CNodeNetBPF", path: "Sources/CNodeNetBPF"),
        // Compiles bpf/*.c during the build and embeds the objects.
        .executableTarget(name: "bpf-embed", path: "Tools/bpf-embed"),
        .plugin(name: "BPFBuild", capability: .buildTool(), dependencies: ["bpf-embed"]),
        // Typed libbpf: objects from memory, configuration, load, maps, programs, links; bpffs
        // (mounting, pin directories) and the cgroup v2 hierarchy. No node concepts.
        .target(name: "BPF", dependencies: ["CBPF", "CNodeNetBPF"], plugins: ["BPFBuild"]),
        // Typed rtnetlink: kernel messages only, no node concepts.
        .target(name: "Netlink", dependencies: ["CMnl"]),
        // What an embedder needs: the node spec, desired and observed state, plan, apply (one
        // executor per kind of change), verify, the datapath's programs and maps, services.
        .target(name: "NodeNet", dependencies: ["Netlink", "BPF", "CNodeNetBPF", "NodeNetJSON"]),
        // A small etcd v3 client (the v3 JSON gateway over HTTP/1.1, TLS, unix sockets): keys,
        // leases, transactions, watches. No node concepts.
        .target(
            name: "Etcd",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]),
        // A JSON value kept as it came (FoundationEssentials only): the spec reader's and the CNI plugin's.
        .target(name: "NodeNetJSON"),
        // `nodenetd run`: triggers, the reconcile loop, health, metrics, structured logs.
        .target(
            name: "NodeNetAgent",
            dependencies: [
                "NodeNet", "NodeNetJSON", "Etcd", "CMalloc", .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        // Throwaway clusters in network namespaces (fabric, nodes, pods, external host), pod
        // servers, probes, frame taps, the lab's processes and etcd, the seed walkthrough's
        // checks. Above the agent (it talks to the lab's etcd as the agent does); never
        // imported by a product target.
        .target(name: "NodeNetLab", dependencies: ["NodeNet", "NodeNetAgent", "Netlink", "BPF", "Etcd"]),
        // The CLI: argument parsing and printing only.
        .executableTarget(
            name: "nodenetd",
            dependencies: [
                "NodeNet", "NodeNetAgent", "NodeNetLab", "Netlink", "BPF", "Etcd",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        // The CNI plugin: a thin client of the agent's endpoint API (no NodeNet: it starts in
        // milliseconds, and every decision stays in the agent).
        // The runtime starts the plugin for every ADD and DEL: with the Swift runtime and
        // FoundationEssentials linked in, it starts in about 3 ms instead of 4 (no shared
        // libraries to load and bind). The group lists the static libraries FoundationEssentials
        // needs, which `-static-stdlib` alone does not name.
        .executableTarget(
            name: "nodenet-cni", dependencies: ["NodeNetJSON"],
            linkerSettings: [
                .unsafeFlags(
                    [
                        "-static-stdlib", "-Xlinker", "--start-group", "-lFoundationEssentials",
                        "-l_FoundationCollections", "-l_FoundationCShims", "-lswiftSynchronization", "-Xlinker",
                        "--end-group",
                    ], .when(platforms: [.linux]))
            ]),
        // Benchmarks are not product code: they may run `ip` as the baseline.
        .target(name: "BenchSupport", path: "Benchmarks/BenchSupport"),
        .executableTarget(
            name: "netlink-bench", dependencies: ["Netlink", "BenchSupport"], path: "Benchmarks/NetlinkBench"),
        .executableTarget(
            name: "apply-bench", dependencies: ["NodeNet", "BenchSupport"], path: "Benchmarks/ApplyBench"),
        .executableTarget(
            name: "datapath-bench", dependencies: ["NodeNet", "NodeNetLab", "BenchSupport"],
            path: "Benchmarks/DatapathBench"),
        .executableTarget(
            name: "service-bench", dependencies: ["NodeNet", "NodeNetLab", "BenchSupport"],
            path: "Benchmarks/ServiceBench"),
        .target(
            name: "AgentBenchSupport",
            dependencies: ["NodeNet", "NodeNetAgent", "BenchSupport", .product(name: "Logging", package: "swift-log")],
            path: "Benchmarks/AgentBenchSupport"),
        .executableTarget(
            name: "repair-bench", dependencies: ["NodeNet", "NodeNetAgent", "BenchSupport", "AgentBenchSupport"],
            path: "Benchmarks/RepairBench"),
        .executableTarget(
            name: "cni-bench", dependencies: ["NodeNet", "BPF", "NodeNetAgent", "BenchSupport", "AgentBenchSupport"],
            path: "Benchmarks/CNIBench"),
        .executableTarget(
            name: "cluster-bench",
            dependencies: ["NodeNet", "NodeNetAgent", "Etcd", "BenchSupport", "AgentBenchSupport"],
            path: "Benchmarks/ClusterBench"),
        // A short, runnable tour of the Netlink library (built with everything else).
        .executableTarget(name: "netlink-tour", dependencies: ["Netlink"], path: "Examples/NetlinkTour"),
        // Shared test helpers (privileges, throwaway namespaces); not product code.
        .target(name: "TestSupport", dependencies: ["Netlink", "NodeNet", "NodeNetLab"], path: "Tests/TestSupport"),
        .testTarget(
            name: "NetlinkTests", dependencies: ["Netlink", "CBPF", "TestSupport"],
            resources: [.copy("Fixtures")]),
        .testTarget(
            name: "NodeNetTests",
            dependencies: [
                "NodeNet", "NodeNetAgent", "NodeNetLab", "BPF", "CBPF", "CNodeNetBPF", "TestSupport", "Etcd",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(name: "BPFTests", dependencies: ["BPF", "CNodeNetBPF", "NodeNet", "NodeNetLab", "TestSupport"]),
    ]
)
