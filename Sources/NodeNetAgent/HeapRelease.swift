import CMalloc

/// Gives the heap's free pages back to the kernel after each reconcile, once its report is gone.
///
/// A reconcile of a large node allocates hundreds of MiB for a moment (100 000 services: the
/// spec's frontends, the maps read back, 400 000 planned changes) and frees them, but glibc keeps
/// freed memory in its arenas (one per thread that allocated, and every reconcile runs on a
/// thread of its own): the agent's resident memory stayed at the high-water mark (626 MiB at
/// 100 000 services, more than half of it free heap; 288 MiB with this). `malloc_trim` returns the free
/// pages of every arena (`madvise(MADV_DONTNEED)`), so they are counted again only when used.
enum HeapRelease {
    /// Returns free heap pages to the kernel; true when any were.
    @discardableResult
    static func now() -> Bool { malloc_trim(0) == 1 }
}
