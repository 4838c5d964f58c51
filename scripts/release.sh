#!/usr/bin/env bash
# Builds the self-contained release: reflectd, reflect and reflect-bench with the Swift standard
# library linked in statically (--static-swift-stdlib), so they run on a machine without a Swift
# toolchain; strips them; makes their man pages (swift-argument-parser's generate-manual, synopsis
# fixed) and bash/zsh/fish completions; and reports sizes and what they still link dynamically.
#
# Usage: scripts/release.sh [--compare]
#
#   scripts/release.sh                 # into .build-release/dist
#   scripts/release.sh --compare       # also build the ordinary (dynamic) release and compare
#                                      # sizes and start-up times
#
# Output layout (what scripts/install.sh and scripts/deb.sh install):
#   .build-release/dist/bin/{reflectd,reflect,reflect-bench}
#   .build-release/dist/man/man1/{reflectd,reflect,reflect-bench}.1
#   .build-release/dist/completions/{bash,zsh,fish}/…
set -euo pipefail
compare=no
for argument in "$@"; do
    case "$argument" in
        --compare) compare=yes ;;
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        *) echo "release.sh: unknown argument: $argument (see --help)" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"


scratch=.build-release
dist=$scratch/dist
products=(reflectd reflect reflect-bench)
step() { printf '=== %s\n' "$*"; }

step "swift build -c release --static-swift-stdlib (scratch path $scratch)"
for product in "${products[@]}" generate-manual; do
    swift build -c release --static-swift-stdlib --scratch-path "$scratch" --product "$product" 2>&1 \
        | grep -vE '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Write|Linking|Planning)' || true
    test -x "$scratch/release/$product" || { echo "release.sh: $product was not built" >&2; exit 1; }
done

rm -rf "$dist"
mkdir -p "$dist/bin" "$dist/man/man1" "$dist/completions/bash" "$dist/completions/zsh" "$dist/completions/fish"
for product in "${products[@]}"; do
    install -m 0755 "$scratch/release/$product" "$dist/bin/$product"
    strip --strip-all "$dist/bin/$product"
done

step "man pages (generate-manual, synopsis fixed)"
# generate-manual documents the implicit `help` subcommand (`help subcommands...`, with a second
# --version), and older versions put `subcommand` in the synopsis: our tools have no subcommands,
# so both go.
manual_date=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}" +%Y-%m-%d)
for product in "${products[@]}"; do
    "$scratch/release/generate-manual" "$dist/bin/$product" --section 1 --date "$manual_date" \
        --authors "reflectd maintainers" --output-directory "$dist/man/man1" >/dev/null
    page="$dist/man/man1/$product.1"
    test -s "$page" || { echo "release.sh: no man page for $product" >&2; exit 1; }
    # An empty line is not mdoc (man --warnings: "empty input line"): a paragraph break is .Pp.
    sed -i -e '/^\.It Em help$/,/^\.El$/d' -e '/^\.Ar subcommand$/d' -e '/^\.Op Ar subcommand/d' \
        -e 's/^$/.Pp/' "$page"
    if grep -q 'subcommand' "$page"; then echo "release.sh: $page still mentions a subcommand" >&2; exit 1; fi
done
# What --help does not say (SIGNALS, ENVIRONMENT, FILES, EXAMPLES, SEE ALSO) is written by hand in
# docs/reflectd.1.sections: its first part goes before EXIT STATUS, the part after the line
# `.\" after EXIT STATUS` before AUTHORS (mdoc(7) order); its own comment lines are left out.
# The options stay generated, so the page cannot fall behind --help.
page="$dist/man/man1/reflectd.1"
awk -v extra=docs/reflectd.1.sections '
    BEGIN {
        part = 1
        while ((getline line < extra) > 0) {
            if (line ~ /^\.\\" after EXIT STATUS/) { part = 2; continue }
            if (line ~ /^\.\\"/) continue
            text[part] = text[part] line "\n"
        }
        if (text[1] == "" || text[2] == "") exit 2
    }
    /^\.Sh "EXIT STATUS"$/ { printf "%s", text[1]; before_exit_status = 1 }
    /^\.Sh AUTHORS$/ { printf "%s", text[2]; before_authors = 1 }
    { print }
    END { if (!before_exit_status || !before_authors) exit 1 }
' "$page" > "$page.new" || { echo "release.sh: cannot put docs/reflectd.1.sections into $page" >&2; exit 1; }
mv "$page.new" "$page"
# groff's warnings, as lintian's groff-message check sees them (man-db: man --warnings).
if command -v man >/dev/null 2>&1; then
    for page in "$dist"/man/man1/*.1; do
        warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$page" 2>&1 >/dev/null || true)
        [ -z "$warnings" ] || { echo "release.sh: $page: $warnings" >&2; exit 1; }
    done
fi

step "shell completions"
for product in "${products[@]}"; do
    # bash-completion sources the file: it is not a script, so no #! line.
    "$dist/bin/$product" --generate-completion-script bash | sed '1{/^#!/d}' > "$dist/completions/bash/$product"
    "$dist/bin/$product" --generate-completion-script zsh > "$dist/completions/zsh/_$product"
    "$dist/bin/$product" --generate-completion-script fish > "$dist/completions/fish/$product.fish"
done

step "what the binaries link dynamically (no libswift*)"
for product in "${products[@]}"; do
    if ldd "$dist/bin/$product" | grep -q 'libswift\|/opt/swift'; then
        echo "release.sh: $product still needs the Swift runtime:" >&2
        ldd "$dist/bin/$product" >&2
        exit 1
    fi
    printf '%s:' "$product"; ldd "$dist/bin/$product" | awk '{print " " $1}' | tr -d '\n'; echo
done

step "sizes (stripped, static Swift standard library)"
for product in "${products[@]}"; do
    printf '  %-14s %10d bytes (unstripped %d)\n' "$product" "$(stat -c %s "$dist/bin/$product")" \
        "$(stat -c %s "$scratch/release/$product")"
done
"$dist/bin/reflectd" --version

if [ "$compare" = yes ]; then
    dynamic=.build-release-dynamic
    step "the ordinary (dynamic) release build, for comparison (scratch path $dynamic)"
    for product in "${products[@]}"; do
        swift build -c release --scratch-path "$dynamic" --product "$product" 2>&1 \
            | grep -vE '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Write|Linking|Planning)' || true
    done
    mkdir -p "$dynamic/stripped"
    for product in "${products[@]}"; do
        install -m 0755 "$dynamic/release/$product" "$dynamic/stripped/$product"
        strip --strip-all "$dynamic/stripped/$product"
        printf '  %-14s static %10d bytes   dynamic %10d bytes (+ %d bytes of libswift*.so it loads)\n' "$product" \
            "$(stat -c %s "$dist/bin/$product")" "$(stat -c %s "$dynamic/stripped/$product")" \
            "$(ldd "$dynamic/release/$product" | awk '/libswift|libFoundation|libdispatch|libBlocksRuntime/ {print $3}' | xargs -r stat -L -c %s | awk '{s += $1} END {print s + 0}')"
    done
    step "start-up time: exec to the 'listening on' line, and --version, median of 30 runs each"
    python3 scripts/startup-time.py "$dist/bin/reflectd" "$dynamic/stripped/reflectd"
fi
