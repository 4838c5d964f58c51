import Glibc

/// glibc's `mallopt(3)`, which the Glibc module does not import (it is declared in `<malloc.h>`).
enum MallocTuning {
    /// `M_MMAP_THRESHOLD` in `<malloc.h>`.
    static let mmapThresholdParameter: CInt = -3

    /// Blocks of at least `bytes` get their own mapping, given back to the kernel when freed, and
    /// glibc stops adapting the threshold. False if glibc refused.
    @discardableResult
    static func setMmapThreshold(_ bytes: CInt) -> Bool {
        glibcMallopt(mmapThresholdParameter, bytes) == 1
    }
}

@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: CInt, _ value: CInt) -> CInt
