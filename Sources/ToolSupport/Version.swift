/// The one place the package's version is written. `--version` of reflectd, reflect,
/// reflect-bench and chat prints it; CHANGELOG.md and README.md state the same number, and a
/// test in ToolsTests checks that all of them agree.
public enum PackageVersion {
    /// The version of this package, as `MAJOR.MINOR.PATCH`.
    public static let string = "0.3.0"
}
