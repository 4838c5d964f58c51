#!/usr/bin/env python3
"""The documentation pass of CI: for each library target, build its DocC catalog with warnings
as errors, and check the catalog's symbol links against the compiler's symbol graph.

For each TARGET:
  1. `swift package --scratch-path .build-docs generate-documentation --target TARGET
     --warnings-as-errors`: any DocC warning (a broken link, a missing parameter doc, ...)
     fails the pass, and the log's diagnostics are printed.
  2. The public symbols of TARGET, read from the symbol graph that step 1 extracted
     (.build-docs/*/extracted-symbols/*/TARGET/*.symbols.json), are compared with the
     ``Symbol`` links in the target's catalog (Sources/TARGET/TARGET.docc/*.md):
       - a public symbol that no link names is missing from the catalog (fails);
       - a link that names no public symbol links to nothing (fails).
     A link is a symbol's path (``Type/member(label:)``), optionally after the module's
     name, and with DocC's disambiguation suffixes (``write(_:)-(String)``) allowed.
     Conformance boilerplate needs no link: ==, !=, hash(into:), hashValue, description,
     debugDescription, init(rawValue:), rawValue.

Usage: scripts/check-docs.py [--no-build] [TARGET[=CATALOG]...]
       TARGET      a library target to check; without any, the TARGETS list below (add a
                   product's target there, one line each). CATALOG: the .docc folder, when it
                   is not Sources/TARGET/TARGET.docc.
       --no-build  skip step 1 and use the symbol graph a previous run left in .build-docs
Exits 0 when every target passes, 1 when one fails, 2 on a usage error.
"""
import glob
import json
import os
import re
import subprocess
import sys

# The library targets whose DocC catalogs CI builds and checks: one line each.
TARGETS = [
    "Reactor",
    "ClientAdmission",
    "NonBlockingLog",
    "ServerKit",
    "ZeroDropUpgrade",
]

BOILERPLATE = {"==(_:_:)", "!=(_:_:)", "hash(into:)", "hashValue", "description", "debugDescription",
               "init(rawValue:)", "rawValue"}
LINK = re.compile(r"``([^`\s][^`]*)``")
# DocC's disambiguation of the last part of a link: -(Type,Type), -swift.property, -3x4f5.
SUFFIX = re.compile(r"^(.+?)-(\([^()]*\)|swift\.[a-z.]+|[a-z0-9]{4,6}|[A-Za-z]+)$")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(target):
    command = ["swift", "package", "--scratch-path", ".build-docs", "generate-documentation",
               "--target", target, "--warnings-as-errors"]
    run = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    diagnostics = sorted({line for line in run.stdout.splitlines() if re.search(r"\b(warning|error):", line)})
    # DocC's warnings are errors here (its exit status says so); a compiler warning while
    # building the target or a dependency is printed but does not fail the pass.
    if run.returncode != 0:
        print(f"{target}: DocC failed (exit {run.returncode}), warnings count as errors:")
        print("\n".join(diagnostics) if diagnostics else "\n".join(run.stdout.splitlines()[-30:]))
        return False
    if diagnostics:
        print("\n".join(diagnostics))
    print(f"{target}: DocC built with no warning")
    return True


def public_symbols(target):
    files = glob.glob(os.path.join(ROOT, ".build-docs", "*", "extracted-symbols", "*", target, "*.symbols.json"))
    if not files:
        return None
    symbols = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            graph = json.load(f)
        for symbol in graph["symbols"]:
            if symbol.get("accessLevel") not in ("public", "open"):
                continue
            components = symbol["pathComponents"]
            if components[-1] in BOILERPLATE:
                continue
            symbols["/".join(components)] = symbol["kind"]["identifier"]
    return symbols


def catalog_links(catalog):
    links = {}
    for path in sorted(glob.glob(os.path.join(catalog, "**", "*.md"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                for match in LINK.finditer(line):
                    links.setdefault(match.group(1), f"{os.path.relpath(path, ROOT)}:{number}")
    return links


def candidates(link, module):
    """The symbol paths a link may name."""
    parts = link.split("/")
    stripped = [SUFFIX.sub(r"\1", part) if "-" in part else part for part in parts]
    paths = {"/".join(parts), "/".join(stripped)}
    for path in list(paths):
        if path.startswith(module + "/"):
            paths.add(path[len(module) + 1:])
    return paths


def check(target, catalog, no_build):
    if not os.path.isdir(catalog):
        print(f"{target}: no catalog at {os.path.relpath(catalog, ROOT)}")
        return False
    ok = no_build or build(target)
    symbols = public_symbols(target)
    if symbols is None:
        print(f"{target}: no symbol graph under .build-docs (run without --no-build)")
        return False
    links = catalog_links(catalog)
    named = set()
    nowhere = []
    for link, where in sorted(links.items(), key=lambda item: item[1]):
        hits = {path for path in candidates(link, target) if path in symbols}
        if link == target or hits:
            named |= hits
        else:
            nowhere.append(f"  {where}: ``{link}``")
    missing = sorted(path for path in symbols if path not in named)
    shown = os.path.relpath(catalog, ROOT)
    if missing:
        ok = False
        print(f"{target}: {len(missing)} public symbol(s) missing from {shown} (link each with ``Symbol``):")
        print("\n".join(f"  {symbols[path]} {path}" for path in missing))
    if nowhere:
        ok = False
        print(f"{target}: {len(nowhere)} link(s) in {shown} to no public symbol:")
        print("\n".join(nowhere))
    if ok:
        print(f"{target}: the catalog links all {len(symbols)} public symbols, and nothing else")
    return ok


def main(arguments):
    targets = []
    no_build = False
    for argument in arguments:
        if argument in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        if argument == "--no-build":
            no_build = True
        elif argument.startswith("-") or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(=.+)?", argument):
            print(f"check-docs.py: unknown argument: {argument} (see --help)", file=sys.stderr)
            return 2
        else:
            targets.append(argument)
    failed = []
    for entry in targets or TARGETS:
        target, _, catalog = entry.partition("=")
        catalog = os.path.join(ROOT, catalog) if catalog else os.path.join(ROOT, "Sources", target, f"{target}.docc")
        if not check(target, catalog, no_build):
            failed.append(target)
    if failed:
        print(f"documentation check failed for: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
