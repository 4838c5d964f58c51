/// What the connection should do after a command.
public enum CommandOutcome {
    case `continue`
    /// `QUIT`: the reply is `+OK`, then the connection closes.
    case quit
    /// The reply could not be delivered (the drain refused): stop, the connection is closing.
    case stop
}

/// Runs the commands on the keyspace and writes their replies, with Redis's reply and error
/// texts (redis/src/t_string.c, server.c, db.c), so that `redis-cli` and `redis-benchmark`
/// work unchanged.
///
/// One per reactor. The caller holds the keyspace's lock around ``execute(_:)``.
public final class CommandEngine {
    public let keyspace: Keyspace
    public let reply: ReplyBuffer
    /// `--maxmemory` in bytes (0: no limit). A command that adds data is refused with Redis's
    /// `-OOM` error, as Redis does under its default `noeviction` policy, when the keyspace's
    /// used bytes plus what the command would add pass it. Checked before the command runs, so
    /// a refused command changes nothing: one 60 MB `MSET` against a 10 MB limit is refused
    /// whole, not stored and found over the limit afterwards.
    public let maxMemory: Int

    public init(keyspace: Keyspace, reply: ReplyBuffer, maxMemory: Int = 0) {
        self.keyspace = keyspace
        self.reply = reply
        self.maxMemory = maxMemory
    }

    /// The command name, lowercased and packed into an integer (names of at most 8 bytes; 0
    /// for longer ones), so dispatch is one switch on a number, with no allocation.
    @inline(__always)
    static func pack(_ name: UnsafeRawBufferPointer) -> UInt64 {
        guard name.count <= 8 else { return 0 }
        var v: UInt64 = 0
        for i in 0..<name.count { v |= UInt64(name[i] | 0x20) << (8 * i) }
        return v
    }

    /// Whether a write that would add `growth` bytes (``Keyspace/growth(ifSetting:valueCount:)``)
    /// must be refused, and if so, its `-OOM` reply. Without a limit the growth is not even
    /// computed (that costs a second lookup of each key).
    @inline(__always)
    func refusedForMemory(_ growth: @autoclosure () -> Int) -> Bool {
        guard maxMemory > 0 else { return false }
        let (total, overflow) = keyspace.usedBytes.addingReportingOverflow(growth())
        guard overflow || total > maxMemory else { return false }
        reply.error("OOM command not allowed when used memory > 'maxmemory'.")
        return true
    }

    /// What `MSET` would add: each pair's growth, as if the others were not set first (a key
    /// given twice counts twice: the estimate errs towards refusing).
    func msetGrowth(_ r: Request) -> Int {
        var growth = 0
        for i in stride(from: 1, to: r.count, by: 2) {
            growth &+= keyspace.growth(ifSetting: r[i], valueCount: r[i + 1].count)
        }
        return growth
    }

    @inline(__always)
    func arity(_ name: StaticString) {
        reply.error("ERR wrong number of arguments for '\(name)' command")
    }

