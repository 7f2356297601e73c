// NodeNet's API uses the Netlink module's address and kernel types throughout.
@_exported import Netlink
