#!/usr/bin/env bash
# Build the five baseline echo servers used by reflectd's comparison
# benchmarks. Idempotent: safe to run repeatedly (C sources are recompiled
# only when changed, SwiftPM rebuilds incrementally, uvloop is installed
# only when missing).
#
# Usage: benchmarks/baselines/build.sh      (no arguments; --help prints this)
#
# Build logs go to stderr; stdout gets exactly five lines, the absolute
# paths of the binaries, in this order:
#   c-epoll/echo_epoll, c-fork/echo_fork, nio-echo (release), go-echo/go-echo,
#   uvloop-echo/echo.py (a Python script: run it with $PYTHON)
# Exits non-zero on any failure. The Go server needs a Go toolchain (Debian:
# golang-go); without one it is skipped with a warning (its path is still
# printed, and the binary is missing). The uvloop server needs the uvloop
# package for $PYTHON: installed with `$PYTHON -m pip install uvloop` when
# missing; if that fails, a warning (its path is still printed).
#
# Environment: CC (default cc), SWIFT (default: swift on PATH, else
# /opt/swift/usr/bin/swift), GO (default: go on PATH), PYTHON (default python3).
set -euo pipefail
for argument in "$@"; do
    case "$argument" in
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument: $argument (see --help)" >&2; exit 2 ;;
    esac
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CC="${CC:-cc}"
CFLAGS="${CFLAGS:--O2 -Wall -Wextra}"

if [[ -z "${SWIFT:-}" ]]; then
    if command -v swift >/dev/null 2>&1; then
        SWIFT="$(command -v swift)"
    elif [[ -x /opt/swift/usr/bin/swift ]]; then
        SWIFT=/opt/swift/usr/bin/swift
    else
        echo "build.sh: swift not found (set SWIFT=/path/to/swift)" >&2
        exit 1
    fi
fi

build_c() { # build_c DIR NAME
    local src="$here/$1/$2.c" out="$here/$1/$2"
    if [[ ! -x "$out" || "$src" -nt "$out" ]]; then
        echo "+ $CC $CFLAGS -o $out $src" >&2
        # shellcheck disable=SC2086
        "$CC" $CFLAGS -o "$out.tmp.$$" "$src" >&2
        mv -f "$out.tmp.$$" "$out"
    else
        echo "= $out is up to date" >&2
    fi
}

build_c c-epoll echo_epoll
build_c c-fork echo_fork

nio_pkg="$here/nio-echo"
echo "+ $SWIFT build -c release --package-path $nio_pkg" >&2
"$SWIFT" build -c release --package-path "$nio_pkg" >&2
nio_bin="$("$SWIFT" build -c release --package-path "$nio_pkg" --show-bin-path)/nio-echo"
if [[ ! -x "$nio_bin" ]]; then
    echo "build.sh: expected binary missing: $nio_bin" >&2
    exit 1
fi

# Go: standard library only, so nothing is downloaded (GOPROXY=off); -trimpath keeps this
# machine's paths out of the binary.
GO="${GO:-$(command -v go || true)}"
go_bin="$here/go-echo/go-echo"
if [[ -n "$GO" ]]; then
    echo "+ $GO build -trimpath -o $go_bin ($here/go-echo)" >&2
    (cd "$here/go-echo" && GOPROXY=off GOFLAGS= GOTOOLCHAIN=local "$GO" build -trimpath -o "$go_bin.tmp.$$" . >&2)
    mv -f "$go_bin.tmp.$$" "$go_bin"
else
    echo "build.sh: warning: no Go toolchain (apt-get install golang-go): go-echo not built" >&2
fi

# uvloop: a pip package (PyPI), for the interpreter that will run echo.py.
PYTHON="${PYTHON:-python3}"
if "$PYTHON" -c 'import uvloop' 2>/dev/null; then
    echo "= uvloop is installed for $PYTHON" >&2
else
    echo "+ $PYTHON -m pip install uvloop" >&2
    "$PYTHON" -m pip install --quiet uvloop >&2 \
        || echo "build.sh: warning: pip install uvloop failed: uvloop-echo will not run" >&2
fi

echo "$here/c-epoll/echo_epoll"
echo "$here/c-fork/echo_fork"
echo "$nio_bin"
echo "$go_bin"
echo "$here/uvloop-echo/echo.py"
