import CGuestSupport

/// The process's heap (glibc malloc).
public enum Heap {
    /// For a command that loads a whole agent repository (10,000 agents are about 100 MB of small
    /// allocations): the heap grows 64 MiB at a time, not 128 KiB, which spares over a thousand
    /// system calls and their page-table work. Untouched memory costs nothing; for one-shot
    /// commands only, as a trimmed heap keeps as much (a long-running service would hold it).
    public static func growInLargeSteps() {
        _ = agentry_heap_top_pad(64 << 20)
    }
}
