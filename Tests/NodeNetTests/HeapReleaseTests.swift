import Foundation
import Testing

@testable import NodeNetAgent

/// The agent gives freed heap back after a reconcile: memory a thread allocated and freed stays
/// resident in glibc's arena until it is trimmed (what kept the agent at its high-water mark).
@Suite struct HeapReleaseTests {
    static func residentMiB() -> Int {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) / 1024
    }

    @Test func freedHeapOfAThreadIsGivenBack() throws {
        // 256 MiB in 32 KiB blocks (below the mmap threshold: heap memory), written, then all
        // freed but the last (it keeps the arena's top from shrinking on its own), on a thread
        // of its own as a reconcile is.
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var last: UnsafeMutableRawPointer?
        Thread.detachNewThread {
            let blocks = (0..<8192).map { _ -> UnsafeMutableRawPointer in
                let p = malloc(32 * 1024)!
                memset(p, 1, 32 * 1024)
                return p
            }
            blocks.dropLast().forEach { free($0) }
            last = blocks.last
            done.signal()
        }
        done.wait()
        defer { free(last) }
        let before = Self.residentMiB()
        #expect(HeapRelease.now(), "free pages were given back")
        let after = Self.residentMiB()
        // (Other tests run in this process at the same time: the margin is half the freed memory.)
        #expect(before - after >= 128, "resident \(before) MiB before, \(after) MiB after")
    }
}
