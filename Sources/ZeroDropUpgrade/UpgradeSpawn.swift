import Glibc

/// Starting the new binary of an upgrade.
enum UpgradeSpawn {
    /// The path this process was started from, resolved now (so a later upgrade runs whatever
    /// file is at that path then). /proc/self/exe names the running file even when argv[0] is
    /// a bare name or a relative path.
    static func resolveExecutable() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return CommandLine.arguments[0] }
        var path = String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if path.hasSuffix(" (deleted)") { path.removeLast(" (deleted)".count) }
        return path
    }

    /// posix_spawn of `executable` with `arguments`, our environment, and the hand-over fd; the
    /// signal mask and SIGPIPE's disposition reset (a server blocks and ignores them); in a
    /// process group of its own, with stdout on /dev/null until its hello.
    static func spawn(_ executable: String, arguments: [String], childFD: CInt,
                      environment names: UpgradeEnvironment, progressInterval: Duration) throws(UpgradeError) -> pid_t {
        var argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) }
        argv.append(nil)
        var environment: [String] = []
        var e = environ
        let owned = names.owned
        while let entry = e.pointee {
            let text = String(cString: entry)
            if !owned.contains(where: text.hasPrefix) { environment.append(text) }
            e += 1
        }
        environment.append("\(names.fd)=\(childFD)")
        // The child's stdout is /dev/null until it has said hello (a wrong "binary" must not
        // print a `listening on` line where scripts wait for the real one); our stdout goes
        // along as this fd, which it makes its stdout then (TakeOver.receive).
        let stdoutCopy = dup(1)
        defer { if stdoutCopy >= 0 { Glibc.close(stdoutCopy) } }
        if stdoutCopy >= 0 { environment.append("\(names.stdoutFD)=\(stdoutCopy)") }
        // Its own process group, killed whole on failure; it rejoins ours once it takes over.
        environment.append("\(names.processGroup)=\(getpgrp())")
        // How often it reports progress while it receives and restores (the old process waits on silence).
        environment.append("\(names.progressInterval)=\(max(1, Int(progressInterval / .milliseconds(1))))")
        var envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) }
        envp.append(nil)
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard rc == 0 else {
            throw UpgradeError("cannot start \(executable): \(String(cString: strerror(rc)))")
        }
        return pid
    }
}
