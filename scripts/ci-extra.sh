#!/usr/bin/env bash
# The CI passes after `swift test`: every script's --help and unknown-argument refusal
# (scripts/check-scripts.sh, a few seconds), the syscall seam (scripts/check-syscall-seam.py),
# documentation (scripts/check-docs.py: DocC warnings fail; every public symbol linked in the
# catalog, and no link to nothing), HAProxy in front of two instances, the shipped
# forms (static binaries without the toolchain, install.sh, the .deb: scripts/ship-check.sh), the
# container image under podman and the Kubernetes manifests (about 1 minute after the release build), the
# upgrade check, the reuser check (Examples/reuser on the library products only, about 1 minute cold), 60 s of
# fuzzing (+ 30 s each of the PROXY parser, the RESP parser and the upgrade wire decoder), a 60 s soak, the multi-host netns rig (about 30-60 s),
# and the test suite under AddressSanitizer. Cheapest first, so a broken
# build fails fast. Each step exits non-zero on failure. Run by .ci/run as root; it installs and
# removes packages (ship-check's .deb) and takes about 20 minutes.
#
# Usage: scripts/ci-extra.sh          (no arguments; --help prints this)
set -euo pipefail
for argument in "$@"; do
    case "$argument" in
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        *) echo "ci-extra.sh: unknown argument: $argument (see --help)" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
step() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "every script answers --help without running anything, and refuses unknown arguments"
scripts/check-scripts.sh

step "errno and raw system calls only in Sources/Reactor/Syscall.swift (scripts/check-syscall-seam.py)"
scripts/check-syscall-seam.py

step "documentation: each library's DocC with warnings as errors, its API list checked against the symbol graph"
scripts/check-docs.py  # the targets are listed in the script (TARGETS), one line each

step "HAProxy (TCP mode) in front of two reflectd instances"
scripts/haproxy-check.sh

step "shipping: static binaries with /opt/swift hidden, install.sh --destdir, .deb install and removal"
scripts/ship-check.sh
step "container image: podman run, echo, SIGUSR2 refused at PID 1, podman stop drains (scripts/container-check.sh)"
# .ci/run installs podman and runc; this keeps the step runnable on its own too.
if ! command -v podman >/dev/null 2>&1 || [ ! -x /usr/sbin/runc ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null
fi
timeout 290 scripts/container-check.sh  # about 1 minute with the release build done (ship-check.sh)

step "Kubernetes manifests: kubernetes-validate and checkov, offline (scripts/kubernetes-check.sh)"
timeout 290 scripts/kubernetes-check.sh

step "upgrade without dropping connections (SIGUSR2 hand-over through the binary)"
swift build --product reflectd >/dev/null
scripts/upgrade-check.py .build/debug/reflectd
if command -v systemd-analyze >/dev/null 2>&1; then
    unit_dir=$(mktemp -d)
    sed "s|/usr/local/bin/reflectd|$PWD/.build/debug/reflectd|" deploy/reflectd.service >"$unit_dir/reflectd.service"
    cp deploy/reflectd.socket "$unit_dir/"
    systemd-analyze verify "$unit_dir/reflectd.service"
    rm -rf "$unit_dir"
fi

step "reuser check: Examples/reuser, a package on the library products only: PROXY v2, limit, SIGUSR2 (scripts/reuser-check.sh)"
timeout 290 scripts/reuser-check.sh  # about 1 minute from a cold build of its own .build, 5 s warm

step "fuzzing the exit-line detector for 60 s"
fuzz/run.sh 60

step "fuzzing the PROXY protocol parser for 30 s"
fuzz/run-proxy.sh 30

step "fuzzing the RESP request parser (Examples/resp) for 30 s"
fuzz/resp-run.sh 30

step "fuzzing the upgrade's hand-over wire decoder (Sources/ZeroDropUpgrade) for 30 s"
fuzz/run-upgrade.sh 30

step "soak: 60 s of mixed clients against a release build"
benchmarks/soak.sh --seconds 60

step "multi-host rig: network namespaces, HAProxy send-proxy-v2, 2 % loss each way, a host killed"
if [ -x .build-soak/release/reflectd ]; then
    REFLECTD="$(pwd)/.build-soak/release/reflectd" scripts/netns-rig.sh
else
    scripts/netns-rig.sh
fi

step "test suite under AddressSanitizer"
scripts/sanitizers.sh
