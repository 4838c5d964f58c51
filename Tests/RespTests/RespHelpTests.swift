// `--help` of resp-server (and of reflectd, whose option texts it shares through ToolSupport):
// every flag a text mentions is a flag of that binary.

import Foundation
import TestSupport
import XCTest

final class RespHelpTests: XCTestCase {
    /// The shared --max-connections-per-client text named reflectd's --max-connections, which
    /// resp-server has not.
    func testRespServerHelpMentionsOnlyItsOwnFlags() throws {
        let help = try Self.help("resp-server")
        XCTAssertEqual(Self.undefinedFlags(help), [], help)
        XCTAssertTrue(help.contains("--max-connections-per-client"), help)
        XCTAssertTrue(help.contains("--stop-delay"), help)
    }

    func testReflectdHelpMentionsOnlyItsOwnFlags() throws {
        let help = try Self.help("reflectd")
        XCTAssertEqual(Self.undefinedFlags(help), [], help)
        XCTAssertTrue(help.contains("--max-connections-per-client"), help)
    }

    /// Flags mentioned anywhere in `help` that no option line (`  --name <value>  text`,
    /// `  --flag/--no-flag`) defines.
    static func undefinedFlags(_ help: String) -> [String] {
        var defined = Set<String>(), mentioned = Set<String>()
        for line in help.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("  -") {
                // The definition ends where the text starts (two spaces), if on the same line.
                let body = line.dropFirst(2)
                let definition = body.range(of: "  ").map { body[..<$0.lowerBound] } ?? body
                defined.formUnion(flags(in: definition))
            }
            mentioned.formUnion(flags(in: line))
        }
        return mentioned.subtracting(defined).sorted()
    }

    /// `--name` tokens in `text`.
    static func flags<S: StringProtocol>(in text: S) -> [String] {
        let characters = Array(text)
        var found: [String] = []
        var i = 0
        while i + 2 < characters.count {
            if characters[i] == "-", characters[i + 1] == "-", characters[i + 2].isLetter, i == 0 || !(characters[i - 1].isLetter || characters[i - 1] == "-") {
                var j = i + 2
                while j < characters.count, characters[j].isLetter || characters[j].isNumber || characters[j] == "-" { j += 1 }
                found.append(String(characters[i..<j]))
                i = j
            } else {
                i += 1
            }
        }
        return found
    }

    static func help(_ name: String) throws -> String {
        let process = Process()
        process.executableURL = try ChildServer.binary(name)
        process.arguments = ["--help"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "\(name) --help")
        return String(decoding: data, as: UTF8.self)
    }
}
