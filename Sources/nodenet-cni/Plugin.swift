import FoundationEssentials
import NodeNetJSON

#if canImport(Glibc)
    import Glibc
#endif

/// One CNI command against the node's agent.
struct Plugin {
    let command: String
    let config: [String: JSONValue]
    let version: String

    init(command: String, stdin: [UInt8]) throws(CNIError) {
        self.command = command
        let parsed: JSONValue
        do { parsed = try JSONValue.parse(Data(stdin)) } catch {
            throw CNIError(
                code: CNIError.decodeFailure, msg: "the network configuration on stdin is not JSON",
                details: "\(error)")
        }
        guard let object = parsed.object else {
            throw CNIError(
                code: CNIError.decodeFailure, msg: "the network configuration on stdin is not a JSON object")
        }
        config = object
        guard let version = object["cniVersion"]?.string else {
            throw CNIError(code: CNIError.invalidConfiguration, msg: "the network configuration has no cniVersion")
        }
        guard supportedVersions.contains(version) else {
            throw CNIError(
                code: CNIError.incompatibleVersion,
                msg:
                    "CNI version \(version) is not supported (nodenet-cni supports \(supportedVersions.joined(separator: ", ")))"
            )
        }
        self.version = version
        guard object["name"]?.string?.isEmpty == false else {
            throw CNIError(code: CNIError.invalidConfiguration, msg: "the network configuration has no name")
        }
        if let socket = object["socket"], socket.string?.hasPrefix("/") != true {
            throw CNIError(code: CNIError.invalidConfiguration, msg: "\"socket\" must be an absolute path")
        }
    }

    /// The result to print (ADD), or nil (the other commands print nothing on success).
    func run() throws(CNIError) -> JSONValue? {
        switch command {
        case "ADD": return try add()
        case "DEL": try delete()
        case "CHECK": try check()
        case "STATUS": try status()
        case "GC": try collect()
        default: break
        }
        return nil
    }

    // MARK: Commands

    func add() throws(CNIError) -> JSONValue {
        let (containerID, interface) = try attachment()
        guard let netns = environment("CNI_NETNS") else {
            throw CNIError(code: CNIError.invalidEnvironment, msg: "CNI_NETNS is not set")
        }
        let args = Self.arguments(environment("CNI_ARGS") ?? "")
        var body: [String: JSONValue] = ["netns": .string(netns)]
        if let namespace = args["K8S_POD_NAMESPACE"], let name = args["K8S_POD_NAME"] {
            body["podNamespace"] = .string(namespace)
            body["podName"] = .string(name)
        }
        let answer = try request(
            "PUT", "/v1/endpoints/\(containerID)/\(interface)", body: Array(JSONValue.object(body).text.utf8),
            what: "adding the pod's network")
        guard answer.status == 200, let created = answer.json else { throw failure(answer, what: "ADD") }
        return try result(created)
    }

    func delete() throws(CNIError) {
        let (containerID, interface) = try attachment()
        let client: AgentClient
        do { client = AgentClient(socket: try socket()) } catch {
            // No agent ever ran here (no socket): there is nothing to delete.
            if error.code == CNIError.tryAgainLater { return }
            throw error
        }
        let answer: AgentClient.Answer
        do {
            answer = try client.send("DELETE", "/v1/endpoints/\(containerID)/\(interface)")
        } catch {
            switch error {
            case .notRunning(let why):
                try recordDeletion(containerID: containerID, interface: interface, socket: client.socket, why: why)
                return
            case .noAnswer(let why):
                throw CNIError(
                    code: CNIError.tryAgainLater, msg: "the nodenet agent did not answer; try again later", details: why
                )
            }
        }
        guard answer.status == 200 else { throw failure(answer, what: "DEL") }
    }

    func check() throws(CNIError) {
        let (containerID, interface) = try attachment()
        guard environment("CNI_NETNS") != nil else {
            throw CNIError(code: CNIError.invalidEnvironment, msg: "CNI_NETNS is not set")
        }
        let answer = try request("GET", "/v1/endpoints/\(containerID)/\(interface)/check", what: "checking the pod")
        if answer.status == 409 {
            let differences = answer.json?["differences"]?.array?.compactMap(\.string) ?? []
            throw CNIError(
                code: CNIError.checkFailed,
                msg: "the pod's network differs from what nodenet made: " + differences.joined(separator: "; "))
        }
        guard answer.status == 200 else { throw failure(answer, what: "CHECK") }
        // The runtime's view (prevResult) must name the address the agent gave.
        let endpoint = try request("GET", "/v1/endpoints/\(containerID)/\(interface)", what: "checking the pod")
        guard endpoint.status == 200, let ip = endpoint.json?["ip"]?.string else {
            throw failure(endpoint, what: "CHECK")
        }
        if let previous = config["prevResult"] {
            let addresses = previous["ips"]?.array?.compactMap { $0["address"]?.string } ?? []
            guard addresses.contains("\(ip)/32") else {
                throw CNIError(
                    code: CNIError.checkFailed,
                    msg:
                        "prevResult does not list the pod's address \(ip)/32 (it lists \(addresses.joined(separator: ", ")))"
                )
            }
        }
    }

