/// The version nodenet reports (a node's registration in etcd, `nodenetd --version`).
public enum NodeNetVersion {
    public static let current = "0.5.0"
}
