import ArgumentParser

/// Checks on the command line that swift-argument-parser does not make itself.
public enum OptionChecks {
    /// Rejects a single-value option given more than once (`--unix a --unix b`), which
    /// swift-argument-parser would otherwise resolve silently by keeping the last value.
    ///
    /// `names` are the long names without dashes (`"unix"`); both `--unix a` and `--unix=a`
    /// count. Arguments after a lone `--` are not options.
    public static func rejectRepeated(_ names: [String], in arguments: [String] = Array(CommandLine.arguments.dropFirst())) throws {
        var seen: [String: Int] = [:]
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if argument == "--" { break }
            guard argument.hasPrefix("--") else { continue }
            let body = argument.dropFirst(2)
            let name = String(body.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[0])
            guard names.contains(name) else { continue }
            seen[name, default: 0] += 1
            if seen[name]! > 1 {
                throw ValidationError("--\(name) was given more than once; give it once")
            }
            // The value of `--name value` is not an option, even if it looks like one.
            if !body.contains("=") { index += 1 }
        }
    }

    /// "must be between A and B, got V": the message for a number out of its range.
    public static func range<T: BinaryInteger>(_ option: String, _ value: T, _ range: ClosedRange<T>, unit: String = "") throws {
        guard range.contains(value) else {
            throw ValidationError("--\(option) must be between \(range.lowerBound) and \(range.upperBound)\(unit), got \(value)")
        }
    }
}
