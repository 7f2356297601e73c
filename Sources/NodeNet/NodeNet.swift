@_exported import Netlink
