import ArgumentParser
import ClientAdmission
import Glibc
import Logging

// Option types that every server executable of the package parses the same way.

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// `--max-connections-per-client N|auto|off`, as every server parses it.
extension PerClientLimit: ExpressibleByArgument {}

/// `--reactors N|auto`: how many reactor threads, a number or `auto` (one per online CPU).
public struct ReactorCount: ExpressibleByArgument, Sendable {
    public let value: Int

    public init?(argument: String) {
        if argument == "auto" {
            value = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        } else if let n = Int(argument) {
            value = n  // checked by the command's validate(), for a message that says what is allowed
        } else {
            return nil
        }
    }

    public init(_ value: Int) { self.value = value }

    /// How `--help` shows the default: as a user would type it (an instance requirement).
    public var defaultValueDescription: String { String(value) }
}
