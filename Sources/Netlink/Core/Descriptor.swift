#if canImport(Glibc)
    import Glibc
#endif

/// `close(2)`, for files the Netlink module opened itself (namespace files).
@discardableResult
func closeDescriptor(_ fd: Int32) -> Int32 { close(fd) }
