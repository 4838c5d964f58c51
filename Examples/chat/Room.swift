import Reactor

/// The limits of the chat server, all set from the command line.
struct ChatLimits {
    /// The longest line a client may send, in bytes before its newline. A longer line closes the
    /// connection (reason `toolong`): so a client can make the server hold at most this many
    /// bytes of unfinished input for it.
    var maxLineBytes = 4096
    /// The most bytes a receiver may have waiting for it in the server. A receiver that falls
    /// further behind is dropped (reason `slow`) and its queued output discarded. With the
    /// reactor's watermark backpressure this bounds what a never-reading client can cost.
    var maxPendingBytes = 256 * 1024
    /// A client that has sent no line for this long gets a notice (nil: never).
    var idleWarning: Duration? = .seconds(300)
    /// A client that has sent no line for this long is disconnected, reason `idle` (nil: never).
    var idleTimeout: Duration? = .seconds(600)
    /// How long a connection the server closes gets to take its last output (a `* bye`, a
    /// notice) before it is cut, so a peer that never reads cannot keep its connection open.
    /// It becomes the reactor's ``ReactorConfiguration/closeTimeout``.
    var closeTimeout: Duration = .seconds(5)
}

/// Everyone connected to one reactor, with their names: the state the connections share.
///
/// The reactor calls its handler on one thread only, and so the room is a plain class with no
/// lock. Per-connection data that a timer needs lives here, keyed by ``ConnectionID``, because a
/// connection's `ConnectionState` is reachable only inside that connection's own callbacks.
final class Room {
    struct Member {
        var name: String
        /// When this member last sent a line (or joined).
        var lastLine: ContinuousClock.Instant
        /// The idle notice was sent since the last line.
        var warned = false
        /// The member's idle timer, if idle checks are on.
        var timer: TimerID?
    }

    static let slow = CloseReason("slow")
    static let quit = CloseReason("quit")
    static let tooLong = CloseReason("toolong")
    static let idle = CloseReason("idle")

    let limits: ChatLimits
    let log: (String) -> Void
    private(set) var members: [ConnectionID: Member] = [:]
    /// Lowercased name → member, so names are unique regardless of case.
    private var byName: [String: ConnectionID] = [:]
    /// One message being sent to many: built once, written to each, and reused.
    private var outgoing: [UInt8] = []
    private let clock = ContinuousClock()

    init(limits: ChatLimits, log: @escaping (String) -> Void) {
        self.limits = limits
        self.log = log
        outgoing.reserveCapacity(limits.maxLineBytes + 128)
    }

    typealias Loop = ReactorContext<ChatHandler>

    // MARK: joining and leaving

    func join(_ id: ConnectionID, peer: SocketAddress, on loop: Loop) {
        var name = peer.description
        if byName[name.lowercased()] != nil { name += id.description }
        members[id] = Member(name: name, lastLine: clock.now)
        byName[name.lowercased()] = id
        log("join \(name) (\(id))")
        send("* welcome \(name); \(members.count - 1) other(s) here; commands: /nick NAME, /who, /quit\n",
             to: id, on: loop)
        broadcast("* \(name) joined\n", from: id, on: loop)
        if let first = [limits.idleWarning, limits.idleTimeout].compactMap({ $0 }).min() {
            members[id]?.timer = scheduleIdleCheck(id, after: first, on: loop)
        }
    }

    /// Takes `id` out of the room and tells the others. The room calls it as soon as it decides to
    /// close a connection (`/quit`, too long, slow, idle), because the reactor's `onClose` may come
    /// up to a couple of seconds later (a graceful close waits for the peer to close too); the
    /// handler's `onClose` calls it for closes the room did not start (EOF, reset, shutdown).
    func leave(_ id: ConnectionID, reason: CloseReason, on loop: Loop) {
        guard let member = members.removeValue(forKey: id) else { return }
        byName[member.name.lowercased()] = nil
        if let timer = member.timer { loop.cancel(timer) }
        log("leave \(member.name) (\(id)) reason=\(reason)")
        // At shutdown everyone is leaving: nobody is left to tell.
        if reason != .shutdown {
            broadcast("* \(member.name) left (\(reason.name))\n", from: id, on: loop)
        }
    }

    // MARK: lines

    /// One complete line from `id`, without its newline.
    func handle(line: UnsafeRawBufferPointer, from id: ConnectionID, on loop: Loop) -> Action {
        guard members[id] != nil else { return .continue }
        members[id]!.lastLine = clock.now
        members[id]!.warned = false
        if line.isEmpty { return .continue }
        if line[0] == UInt8(ascii: "/") {
            if line.count > 1 && line[1] == UInt8(ascii: "/") {
                // `//text` sends `/text`.
                say(UnsafeRawBufferPointer(rebasing: line.dropFirst()), from: id, on: loop)
                return .continue
            }
            return command(String(decoding: line, as: UTF8.self), from: id, on: loop)
        }
        say(line, from: id, on: loop)
        return .continue
    }

    /// `name: text` to everyone but the sender. The text goes through byte for byte.
    private func say(_ text: UnsafeRawBufferPointer, from id: ConnectionID, on loop: Loop) {
        guard let sender = members[id] else { return }
        outgoing.removeAll(keepingCapacity: true)
        outgoing.append(contentsOf: sender.name.utf8)
        outgoing.append(contentsOf: ": ".utf8)
        outgoing.append(contentsOf: text)
        outgoing.append(UInt8(ascii: "\n"))
        let message = outgoing
        message.withUnsafeBytes { fanOut($0, except: id, on: loop) }
    }