    func status() throws(CNIError) {
        let client = AgentClient(socket: try socket())
        let answer: AgentClient.Answer
        do { answer = try client.send("GET", "/v1/status", timeout: 10) } catch {
            throw CNIError(
                code: CNIError.notAvailable, msg: "the nodenet agent is not answering: ADD cannot succeed now")
        }
        guard answer.status == 200, let status = answer.json else { throw failure(answer, what: "STATUS") }
        guard case .bool(true) = status["ready"] else {
            let free = status["freeAddresses"].map { $0.text } ?? "?"
            throw CNIError(
                code: CNIError.notAvailable,
                msg: "nodenet cannot add pods now: \(status["health"]?.string ?? "?"); \(free) addresses free")
        }
    }

    func collect() throws(CNIError) {
        guard let valid = config["cni.dev/valid-attachments"]?.array else {
            throw CNIError(
                code: CNIError.invalidConfiguration, msg: "GC needs cni.dev/valid-attachments in the configuration")
        }
        var keep: [JSONValue] = []
        for item in valid {
            guard let id = item["containerID"]?.string, let ifname = item["ifname"]?.string else {
                throw CNIError(
                    code: CNIError.invalidConfiguration,
                    msg: "cni.dev/valid-attachments entries need containerID and ifname")
            }
            keep.append(.object(["containerID": .string(id), "interface": .string(ifname)]))
        }
        let answer = try request(
            "POST", "/v1/gc", body: Array(JSONValue.object(["keep": .array(keep)]).text.utf8),
            what: "collecting endpoints")
        guard answer.status == 200 else { throw failure(answer, what: "GC") }
    }

    // MARK: Parts

    /// `CNI_CONTAINERID` and `CNI_IFNAME`, checked before they go into a URL or a file name.
    func attachment() throws(CNIError) -> (String, String) {
        guard let id = environment("CNI_CONTAINERID") else {
            throw CNIError(code: CNIError.invalidEnvironment, msg: "CNI_CONTAINERID is not set")
        }
        guard let ifname = environment("CNI_IFNAME") else {
            throw CNIError(code: CNIError.invalidEnvironment, msg: "CNI_IFNAME is not set")
        }
        // Letters, digits, '-', '_', '.', starting with a letter or digit (the agent checks it too).
        guard id.utf8.count <= 256, id.utf8.allSatisfy(Self.isNameByte), ![0x2D, 0x5F, 0x2E].contains(id.utf8.first!)
        else {
            throw CNIError(
                code: CNIError.invalidEnvironment,
                msg:
                    "CNI_CONTAINERID is not valid (1-256 letters, digits, '-', '_' or '.', starting with a letter or digit)"
            )
        }
        guard ifname.utf8.count <= 15, ifname != ".", ifname != "..", ifname.utf8.allSatisfy({ Self.isNameByte($0) })
        else {
            throw CNIError(code: CNIError.invalidEnvironment, msg: "CNI_IFNAME is not a valid interface name")
        }
        return (id, ifname)
    }