    /// Runs one request and appends its reply.
    public func execute(_ r: Request) -> CommandOutcome {
        let argc = r.count
        switch Self.pack(r[0]) {
        case 0x746567:  // get
            guard argc == 2 else { arity("get"); break }
            if let value = keyspace.get(r[1]) { reply.bulk(value) } else { reply.null() }
        case 0x746573:  // set
            guard argc >= 3 else { arity("set"); break }
            set(r)
        case 0x676e6970:  // ping
            if argc == 1 { reply.raw("+PONG\r\n") } else if argc == 2 { reply.bulk(r[1]) } else { arity("ping") }
        case 0x72636e69:  // incr
            guard argc == 2 else { arity("incr"); break }
            incrBy(r[1], 1)
        case 0x72636564:  // decr
            guard argc == 2 else { arity("decr"); break }
            incrBy(r[1], -1)
        case 0x796272636e69:  // incrby
            guard argc == 3 else { arity("incrby"); break }
            guard let by = Integers.parse(r[2]) else { reply.error("ERR value is not an integer or out of range"); break }
            incrBy(r[1], by)
        case 0x796272636564:  // decrby
            guard argc == 3 else { arity("decrby"); break }
            guard let by = Integers.parse(r[2]) else { reply.error("ERR value is not an integer or out of range"); break }
            guard by != Int64.min else { reply.error("ERR decrement would overflow"); break }
            incrBy(r[1], -by)
        case 0x7465676d:  // mget
            guard argc >= 2 else { arity("mget"); break }
            reply.array(argc - 1)
            for i in 1..<argc {
                if let value = keyspace.get(r[i]) { reply.bulk(value) } else { reply.null() }
                guard reply.drainIfFull() else { return .stop }
            }
        case 0x7465736d:  // mset
            guard argc >= 3, argc % 2 == 1 else { arity("mset"); break }
            guard !refusedForMemory(msetGrowth(r)) else { break }
            for i in stride(from: 1, to: argc, by: 2) { keyspace.set(r[i], r[i + 1]) }
            reply.ok()
        case 0x6c6564:  // del
            guard argc >= 2 else { arity("del"); break }
            var removed: Int64 = 0
            for i in 1..<argc where keyspace.remove(r[i]) { removed += 1 }
            reply.integer(removed)
        case 0x737473697865:  // exists
            guard argc >= 2 else { arity("exists"); break }
            var found: Int64 = 0
            for i in 1..<argc where keyspace.contains(r[i]) { found += 1 }
            reply.integer(found)
        case 0x6f686365:  // echo
            guard argc == 2 else { arity("echo"); break }
            reply.bulk(r[1])
        case 0x657a69736264:  // dbsize
            guard argc == 1 else { arity("dbsize"); break }
            reply.integer(Int64(keyspace.count))
        case 0x6c6c616873756c66:  // flushall
            let mode = argc == 2 ? Self.pack(r[1]) : 0
            guard argc == 1 || mode == 0x636e7973 || mode == 0x636e797361 else {  // sync, async
                reply.error("ERR syntax error")
                break
            }
            keyspace.removeAll()
            reply.ok()
        case 0x74697571:  // quit
            reply.ok()
            return .quit
        case 0x646e616d6d6f63:  // command
            command(r)
        case 0x6769666e6f63:  // config
            config(r)
        case 0x746e65696c63:  // client
            client(r)
        default:
            unknownCommand(r)
        }
        return .continue
    }

    // MARK: strings

    /// `SET key value [NX|XX] [GET]`. Expiry options are refused: this server keeps no clock
    /// per key.
    func set(_ r: Request) {
        var condition = Keyspace.SetCondition.always
        var get = false
        var i = 3
        while i < r.count {
            switch Self.pack(r[i]) {
            case 0x786e:  // nx
                guard condition != .ifPresent else { reply.error("ERR syntax error"); return }
                condition = .ifAbsent
            case 0x7878:  // xx
                guard condition != .ifAbsent else { reply.error("ERR syntax error"); return }
                condition = .ifPresent
            case 0x746567:  // get
                get = true
            case 0x7865, 0x7870, 0x74617865, 0x74617870, 0x6c74747065656b:  // ex px exat pxat keepttl
                reply.error("ERR \(String(decoding: r[i], as: UTF8.self).uppercased()) is not supported: this server keeps no expiry")
                return
            default:
                reply.error("ERR syntax error")
                return
            }
            i += 1
        }
        guard !refusedForMemory(keyspace.growth(ifSetting: r[1], valueCount: r[2].count)) else { return }
        if get {
            // Reply with the old value (nil if none), whether or not the condition lets SET store.
            if let old = keyspace.get(r[1]) { reply.bulk(old) } else { reply.null() }
            keyspace.set(r[1], r[2], condition: condition)
            return
        }
        if keyspace.set(r[1], r[2], condition: condition) { reply.ok() } else { reply.null() }
    }

    func incrBy(_ key: UnsafeRawBufferPointer, _ by: Int64) {
        // The result takes at most 20 digits.
        guard !refusedForMemory(keyspace.growth(ifSetting: key, valueCount: 20)) else { return }
        var current: Int64 = 0
        if let value = keyspace.get(key) {
            guard let parsed = Integers.parse(value) else { reply.error("ERR value is not an integer or out of range"); return }
            current = parsed
        }
        let (result, overflow) = current.addingReportingOverflow(by)
        guard !overflow else { reply.error("ERR increment or decrement would overflow"); return }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { scratch in
            let n = Integers.format(result, into: scratch.baseAddress!)
            keyspace.set(key, UnsafeRawBufferPointer(rebasing: scratch[..<n]))
        }
        reply.integer(result)
    }

