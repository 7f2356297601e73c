import ArgumentParser
import Foundation
import NodeNet
import NodeNetLab

/// `lab pod add|del`: pods made the way a container runtime makes them, through `nodenet-cni`
/// and the node's agent (started for the node on first use, as a lab process).
struct LabPodCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pod", abstract: "Add or delete a pod through nodenet-cni, as a container runtime does.",
        discussion: """
            `add` starts the node's agent (`nodenetd run` with its endpoint API under the lab's run directory) when it is
            not running yet, creates the pod's network namespace, runs nodenet-cni ADD in the node's namespace with the
            CNI environment a runtime sets (container id lab-NAME, K8S_POD_NAMESPACE=default, K8S_POD_NAME=NAME) and
            starts the pod's HTTP and UDP servers. `del` runs DEL, stops the servers and removes the namespace.
            `lab down` removes all of it.
            """,
        subcommands: [Add.self, Del.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add", abstract: "Add a pod to a node.")
        @OptionGroup var lab: LabName
        @Argument(help: "The node.") var node: String
        @Argument(help: "The pod's name (1-40 of a-z, 0-9 and '-').") var pod: String
        @Flag(help: "Print the CNI result as JSON.") var json = false

        func run() throws {
            let c = try LabPods.cluster(named: try lab.resolve(), node: node, pod: pod)
            let (result, ip) = try LabPods.add(c, node: node, pod: pod)
            if json { return print(result) }
            print("pod \(pod) on \(node): \(ip) (nodenet-cni, container lab-\(pod))")
        }
    }

    struct Del: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "del", abstract: "Delete a pod added with add.")
        @OptionGroup var lab: LabName
        @Argument(help: "The node.") var node: String
        @Argument(help: "The pod's name.") var pod: String

        func run() throws {
            let c = try LabPods.cluster(named: try lab.resolve(), node: node, pod: pod)
            try LabPods.delete(c, node: node, pod: pod)
            print("pod \(pod) deleted from \(node)")
        }
    }
}
