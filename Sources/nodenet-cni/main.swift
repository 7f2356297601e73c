import FoundationEssentials
import NodeNetJSON

#if canImport(Glibc)
    import Glibc
#endif

// nodenet-cni: the CNI plugin for nodenet (CNI 0.3.1 to 1.1.0). It owns nothing: every
// command is a request to the node's agent (`nodenetd run`) over its unix socket, which
// creates the pod's veth, /32, routes and BPF, and gives the address (IPAM). ADD answers once
// the pod can send and receive.
//
// Network configuration: {"cniVersion":"1.0.0","name":"nodenet","type":"nodenet-cni","socket":"PATH"}
// (`socket` optional: the one agent socket under /run/nodenet/). See docs/cni.md.

let supportedVersions = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]

func write(_ text: String, to fd: Int32) {
    var bytes = Array(text.utf8)
    bytes.append(10)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return }
        done += n
    }
}

func readStandardInput(limit: Int) throws(CNIError) -> [UInt8] {
    var data: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = Glibc.read(0, &buffer, buffer.count)
        if n < 0 && errno == EINTR { continue }
        if n < 0 { throw CNIError(code: CNIError.ioFailure, msg: "cannot read the network configuration from stdin") }
        if n == 0 { break }
        data += buffer[0..<n]
        guard data.count <= limit else {
            throw CNIError(
                code: CNIError.decodeFailure, msg: "the network configuration is larger than \(limit >> 20) MiB")
        }
    }
    return data
}

func environment(_ name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    let s = String(cString: value)
    return s.isEmpty ? nil : s
}

let command = environment("CNI_COMMAND") ?? ""
var version = "1.1.0"
do {
    if command == "VERSION" {
        // The configuration is optional for VERSION.
        let config = (try? readStandardInput(limit: 1 << 20)).flatMap { try? JSONValue.parse(Data($0)) }
        if let asked = config?["cniVersion"]?.string { version = asked }
        let answer: JSONValue = .object([
            "cniVersion": .string(version), "supportedVersions": .array(supportedVersions.map { .string($0) }),
        ])
        write(answer.text, to: 1)
        exit(0)
    }
    guard ["ADD", "DEL", "CHECK", "STATUS", "GC"].contains(command) else {
        throw CNIError(
            code: CNIError.invalidEnvironment,
            msg: command.isEmpty
                ? "CNI_COMMAND is not set: nodenet-cni is run by a container runtime (see docs/cni.md)"
                : "CNI_COMMAND \(command) is not one of ADD, DEL, CHECK, STATUS, GC, VERSION")
    }
    let plugin = try Plugin(command: command, stdin: try readStandardInput(limit: 16 << 20))
    version = plugin.version
    if let result = try plugin.run() { write(result.text, to: 1) }
    exit(0)
} catch let error as CNIError {
    write(error.json(version: version).text, to: 1)
    exit(1)
} catch {
    write(CNIError(code: CNIError.ioFailure, msg: "\(error)").json(version: version).text, to: 1)
    exit(1)
}