    // MARK: what clients ask on connecting

    /// `COMMAND`, `COMMAND DOCS` (empty: redis-cli then offers no hints), `COMMAND COUNT`.
    func command(_ r: Request) {
        if r.count == 1 { reply.array(0); return }
        switch Self.pack(r[1]) {
        case 0x73636f64:  // docs
            reply.array(0)
        case 0x746e756f63:  // count
            guard r.count == 2 else { arity("command|count"); return }
            reply.integer(0)
        default:
            unknownSubcommand(r, container: "COMMAND")
        }
    }

    /// `CONFIG GET param...`: `save` (""), `appendonly` ("no") and `maxmemory` are answered,
    /// because redis-benchmark asks for the first two and warns when it gets nothing; anything
    /// else is left out of the reply, as Redis does for names it does not know.
    func config(_ r: Request) {
        guard r.count >= 2 else { arity("config"); return }
        guard Self.pack(r[1]) == 0x746567 else { unknownSubcommand(r, container: "CONFIG"); return }  // get
        guard r.count >= 3 else { arity("config|get"); return }
        var pairs: [(String, String)] = []
        for i in 2..<r.count {
            let name = String(decoding: r[i], as: UTF8.self).lowercased()
            switch name {
            case "save": pairs.append((name, ""))
            case "appendonly": pairs.append((name, "no"))
            case "maxmemory": pairs.append((name, "\(maxMemory)"))
            default: break
            }
        }
        reply.array(pairs.count * 2)
        for (name, value) in pairs {
            reply.bulk(name)
            reply.bulk(value)
        }
    }

    /// `CLIENT SETNAME name` (+OK; the name is not kept).
    func client(_ r: Request) {
        guard r.count >= 2 else { arity("client"); return }
        guard Self.pack(r[1]) == 0x656d616e746573 else { unknownSubcommand(r, container: "CLIENT"); return }  // setname
        guard r.count == 3 else { arity("client|setname"); return }
        // Redis's rule (clientSetName in networking.c): printable ASCII, no spaces.
        for byte in r[2] where byte < UInt8(ascii: "!") || byte > UInt8(ascii: "~") {
            reply.error("ERR Client names cannot contain spaces, newlines or special characters.")
            return
        }
        reply.ok()
    }

    // MARK: errors

    /// Redis's text (commandCheckExistence in server.c): the name and up to 128 bytes of
    /// arguments, each cut at a NUL as a C string is, with CR and LF turned into spaces.
    func unknownCommand(_ r: Request) {
        var text: [UInt8] = Array("-ERR unknown command '".utf8)
        text += Self.cString(r[0], max: 128)
        text += Array("', with args beginning with: ".utf8)
        var args: [UInt8] = []
        var i = 1
        while i < r.count && args.count < 128 {
            args.append(UInt8(ascii: "'"))
            args += Self.cString(r[i], max: 128 - args.count + 1)
            args += [UInt8(ascii: "'"), UInt8(ascii: " ")]
            i += 1
        }
        text += args
        send(error: text)
    }

    func unknownSubcommand(_ r: Request, container: StaticString) {
        var text: [UInt8] = Array("-ERR unknown subcommand '".utf8)
        text += Self.cString(r[1], max: 128)
        text += Array("'. Try \(container) HELP.".utf8)
        send(error: text)
    }

    private func send(error text: [UInt8]) {
        let sanitized = text.map { $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\n") ? UInt8(ascii: " ") : $0 }
        sanitized.withUnsafeBytes { reply.bytes.append($0) }
        reply.raw("\r\n")
    }

    /// `%.Ns` of a C string: up to the first NUL, at most `max` bytes.
    static func cString(_ bytes: UnsafeRawBufferPointer, max: Int) -> [UInt8] {
        var out: [UInt8] = []
        for byte in bytes {
            if byte == 0 || out.count >= max { break }
            out.append(byte)
        }
        return out
    }
}
