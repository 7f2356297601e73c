import NodeNetJSON

/// A CNI error result: printed as JSONValue on stdout, exit status 1. Codes 1-99 are the spec's;
/// 100 and up are nodenet's.
struct CNIError: Error {
    var code: Int
    var msg: String
    var details: String = ""

    // The CNI specification's codes.
    static let incompatibleVersion = 1
    static let unsupportedField = 2
    static let unknownContainer = 3
    static let invalidEnvironment = 4
    static let ioFailure = 5
    static let decodeFailure = 6
    static let invalidConfiguration = 7
    static let tryAgainLater = 11
    static let notAvailable = 50
    // nodenet's.
    /// The pod clashes with a spec pod or another endpoint (name, namespace, device).
    static let conflict = 100
    /// No address left in the node's podCIDR.
    static let addressesExhausted = 101
    /// The agent could not set the pod's network up (its reason follows).
    static let setupFailed = 102
    /// CHECK found the pod's network different from what the agent made.
    static let checkFailed = 103
    /// The agent refused the caller (not root).
    static let refused = 104
    /// The agent answered something this plugin does not understand.
    static let unexpectedAnswer = 105

    func json(version: String) -> JSONValue {
        var o: [String: JSONValue] = [
            "cniVersion": .string(version), "code": .number(Double(code)), "msg": .string(msg),
        ]
        if !details.isEmpty { o["details"] = .string(details) }
        return .object(o)
    }
}
