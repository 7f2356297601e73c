import Foundation

@testable import NodeNet

extension Ledger {
    /// The ledger file in `directory` as written, for assertions; nil when there is none.
    static func load(from directory: String) throws -> Ledger? {
        guard let data = FileManager.default.contents(atPath: path(in: directory)) else { return nil }
        return try JSONDecoder().decode(Ledger.self, from: data)
    }
}
