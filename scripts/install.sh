#!/usr/bin/env bash
# Installs reflectd from the release build (scripts/release.sh; built first if missing).
#
# Usage: scripts/install.sh [--prefix /usr/local] [--destdir DIR] [--from DIR] [--no-manifest]
#        scripts/install.sh --uninstall [--prefix /usr/local] [--destdir DIR]
#
# Installs, under PREFIX (inside DESTDIR, for packaging, when given):
#   bin/reflectd bin/reflect bin/reflect-bench                          (0755)
#   lib/systemd/system/reflectd.service, reflectd.socket                (0644; ExecStart=PREFIX/bin/reflectd)
#   share/man/man1/reflectd.1 reflect.1 reflect-bench.1                 (0644)
#   share/bash-completion/completions/…, share/zsh/site-functions/_…,
#   share/fish/vendor_completions.d/….fish                              (0644)
#   share/reflectd/install-manifest: every file and every directory this script created
#
# Running it again is harmless: unchanged files are left alone, and the manifest keeps the
# directories the first run created. --uninstall removes exactly what the manifest lists (files,
# then the directories it created, if empty) and the manifest itself. --no-manifest (for
# scripts/deb.sh: dpkg keeps its own list) writes none.
#
# systemd looks for units in PREFIX/lib/systemd/system for PREFIX /usr and /usr/local; after
# installing: systemctl daemon-reload && systemctl enable --now reflectd.socket
set -euo pipefail
prefix=/usr/local
destdir=
from=.build-release/dist
action=install
manifest=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
        --destdir=*) destdir=${1#*=}; shift ;;
        --from) from=${2:?--from needs a directory}; shift 2 ;;
        --uninstall) action=uninstall; shift ;;
        --no-manifest) manifest=no; shift ;;
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."

case "$prefix" in
    /*) ;;
    *) echo "install.sh: --prefix must be an absolute path, got $prefix" >&2; exit 2 ;;
esac
prefix=${prefix%/}
[ -n "$prefix" ] || { echo "install.sh: --prefix / is not supported; use /usr" >&2; exit 2; }
if [ -n "$destdir" ]; then
    mkdir -p "$destdir"
    destdir=$(cd "$destdir" && pwd)
fi
root=$destdir$prefix
manifest_path=$prefix/share/reflectd/install-manifest

if [ "$action" = uninstall ]; then
    if [ ! -f "$destdir$manifest_path" ]; then
        echo "install.sh: nothing to uninstall: no $destdir$manifest_path" >&2
        exit 1
    fi
    # Files first, then the directories the manifest says we created, deepest first, each only
    # if it is empty (someone else's file in it is left alone, and so is the directory).
    dirs=()
    while read -r kind path; do
        case "$kind" in
            f) rm -f "$destdir$path"; echo "removed $destdir$path" ;;
            d) dirs+=("$path") ;;
        esac
    done < "$destdir$manifest_path"
    rm -f "$destdir$manifest_path"
    echo "removed $destdir$manifest_path"
    if [ ${#dirs[@]} -gt 0 ]; then
        printf '%s\n' "${dirs[@]}" | awk '{print length($0) " " $0}' | sort -rn | cut -d' ' -f2- |
            while read -r dir; do
                if rmdir "$destdir$dir" 2>/dev/null; then echo "removed $destdir$dir/"; else echo "kept $destdir$dir/ (not empty)"; fi
            done
    fi
    exit 0
fi

if [ ! -x "$from/bin/reflectd" ]; then
    echo "install.sh: no release build in $from; running scripts/release.sh"
    scripts/release.sh
fi

created_dirs=()
installed=()
# Directories the manifest of an earlier run says we created.
if [ -f "$destdir$manifest_path" ]; then
    while read -r kind path; do
        if [ "$kind" = d ]; then created_dirs+=("$path"); fi
    done < "$destdir$manifest_path"
fi

# ensure_dir DIR (without destdir): creates it and its missing parents, remembering them.
ensure_dir() {
    local dir=$1 missing=()
    while [ ! -d "$destdir$dir" ]; do
        missing=("$dir" "${missing[@]}")
        dir=$(dirname "$dir")
    done
    for dir in "${missing[@]}"; do
        mkdir -m 0755 "$destdir$dir"
        created_dirs+=("$dir")
    done
}

# put SOURCE MODE TARGET (target without destdir)
put() {
    local source=$1 mode=$2 target=$3
    ensure_dir "$(dirname "$target")"
    if [ -f "$destdir$target" ] && cmp -s "$source" "$destdir$target"; then
        chmod "$mode" "$destdir$target"
        echo "unchanged $destdir$target"
    else
        install -m "$mode" "$source" "$destdir$target.install-tmp"
        mv -f "$destdir$target.install-tmp" "$destdir$target"
        echo "installed $destdir$target"
    fi
    installed+=("$target")
}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

for tool in reflectd reflect reflect-bench; do
    put "$from/bin/$tool" 0755 "$prefix/bin/$tool"
    put "$from/man/man1/$tool.1" 0644 "$prefix/share/man/man1/$tool.1"
    put "$from/completions/bash/$tool" 0644 "$prefix/share/bash-completion/completions/$tool"
    put "$from/completions/zsh/_$tool" 0644 "$prefix/share/zsh/site-functions/_$tool"
    put "$from/completions/fish/$tool.fish" 0644 "$prefix/share/fish/vendor_completions.d/$tool.fish"
done

# The units start the installed binary: ExecStart names PREFIX/bin/reflectd.
sed -e "s|^ExecStart=/usr/local/bin/reflectd|ExecStart=$prefix/bin/reflectd|" deploy/reflectd.service > "$scratch/reflectd.service"
grep -q "^ExecStart=$prefix/bin/reflectd " "$scratch/reflectd.service" \
    || { echo "install.sh: deploy/reflectd.service has no ExecStart=/usr/local/bin/reflectd line to point at $prefix" >&2; exit 1; }
put "$scratch/reflectd.service" 0644 "$prefix/lib/systemd/system/reflectd.service"
put deploy/reflectd.socket 0644 "$prefix/lib/systemd/system/reflectd.socket"

if [ "$manifest" = yes ]; then
    ensure_dir "$(dirname "$manifest_path")"
    {
        for path in "${installed[@]}"; do echo "f $path"; done
        for dir in "${created_dirs[@]}"; do echo "d $dir"; done
    } | awk '!seen[$0]++' > "$scratch/manifest"
    put "$scratch/manifest" 0644 "$manifest_path" >/dev/null
    echo "manifest $destdir$manifest_path"
fi
