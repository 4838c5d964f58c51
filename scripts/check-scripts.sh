#!/usr/bin/env bash
# Every runnable script in the repository answers --help and refuses an unknown argument, and
# does neither by running something first (issue 19). For each script:
#   1. `SCRIPT --help` exits 0 within 2 s and prints, on stdout, a line that starts with `usage`
#      or `Usage` (and no `set -e...` line: help text cut from the header one line too far);
#   2. `SCRIPT --no-such-flag` exits non-zero within 2 s and says why on stderr;
#   and in both cases it ran nothing: it called none of the stubbed commands (swift, swiftc,
#   apt-get, dpkg, dpkg-deb, make, haproxy, valgrind, ...: each stub records its call and fails),
#   and `git status --ignored` of the work tree is unchanged (no build folder, no output file).
# The stubs come first on PATH and, where a private mount namespace can be had (root: CI), also
# cover /opt/swift/usr/bin, which most scripts put first on PATH themselves.
#
# Usage: scripts/check-scripts.sh [SCRIPT...]
#        Without arguments: every *.sh and *.py that git knows (tracked or new, not ignored) and
#        .ci/run, except fuzz/lib.sh (sourced, not run). A script that is not executable runs
#        with python3 or bash. Exits non-zero if any script fails.
set -euo pipefail
scripts=()
for argument in "$@"; do
    case "$argument" in
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        -*) echo "check-scripts.sh: unknown argument: $argument (see --help)" >&2; exit 2 ;;
        *) scripts+=("$argument") ;;
    esac
done
cd "$(dirname "$0")/.."

stubbed=(swift swiftc apt-get apt dpkg dpkg-deb dpkg-shlibdeps lintian make cc gcc clang go haproxy
         valgrind redis-server redis-benchmark ip nft tc systemctl systemd-analyze strip)
limit_ms=2000

# Once, in a private mount namespace where /opt/swift/usr/bin holds the stubs too.
if [ -z "${CHECK_SCRIPTS_NS:-}" ] && [ -d /opt/swift/usr/bin ] && unshare -m --propagation private true 2>/dev/null; then
    export CHECK_SCRIPTS_NS=1
    exec unshare -m --propagation private "$0" "$@"
fi

work=$(mktemp -d /tmp/reflectd-check-scripts.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/bin"
for command in "${stubbed[@]}"; do
    printf '#!/bin/sh\necho "%s $*" >>"%s/calls"\nexit 97\n' "$command" "$work" >"$work/bin/$command"
    chmod 0755 "$work/bin/$command"
done
hidden="stubs on PATH"
if [ -n "${CHECK_SCRIPTS_NS:-}" ]; then
    mount -t tmpfs -o size=1m tmpfs /opt/swift
    mkdir -p /opt/swift/usr/bin
    cp "$work/bin/swift" "$work/bin/swiftc" /opt/swift/usr/bin/
    hidden="stubs on PATH and in /opt/swift/usr/bin"
fi
export PATH="$work/bin:$PATH"

if [ ${#scripts[@]} -eq 0 ]; then
    mapfile -t scripts < <({ git ls-files --cached --others --exclude-standard -- '*.sh' '*.py'; echo .ci/run; } \
        | grep -vx 'fuzz/lib.sh' | sort -u)
fi

# attempt SCRIPT ARGUMENT: runs it (bounded), sets status, elapsed_ms, and leaves its stdout and
# stderr in $work/out and $work/err; fails the script if it called a stub or changed the tree.
attempt() {
    local script=$1 argument=$2 runner=()
    if [ ! -x "$script" ]; then
        case "$script" in *.py) runner=(python3) ;; *) runner=(bash) ;; esac
    fi
    : >"$work/calls"
    git status --porcelain --ignored --untracked-files=normal >"$work/before" 2>/dev/null || true
    local start end
    start=$(date +%s%N)
    status=0
    timeout --kill-after=2 10 "${runner[@]}" "./$script" "$argument" </dev/null >"$work/out" 2>"$work/err" || status=$?
    end=$(date +%s%N)
    elapsed_ms=$(( (end - start) / 1000000 ))
    git status --porcelain --ignored --untracked-files=normal >"$work/after" 2>/dev/null || true
    problems=()
    [ -s "$work/calls" ] && problems+=("$argument ran: $(paste -sd ';' "$work/calls")")
    cmp -s "$work/before" "$work/after" || problems+=("$argument changed the tree: $(diff "$work/before" "$work/after" | grep '^[<>]' | head -3 | paste -sd ';')")
    [ "$elapsed_ms" -le "$limit_ms" ] || problems+=("$argument took ${elapsed_ms} ms (limit ${limit_ms} ms)")
    return 0
}

failed=0
for script in "${scripts[@]}"; do
    [ -f "$script" ] || { echo "FAIL $script: no such file"; failed=$((failed + 1)); continue; }
    all=()
    attempt "$script" --help
    all+=("${problems[@]}")
    [ "$status" -eq 0 ] || all+=("--help exited $status: $(head -c 300 "$work/err" | paste -sd ' ')")
    grep -qE '^(usage|Usage)' "$work/out" || all+=("--help printed no line starting with usage/Usage on stdout")
    ! grep -qE '^set -[a-z]' "$work/out" || all+=("--help printed a line of the script itself: $(grep -m 1 -E '^set -[a-z]' "$work/out")")
    help_ms=$elapsed_ms

    attempt "$script" --no-such-flag
    all+=("${problems[@]}")
    [ "$status" -ne 0 ] || all+=("--no-such-flag exited 0")
    [ "$status" -ne 124 ] && [ "$status" -ne 137 ] || all+=("--no-such-flag was killed after 10 s")
    [ -s "$work/err" ] || all+=("--no-such-flag said nothing on stderr")

    if [ ${#all[@]} -eq 0 ]; then
        printf 'ok   %-36s --help %4d ms, --no-such-flag exit %d\n' "$script" "$help_ms" "$status"
    else
        failed=$((failed + 1))
        printf 'FAIL %s\n' "$script"
        printf '       %s\n' "${all[@]}"
    fi
done
echo "check-scripts: ${#scripts[@]} scripts, $failed failed ($hidden)"
[ "$failed" -eq 0 ]
