// The whole keyspace as bytes, carried to another process (resp-server's upgrade,
// Examples/resp/Server/RespUpgrade.swift). Keys and values are binary safe; there are no TTLs.

extension Keyspace {
    /// Why 512 MiB: Redis's own limit on one key or one value; a snapshot that announces more is
    /// not one this server wrote.
    public static let maxSnapshotString = 512 << 20

    /// Every key and value: a u64 count, then for each a u32 key length, the key, a u32 value
    /// length, the value (little-endian). Call it under ``lock()``.
    public func snapshot(into bytes: inout [UInt8]) {
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(v).littleEndian) { bytes.append(contentsOf: $0) } }
        withUnsafeBytes(of: UInt64(count).littleEndian) { bytes.append(contentsOf: $0) }
        for i in 0...mask where buckets[i].hash != 0 {
            let e = buckets[i].entry!
            let key = Self.key(e)
            let value = Self.value(e)
            u32(key.count)
            bytes.append(contentsOf: key)
            u32(value.count)
            bytes.append(contentsOf: value)
        }
    }

    /// A snapshot that cannot be read.
    public struct SnapshotError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Sets every key of a ``snapshot(into:)`` (starting at `offset`), replacing what is there.
    /// Call it under ``lock()``, before serving.
    /// - Throws: when the bytes are not a snapshot (nothing past them is read); the keys read
    ///   until then stay set.
    public func restore(_ bytes: ArraySlice<UInt8>) throws(SnapshotError) {
        var offset = bytes.startIndex
        func take(_ n: Int) throws(SnapshotError) -> ArraySlice<UInt8> {
            guard n >= 0, n <= bytes.endIndex - offset else { throw SnapshotError(description: "keyspace snapshot truncated") }
            defer { offset += n }
            return bytes[offset..<(offset + n)]
        }
        func u32() throws(SnapshotError) -> Int {
            let b = try take(4)
            return b.reversed().reduce(0) { $0 << 8 | Int($1) }
        }
        let c = try take(8)
        let announced = c.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        // Each entry takes at least 8 bytes: a count past that is a lie, and no loop runs on it.
        guard announced <= UInt64(bytes.count / 8) else { throw SnapshotError(description: "keyspace snapshot announces \(announced) keys") }
        for _ in 0..<Int(announced) {
            let keyLength = try u32()
            guard keyLength <= Self.maxSnapshotString else { throw SnapshotError(description: "a key of \(keyLength) bytes") }
            let key = try take(keyLength)
            let valueLength = try u32()
            guard valueLength <= Self.maxSnapshotString else { throw SnapshotError(description: "a value of \(valueLength) bytes") }
            let value = try take(valueLength)
            key.withUnsafeBytes { k in value.withUnsafeBytes { v in _ = set(k, v) } }
        }
        guard offset == bytes.endIndex else { throw SnapshotError(description: "\(bytes.endIndex - offset) bytes after the keyspace snapshot") }
    }
}
