#!/usr/bin/env bash
# Builds the Debian package reflectd_VERSION_ARCH.deb with dpkg-deb from the release build
# (scripts/release.sh, run first if missing), then shows `dpkg-deb --info` and `--contents` and
# runs lintian when it is installed.
#
# Usage: scripts/deb.sh              (no arguments; --help prints this)
#
#   scripts/deb.sh                      # writes .build-release/deb/reflectd_0.3.0_amd64.deb
#
# The package holds what scripts/install.sh installs with --prefix /usr (binaries, systemd units,
# man pages, completions), plus /usr/share/doc/reflectd/{copyright,changelog.gz,README.md} and
# examples/haproxy.cfg (deploy/haproxy.cfg; reflectd(1) names it).
# Depends: is computed by dpkg-shlibdeps from the binaries' real dynamic dependencies and checked
# against ldd. The postinst runs `systemctl daemon-reload` only when systemd is running
# (/run/systemd/system exists), so the package also installs in containers and chroots. Nothing
# is enabled or started: `systemctl enable --now reflectd.socket` is the administrator's choice.
# On removal the prerm stops the units. There is no postrm and no conffile (nothing
# under /etc), so `dpkg -r` leaves nothing behind: dpkg keeps a removed package in the
# "config-files" state (rc) whenever it has conffiles or a postrm, which would wait for the purge.
# The Maintainer field is the project's (`maintainer=` below), not the builder's git identity.
#
# Environment: SOURCE_DATE_EPOCH (default: the last commit's time) for a reproducible package.
set -euo pipefail
for argument in "$@"; do
    case "$argument" in
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        *) echo "deb.sh: unknown argument: $argument (see --help)" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."

version=$(sed -n 's/.*static let string = "\([0-9][0-9.]*\)".*/\1/p' Sources/ToolSupport/Version.swift)
[ -n "$version" ] || { echo "deb.sh: no version in Sources/ToolSupport/Version.swift" >&2; exit 1; }
arch=$(dpkg --print-architecture)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
# The one place the package's Maintainer (and the changelog trailer) comes from; ship-check.sh
# reads this line to check the built package.
maintainer="reflectd developers <reflectd@example.invalid>"
out=.build-release/deb
root=$out/reflectd_${version}_${arch}
deb=$out/reflectd_${version}_${arch}.deb

if [ ! -x .build-release/dist/bin/reflectd ]; then scripts/release.sh; fi
rm -rf "$root" "$deb"
mkdir -p "$root"
scripts/install.sh --prefix /usr --destdir "$root" --no-manifest >/dev/null

