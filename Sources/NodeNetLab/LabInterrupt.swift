import Dispatch
import Foundation
import Netlink

/// Catches SIGINT/SIGTERM so a long lab operation can stop between steps and clean up.
public final class LabInterrupt: @unchecked Sendable {
    private let flag = StopFlag()
    private var sources: [DispatchSourceSignal] = []

    public init() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [flag] in flag.stop() }
            source.resume()
            sources.append(source)
        }
    }

    public var fired: Bool { flag.isStopped }
}

/// What the lab refuses or where it stopped, in words for the person at the terminal.
public enum LabError: Error, CustomStringConvertible, Equatable {
    /// The request names something the lab does not have, or is malformed (the CLI's exit 2).
    case invalid(String)
    /// SIGINT/SIGTERM arrived while the lab was being built; what was built is removed.
    case interrupted(lab: String)

    public var description: String {
        switch self {
        case .invalid(let message): message
        case .interrupted(let lab): "interrupted: lab \(lab) removed"
        }
    }
}