    static func isNameByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D || b == 0x5F
            || b == 0x2E
    }

    /// `K=V;K=V` from `CNI_ARGS`.
    static func arguments(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for pair in text.split(separator: ";") {
            let kv = pair.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { result[String(kv[0])] = String(kv[1]) }
        }
        return result
    }

    /// The agent's socket: the configuration's `socket`, else the one under /run/nodenet/.
    func socket() throws(CNIError) -> String {
        if let path = config["socket"]?.string { return path }
        var found: [String] = []
        if let dir = opendir("/run/nodenet") {
            defer { closedir(dir) }
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                guard !name.hasPrefix(".") else { continue }
                let path = "/run/nodenet/\(name)/nodenet.sock"
                if access(path, F_OK) == 0 { found.append(path) }
            }
        }
        guard found.count <= 1 else {
            throw CNIError(
                code: CNIError.invalidConfiguration,
                msg:
                    "several nodenet agents listen here (\(found.sorted().joined(separator: ", "))): set \"socket\" in the network configuration"
            )
        }
        guard let path = found.first else {
            throw CNIError(
                code: CNIError.tryAgainLater,
                msg: "no nodenet agent is running (no socket under /run/nodenet/): start nodenetd run, then try again")
        }
        return path
    }

    func request(
        _ method: String, _ path: String, body: [UInt8] = [], what: String
    ) throws(CNIError)
        -> AgentClient.Answer
    {
        let client = AgentClient(socket: try socket())
        do {
            return try client.send(method, path, body: body)
        } catch {
            switch error {
            case .notRunning(let why):
                throw CNIError(
                    code: CNIError.tryAgainLater, msg: "the nodenet agent is not running; try again later", details: why
                )
            case .noAnswer(let why):
                throw CNIError(
                    code: CNIError.tryAgainLater, msg: "the nodenet agent did not answer; try again later", details: why
                )
            }
        }
    }

    /// The agent's error as a CNI error.
    func failure(_ answer: AgentClient.Answer, what: String) -> CNIError {
        let kind = answer.json?["kind"]?.string ?? ""
        let message = answer.json?["message"]?.string ?? String(decoding: answer.body.prefix(500), as: UTF8.self)
        switch (answer.status, kind) {
        case (403, _): return CNIError(code: CNIError.refused, msg: "nodenet refused \(what): \(message)")
        case (_, "invalid"): return CNIError(code: CNIError.invalidEnvironment, msg: message)
        case (_, "conflict"): return CNIError(code: CNIError.conflict, msg: message)
        case (_, "exhausted"): return CNIError(code: CNIError.addressesExhausted, msg: message)
        case (_, "notFound"): return CNIError(code: CNIError.unknownContainer, msg: message)
        case (_, "unavailable"): return CNIError(code: CNIError.tryAgainLater, msg: "\(message); try again later")
        case (_, "failed"): return CNIError(code: CNIError.setupFailed, msg: message)
        default:
            return CNIError(
                code: CNIError.unexpectedAnswer, msg: "nodenet answered \(what) with HTTP \(answer.status): \(message)")
        }
    }

    /// Records a DEL the agent could not take, for it to finish when it starts. Without the
    /// state link beside the socket no agent ever ran here: there is nothing to delete.
    func recordDeletion(containerID: String, interface: String, socket: String, why: String) throws(CNIError) {
        let directory = socket.split(separator: "/").dropLast().joined(separator: "/")
        let state = "/\(directory)/state"
        var info = stat()
        guard stat(state, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else { return }
        let deletions = state + "/cni-deletions"
        if mkdir(deletions, 0o700) != 0 && errno != EEXIST {
            throw CNIError(
                code: CNIError.ioFailure,
                msg: "cannot record the deletion in \(deletions): \(String(cString: strerror(errno)))")
        }
        let path = "\(deletions)/\(containerID).\(interface)"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw CNIError(
                code: CNIError.ioFailure,
                msg: "cannot record the deletion in \(path): \(String(cString: strerror(errno)))")
        }
        let text = Array("{\"containerID\":\"\(containerID)\",\"interface\":\"\(interface)\"}\n".utf8)
        _ = text.withUnsafeBytes { Glibc.write(fd, $0.baseAddress!, text.count) }
        fsync(fd)
        close(fd)
    }

    /// The CNI result for a created endpoint, after what `prevResult` already holds.
    func result(_ created: JSONValue) throws(CNIError) -> JSONValue {
        guard let host = created["hostInterface"], let pod = created["podInterface"],
            let address = created["address"]?.string, let gateway = created["gateway"]?.string
        else {
            throw CNIError(
                code: CNIError.unexpectedAnswer, msg: "nodenet's answer to ADD lacks interfaces or addresses")
        }
        let previous = config["prevResult"]
        var interfaces = previous?["interfaces"]?.array ?? []
        var ips = previous?["ips"]?.array ?? []
        var routes = previous?["routes"]?.array ?? []
        let podIndex = interfaces.count + 1
        interfaces.append(.object(["name": host["name"] ?? .null, "mac": host["mac"] ?? .null]))
        interfaces.append(
            .object(["name": pod["name"] ?? .null, "mac": pod["mac"] ?? .null, "sandbox": pod["sandbox"] ?? .null]))
        var ip: [String: JSONValue] = [
            "address": .string(address), "gateway": .string(gateway), "interface": .number(Double(podIndex)),
        ]
        if version.hasPrefix("0.") { ip["version"] = .string("4") }
        ips.append(.object(ip))
        for route in created["routes"]?.array ?? [] { routes.append(route) }
        var result: [String: JSONValue] = [
            "cniVersion": .string(version), "interfaces": .array(interfaces), "ips": .array(ips),
            "routes": .array(routes),
        ]
        if let dns = config["dns"] ?? previous?["dns"] { result["dns"] = dns }
        return .object(result)
    }
}
