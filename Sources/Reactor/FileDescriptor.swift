import Glibc

/// Exactly one owner of an fd: it closes the fd when it goes away, unless ownership was handed on
/// with ``take()``. Setup code uses it so that every early exit closes what it opened.
struct FileDescriptor: ~Copyable {
    let raw: CInt

    init(_ raw: CInt) { self.raw = raw }

    /// Hands the fd on to a new owner (the reactor's table); this value no longer closes it.
    consuming func take() -> CInt {
        let fd = raw
        discard self
        return fd
    }

    /// Closes the fd now.
    consuming func close() {
        Syscalls.closeQuietly(raw)
        discard self
    }

    deinit { Syscalls.closeQuietly(raw) }
}