    private func command(_ text: String, from id: ConnectionID, on loop: Loop) -> Action {
        let words = text.split(separator: " ", omittingEmptySubsequences: true)
        switch words.first {
        case "/quit":
            send("* bye\n", to: id, on: loop)
            leave(id, reason: Self.quit, on: loop)
            return .close(Self.quit)
        case "/nick":
            guard words.count == 2 else {
                send("* usage: /nick NAME (1-32 letters, digits, '_', '-' or '.')\n", to: id, on: loop)
                return .continue
            }
            rename(id, to: String(words[1]), on: loop)
        case "/who":
            let names = members.values.map(\.name).sorted()
            send("* \(names.count) here: \(names.joined(separator: ", "))\n", to: id, on: loop)
        default:
            send("* unknown command \(words.first ?? ""); try /nick NAME, /who, /quit (//text sends /text)\n",
                 to: id, on: loop)
        }
        return .continue
    }

    private func rename(_ id: ConnectionID, to name: String, on loop: Loop) {
        guard let old = members[id]?.name else { return }
        guard Self.isValidName(name) else {
            send("* invalid name \(name): use 1-32 letters, digits, '_', '-' or '.'\n", to: id, on: loop)
            return
        }
        if let holder = byName[name.lowercased()], holder != id {
            send("* name \(name) is taken\n", to: id, on: loop)
            return
        }
        byName[old.lowercased()] = nil
        byName[name.lowercased()] = id
        members[id]!.name = name
        log("rename \(old) -> \(name) (\(id))")
        send("* you are now \(name)\n", to: id, on: loop)
        broadcast("* \(old) is now \(name)\n", from: id, on: loop)
    }

    static func isValidName(_ name: String) -> Bool {
        (1...32).contains(name.utf8.count) && name.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "."):
                return true
            default:
                return false
            }
        }
    }

    /// The client's line passed `maxLineBytes`: tell it, and close.
    func lineTooLong(_ id: ConnectionID, on loop: Loop) -> Action {
        send("* line too long (limit \(limits.maxLineBytes) bytes); closing\n", to: id, on: loop)
        leave(id, reason: Self.tooLong, on: loop)
        return .close(Self.tooLong)
    }

    // MARK: writing

    /// A server notice to everyone but `id`.
    func broadcast(_ text: String, from id: ConnectionID, on loop: Loop) {
        var text = text
        text.withUTF8 { fanOut(UnsafeRawBufferPointer($0), except: id, on: loop) }
    }

    /// A server notice to one member. Notices count against the same limit as messages.
    func send(_ text: String, to id: ConnectionID, on loop: Loop) {
        var text = text
        text.withUTF8 { deliver(UnsafeRawBufferPointer($0), to: id, on: loop) }
    }

    private func fanOut(_ bytes: UnsafeRawBufferPointer, except sender: ConnectionID, on loop: Loop) {
        for id in members.keys where id != sender {
            deliver(bytes, to: id, on: loop)
        }
    }

    /// Writes to one receiver, and drops it if it has fallen more than `maxPendingBytes` behind.
    ///
    /// The reactor writes straight to the socket while the receiver keeps up, and queues only what
    /// the kernel does not take. So a receiver holds at most `maxPendingBytes` plus one message
    /// here before it is dropped; after that, writes to it report `.closed` and cost nothing.
    private func deliver(_ bytes: UnsafeRawBufferPointer, to id: ConnectionID, on loop: Loop) {
        guard case .queued(let pending) = loop.write(to: id, bytes), pending > limits.maxPendingBytes else { return }
        // Discard, not flush: a peer that does not read would never take the queued bytes.
        loop.close(id, reason: Self.slow, discardingOutput: true)
        // `fanOut` iterates over a copy of the member list, so leaving here is safe; the write to
        // this receiver later in the same fan-out reports `.closed` and costs nothing.
        leave(id, reason: Self.slow, on: loop)
    }

    // MARK: idle timers

    /// One one-shot timer per member, re-armed only when it fires: a line just stamps
    /// `lastLine`, so chatting costs no timer operations at all.
    private func scheduleIdleCheck(_ id: ConnectionID, after delay: Duration, on loop: Loop) -> TimerID {
        loop.schedule(after: delay) { [unowned self] in self.idleCheck(id, on: loop) }
    }

    private func idleCheck(_ id: ConnectionID, on loop: Loop) {
        guard var member = members[id] else { return }
        let idle = clock.now - member.lastLine
        member.timer = nil
        members[id] = member
        if let timeout = limits.idleTimeout, idle >= timeout {
            send("* idle for \(Self.seconds(idle)); disconnecting\n", to: id, on: loop)
            loop.close(id, reason: Self.idle)
            leave(id, reason: Self.idle, on: loop)
            return
        }
        if let warning = limits.idleWarning, idle >= warning, !member.warned {
            member.warned = true
            var notice = "* you have been idle for \(Self.seconds(idle))"
            if let timeout = limits.idleTimeout { notice += "; you will be disconnected after \(Self.seconds(timeout)) of silence" }
            send(notice + "\n", to: id, on: loop)
        }
        // The next deadline: the warning if it is still to come, else the timeout.
        var next: Duration?
        if let warning = limits.idleWarning, !member.warned { next = warning - idle }
        if let timeout = limits.idleTimeout { next = min(next ?? timeout - idle, timeout - idle) }
        // Warned, and no timeout: look again one warning period later (a line clears `warned`).
        if next == nil, let warning = limits.idleWarning { next = warning }
        if let next { member.timer = scheduleIdleCheck(id, after: max(next, .milliseconds(1)), on: loop) }
        members[id] = member
    }

    private static func seconds(_ duration: Duration) -> String {
        let ms = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        return ms % 1000 == 0 ? "\(ms / 1000)s" : "\(Double(ms) / 1000)s"
    }
}
