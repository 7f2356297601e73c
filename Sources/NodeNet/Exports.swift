// NodeNet's API uses the Netlink module's address and kernel types throughout.
@_exported import Netlink
// The JSON value the spec reader (and the CNI plugin) share.
@_exported import NodeNetJSON
