// A connection's place in its byte stream, carried to another process (resp-server's upgrade,
// Examples/resp/Server/RespUpgrade.swift).

extension RequestFramer {
    /// The bytes received and not yet handed on: an unfinished request, or requests kept after a
    /// stop. They always start at a request boundary (the framer keeps the unfinished tail from
    /// the start of its request), so they are the whole of the framer's state: the parser can
    /// start over on them.
    public var handOverBytes: [UInt8] {
        guard let stash else { return [] }
        return Array(stash.bytes.bytes)
    }

    /// A framer holding `bytes` (``handOverBytes``), its parser at the start of them: the next
    /// ``feed(_:scratch:_:)`` or ``resume(scratch:_:)`` parses them first.
    public init(handOverBytes bytes: [UInt8]) {
        self.init()
        guard !bytes.isEmpty else { return }
        let stash = Stash()
        bytes.withUnsafeBytes { stash.bytes.append($0) }
        self.stash = stash
    }
}
