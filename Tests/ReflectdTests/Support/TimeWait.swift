// Sockets in TIME_WAIT, from /proc/net/tcp{,6}: a restart on the same port must cope with them.

import TestSupport

/// Sockets in TIME_WAIT whose local port is `port` (IPv4 and IPv6), from /proc/net/tcp{,6}.
func timeWaitSockets(localPort port: Int) -> Int {
    var count = 0
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        guard let text = readProcFile(table) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 3, let colon = fields[1].lastIndex(of: ":"),
                  let local = Int(fields[1][fields[1].index(after: colon)...], radix: 16) else { continue }
            if local == port && fields[3] == "06" { count += 1 }  // 06: TCP_TIME_WAIT
        }
    }
    return count
}
