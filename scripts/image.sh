#!/usr/bin/env bash
# Builds the reflectd container image (deploy/Containerfile, FROM scratch) with Debian's podman,
# from local files only: the static release binary of scripts/release.sh and the C
# libraries `ldd` lists for it. Reports the image's size; fails if it is 25 MB or more.
#
# Usage: scripts/image.sh [--tag NAME:TAG] [--no-build]
#   scripts/image.sh                     # scripts/release.sh (incremental), then reflectd:VERSION and :latest
#   scripts/image.sh --tag NAME:TAG      # another tag
#   scripts/image.sh --no-build          # use .build-release/dist as it is (fails if it is missing)
#   scripts/image.sh --help
#
# Needs: podman (run with runc: `podman --runtime /usr/sbin/runc`, since crun refuses these
# machines' hybrid cgroups) and root (rootful storage). The staged context is .build-image/context.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=
build=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) [ $# -ge 2 ] || { echo "image.sh: --tag needs a value" >&2; exit 2; }; tag=$2; shift ;;
        --tag=*) tag=${1#--tag=} ;;
        --no-build) build=no ;;
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        *) echo "image.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

# Why 25 MB: issue 24's target; reflectd and the C libraries are about 21 MB, so more means
# something unintended came in.
limit_bytes=$((25 * 1000 * 1000))
dist=.build-release/dist/bin
binaries=(reflectd)
step() { printf '=== %s\n' "$*"; }

command -v podman >/dev/null 2>&1 || { echo "image.sh: podman is not installed (apt-get install podman runc)" >&2; exit 1; }
if [ "$build" = yes ]; then
    step "scripts/release.sh (static release binaries)"
    scripts/release.sh
fi
for binary in "${binaries[@]}"; do
    test -x "$dist/$binary" || { echo "image.sh: no $dist/$binary (run without --no-build)" >&2; exit 1; }
done

step "staging the context: the binaries and what ldd lists"
context=.build-image/context
rm -rf .build-image
mkdir -p "$context/rootfs/etc"
for binary in "${binaries[@]}"; do
    install -m 0755 "$dist/$binary" "$context/rootfs/$binary"
    # Lines are `libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x…)` or, for the loader,
    # `/lib64/ld-linux-x86-64.so.2 (0x…)`: each file goes at the path the binary asks for.
    ldd "$dist/$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r library; do
        mkdir -p "$context/rootfs$(dirname "$library")"
        cp -L "$library" "$context/rootfs$library"
    done
    if ldd "$dist/$binary" | grep -q 'not found\|libswift'; then
        echo "image.sh: $binary needs a library that is not here or not static:" >&2
        ldd "$dist/$binary" >&2
        exit 1
    fi
done
printf 'root:x:0:0:root:/:/nonexistent\nreflectd:x:10001:10001:reflectd:/:/nonexistent\n' >"$context/rootfs/etc/passwd"
printf 'root:x:0:\nreflectd:x:10001:\n' >"$context/rootfs/etc/group"
cp deploy/Containerfile "$context/Containerfile"
(cd "$context/rootfs" && find . -type f | sort | xargs ls -l | awk '{printf "  %10d  %s\n", $5, $9}')

# The version tag is what deploy/kubernetes pins (kustomization.yaml's newTag).
tags=("$tag")
[ -n "$tag" ] || { version=$("$context/rootfs/reflectd" --version); tags=("reflectd:$version" reflectd:latest); tag=reflectd:$version; }
step "building ${tags[*]}"
podman --runtime /usr/sbin/runc build --quiet --pull=never "${tags[@]/#/--tag=}" --file "$context/Containerfile" "$context" >/dev/null
size=$(podman image inspect --format '{{.Size}}' "$tag")
awk -v tag="$tag" -v size="$size" 'BEGIN { printf "image %s: %d bytes (%.1f MB)\n", tag, size, size / 1e6 }'
if [ "$size" -ge "$limit_bytes" ]; then
    echo "image.sh: the image is $size bytes, over the $limit_bytes-byte target" >&2
    exit 1
fi