# Debian policy: man pages and changelogs compressed with gzip -9n (no name or time stamp inside).
gzip -9n "$root"/usr/share/man/man1/*.1
doc=$root/usr/share/doc/reflectd
install -d -m 0755 "$doc"
install -m 0644 README.md "$doc/README.md"
install -d -m 0755 "$doc/examples"
install -m 0644 deploy/haproxy.cfg "$doc/examples/haproxy.cfg"
date_rfc2822=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
{
    echo "reflectd ($version) unstable; urgency=medium"
    echo
    # The entries of this version from CHANGELOG.md, one bullet each, wrapped at 78 columns.
    awk -v v="$version" '
        /^## / { if (item != "") print item; item = ""; on = index($0, "## " v) == 1; next }
        !on { next }
        /^- / { if (item != "") print item; item = substr($0, 3); next }
        /^  +[^ ]/ && item != "" { sub(/^ +/, ""); item = item " " $0; next }
        { if (item != "") print item; item = "" }
        END { if (item != "") print item }
    ' CHANGELOG.md | tr -d '`' | while IFS= read -r item; do
        printf '%s\n' "$item" | fold -s -w 74 | sed -e 's/ *$//' -e '1s/^/  * /' -e '2,$s/^/    /'
    done
    echo
    echo " -- $maintainer  $date_rfc2822"
} > "$out/changelog"
gzip -9n -c "$out/changelog" > "$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"
cat > "$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: reflectd
Comment: Built from the reflectd source tree with scripts/deb.sh. The binaries contain the Swift
 standard library and swift-argument-parser, swift-log, swift-system and hdrhistogram-swift,
 linked statically.

Files: *
Copyright: 2026 the reflectd authors
License: unstated
 The reflectd source tree carries no license file.

Files: usr/bin/*
Copyright: 2014-2026 Apple Inc. and the Swift project authors
           2021-2026 the HdrHistogram authors
License: Apache-2.0 with Runtime Library Exception
 The Swift standard library, swift-argument-parser, swift-log and swift-system are under the
 Apache License 2.0 with the Runtime Library Exception; hdrhistogram-swift under Apache 2.0.
 On Debian systems the Apache License 2.0 is in /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
chmod 0644 "$doc/copyright"

# Depends: dpkg-shlibdeps reads the binaries' NEEDED entries and the symbol versions they use.
shlibs=$(mktemp -d)
trap 'rm -rf "$shlibs"' EXIT
mkdir -p "$shlibs/debian"
printf 'Source: reflectd\n\nPackage: reflectd\nArchitecture: any\n' > "$shlibs/debian/control"
binaries=("$root"/usr/bin/*)
depends=$(cd "$shlibs" && dpkg-shlibdeps -O "${binaries[@]/#/$OLDPWD/}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "deb.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
# Cross-check: every library ldd resolves belongs to a package named in Depends.
for library in $(ldd "${binaries[@]}" | awk '$3 ~ /^\// {print $3}' | sort -u); do
    owner=$(dpkg -S "$(readlink -f "$library")" 2>/dev/null | head -1 | cut -d: -f1) \
        || owner=$(dpkg -S "$library" 2>/dev/null | head -1 | cut -d: -f1) || true
    case ", $depends" in
        *", $owner "*|*", $owner,"*|*", $owner") ;;
        *) echo "deb.sh: $library (from package '${owner:-unknown}') is not in Depends: $depends" >&2; exit 1 ;;
    esac
done

mkdir -p "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<CONTROL
Package: reflectd
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends
Section: net
Priority: optional
Description: TCP echo server on an epoll reactor
 reflectd echoes every byte a client sends; the line "exit" closes the
 connection. It runs one epoll event loop per reactor thread, supports systemd
 socket activation (reflectd.socket), Unix-domain sockets and a Prometheus
 metrics endpoint. The package also holds reflect, an interactive client, and
 reflect-bench, a load generator that checks every echoed byte.
CONTROL
cat > "$root/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
# Tell systemd about the new unit files, only when it is the running init (not in a container or
# chroot without systemd). Nothing is enabled or started.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
SCRIPT
chmod 0755 "$root/DEBIAN/postinst"
# No postrm on purpose: with one, dpkg -r leaves the package in the "config-files" state (rc)
# until a purge. Its one job was a daemon-reload after the unit files are gone; the prerm stops
# the units before that, and systemd drops the stopped units' definitions at its next reload.
cat > "$root/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
# On removal, stop a running reflectd first (the socket too, or it would start it again).
if [ "$1" = remove ] && [ -d /run/systemd/system ] && command -v deb-systemd-invoke >/dev/null 2>&1; then
    deb-systemd-invoke stop reflectd.socket reflectd.service >/dev/null 2>&1 || true
fi
exit 0
SCRIPT
chmod 0755 "$root/DEBIAN/prerm"

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "=== $deb ($(stat -c %s "$deb") bytes)"
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"
if command -v lintian >/dev/null 2>&1; then
    echo "=== lintian"
    lintian --tag-display-limit 0 "$deb" 2>&1 | grep -v 'running with root privileges' || true
else
    echo "=== lintian is not installed (apt-get install lintian); skipped"
fi
