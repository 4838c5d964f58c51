import Glibc

/// The check of a socket address received from another process, before anything reads it as a
/// `sockaddr`: an IPv4, IPv6 or Unix address of a length that fits its family.
enum SockaddrBytes {
    static func isPlausible(_ bytes: [UInt8]) -> Bool {
        guard bytes.count >= 2 else { return false }
        // sa_family_t is host-endian: read it as the kernel wrote it.
        let family = bytes.withUnsafeBytes { CInt($0.loadUnaligned(as: sa_family_t.self)) }
        switch family {
        case AF_INET: return bytes.count == MemoryLayout<sockaddr_in>.size
        case AF_INET6: return bytes.count == MemoryLayout<sockaddr_in6>.size
        case AF_UNIX: return bytes.count <= MemoryLayout<sockaddr_un>.size
        default: return false
        }
    }
}
