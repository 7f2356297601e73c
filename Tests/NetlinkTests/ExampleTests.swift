import Foundation
import TestSupport
import Testing

@testable import Netlink

/// `Examples/NetlinkTour` is documentation that runs: built with everything else, run here
/// against the kernel (it makes and removes its own namespaces). Skipped without root.
@Suite(.serialized, .enabled(if: Privileges.runsNamespaceTests, Comment(rawValue: Privileges.skipReason)))
struct ExampleTests {
    static let tour = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        .appendingPathComponent("netlink-tour").path

    @Test func theNetlinkTourRunsAndShowsWhatItSays() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.tour), "build netlink-tour first (swift build)")
        let before = Set(NetworkNamespace.list())
        let (status, output) = try runTool([Self.tour])
        #expect(status == 0, "\(output)")
        for line in [
            "addresses: [10.77.0.1/24]",
            "route 10.88.0.0/24 via 10.77.0.3, realms kept: true",
            "refused: adding route 10.99.0.0/24 via 192.0.2.1",
            "(ENETUNREACH)",
            "into tour-",
            ": true\n",
            "deleted: routes 0, links in tour-",
        ] {
            #expect(output.contains(line), "missing \"\(line)\" in:\n\(output)")
        }
        #expect(Set(NetworkNamespace.list()).subtracting(before).isEmpty, "the tour removes its namespaces")
    }
}
