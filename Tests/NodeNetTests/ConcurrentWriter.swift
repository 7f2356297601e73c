import Foundation

@testable import NodeNet

/// Someone else at work on the node: a thread that keeps writing `value` to the sysctl `key` in
/// `namespace`, for at most `seconds`, until `stop()` (which returns once its last write has
/// landed). What makes nodenet's verification fail.
final class ConcurrentSysctlWriter: Sendable {
    private let stopping = PeerLog()
    private let stopped = DispatchSemaphore(value: 0)

    init(_ key: String, _ value: String, in namespace: NamespaceReference, seconds: Double = 30) {
        let (stopping, stopped) = (self.stopping, self.stopped)
        Thread {
            let until = Date().addingTimeInterval(seconds)
            while stopping.lines.isEmpty && Date() < until { try? Sysctl.write(key, value, in: namespace) }
            stopped.signal()
        }.start()
    }

    /// Asks the writer to stop (also what a `defer` calls when a test ends early).
    func requestStop() { stopping.add("stop") }

    /// Stops the writer and waits, off the concurrency threads, for its last write.
    func stop() async {
        requestStop()
        let stopped = self.stopped
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread {
                stopped.wait()
                stopped.signal()  // a second stop() returns at once
                done.resume()
            }
        }
    }
}
