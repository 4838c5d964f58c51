#!/usr/bin/env bash
# Runs the reflectd image for real (issue 24) and checks what a rolling update relies on:
#   1. scripts/image.sh builds it (FROM scratch, under 25 MB), and it runs under rootful podman with
#      the host network (loopback traffic only), a read-only root filesystem and no capabilities;
#   2. it runs as uid 10001, not root, with its root filesystem read-only (podman inspect and the
#      host's /proc: there is no shell inside to podman exec);
#   3. echo through it with socat (8 clients, 64 KiB each), /livez and /readyz answer 200;
#   4. SIGUSR2 to the container's reflectd (PID 1 inside): the refusal is logged, the PID and the
#      container stay, and the open connections keep echoing;
#   5. `podman stop`: /readyz turns 503 while the echo listener still accepts (--stop-delay 1),
#      then the listener closes, every client sees EOF with its echo complete (0 lost), and the
#      container exits 0 within the grace (1 s delay + 4 s), long before podman's SIGKILL.
# Prints the image size and the time from `podman stop` to the exit. About 30 s after the build.
#
# Usage: scripts/container-check.sh [--no-build]
#   scripts/container-check.sh               # builds the release binaries and the image first
#   scripts/container-check.sh --no-build    # uses .build-release/dist as it is
#   scripts/container-check.sh --help
#
# Needs root, podman, runc, socat, curl, python3 (scripts/ci-extra.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

image_arguments=()
for argument in "$@"; do
    case "$argument" in
        --no-build) image_arguments+=(--no-build) ;;
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        *) echo "container-check.sh: unknown argument: $argument" >&2; exit 2 ;;
    esac
done

for tool in podman socat curl python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "container-check.sh: $tool is not installed" >&2; exit 1; }
done
test -x /usr/sbin/runc || { echo "container-check.sh: /usr/sbin/runc is not installed (apt-get install runc)" >&2; exit 1; }

# crun (podman's default) refuses these machines' hybrid cgroups; rootful podman's default
# ulimits exceed their hard limits.
podman() { command podman --runtime /usr/sbin/runc "$@"; }
tag=reflectd:check
clients=8
# Why 15 s: podman's SIGKILL comes after this; reflectd needs the 1 s --stop-delay plus at most its
# 4 s grace, so an exit status of 137 (killed) would mean the graceful stop hung.
podman_stop_time=15
# Why 6 s: --stop-delay 1 + the 4 s grace + 1 s for podman itself.
stop_budget=6

step() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
fail() { echo "container-check.sh: FAIL: $*" >&2; [ -n "${name:-}" ] && podman logs "$name" 2>&1 | tail -30 >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
status_of() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$metrics_port$1" || true; }

step "scripts/image.sh ${image_arguments[*]:-}"
scripts/image.sh --tag "$tag" "${image_arguments[@]}"

work=$(mktemp -d)
name=reflectd-check-$$
cleanup() {
    podman rm --force --time 0 "$name" >/dev/null 2>&1 || true
    for pid in $(jobs -p); do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

port=$(free_port)
metrics_port=$(free_port)
step "podman run: host network, --read-only, --cap-drop ALL, ports $port (echo) and $metrics_port (metrics)"
podman run --detach --name "$name" --network host --read-only --cap-drop ALL --security-opt no-new-privileges \
    --ulimit nofile=20000:20000 --ulimit nproc=1000:1000 \
    "$tag" --host 127.0.0.1 --port "$port" --metrics-port "$metrics_port" --stop-delay 1 >/dev/null
for _ in $(seq 100); do [ "$(status_of /readyz)" = 200 ] && break; sleep 0.1; done
[ "$(status_of /readyz)" = 200 ] || fail "/readyz is not 200 within 10 s"
[ "$(status_of /livez)" = 200 ] || fail "/livez is not 200"
echo "/livez 200, /readyz 200"

step "non-root, read-only root filesystem, no capabilities (podman inspect and /proc of the host)"
pid=$(podman inspect --format '{{.State.Pid}}' "$name")
user=$(podman inspect --format '{{.Config.User}}' "$name")
readonly_root=$(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$name")
uids=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")
capabilities=$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")
root_options=$(awk '$5 == "/" {print $6}' "/proc/$pid/mountinfo" | tail -1)
namespace_pid=$(awk '/^NSpid:/ {print $NF}' "/proc/$pid/status")
echo "user $user; uids $uids; CapEff $capabilities; / mounted $root_options; ReadonlyRootfs $readonly_root; pid $pid on the host, $namespace_pid inside"
[ "$user" = "10001:10001" ] || fail "the image's user is '$user', not 10001:10001"
[ "$uids" = "10001 10001 10001 10001" ] || fail "reflectd runs with uids $uids"
[ "$capabilities" = 0000000000000000 ] || fail "reflectd has capabilities $capabilities"
[ "$readonly_root" = true ] && [[ ",$root_options," == *,ro,* ]] || fail "the root filesystem is not read-only ($root_options)"
[ "$namespace_pid" = 1 ] || fail "reflectd is not PID 1 in its container (NSpid $namespace_pid)"

step "$clients clients echo 64 KiB each through socat, and stay open"
for i in $(seq "$clients"); do
    { printf 'client %d before\n' "$i"; head -c 49152 /dev/urandom | base64 -w 76; } >"$work/first.$i"
    printf 'client %d after SIGUSR2\n' "$i" >"$work/second.$i"
    cat "$work/first.$i" "$work/second.$i" >"$work/expected.$i"
    # The second line goes out once the SIGUSR2 check is done (the file `go` appears); the input
    # stays open until the script ends, so a socat that ends saw the server's EOF. (Process
    # substitution, not a pipe: `wait` on a pipeline's pid would wait for the feeder too.)
    timeout 60 socat -t 0.2 - "TCP:127.0.0.1:$port" >"$work/received.$i" 2>"$work/socat.$i" < <(
        cat "$work/first.$i"
        while [ -d "$work" ] && [ ! -e "$work/go" ]; do sleep 0.05; done
        cat "$work/second.$i" 2>/dev/null
        while [ -d "$work" ]; do sleep 0.2; done) &
    echo $! >"$work/pid.$i"
done
for i in $(seq "$clients"); do
    for _ in $(seq 100); do cmp -s "$work/first.$i" "$work/received.$i" && break; sleep 0.05; done
    cmp -s "$work/first.$i" "$work/received.$i" || fail "client $i: no complete echo within 5 s"
done
echo "$clients echoes complete"

step "SIGUSR2 to reflectd, PID 1 of the container: refused, nothing changes"
podman kill --signal SIGUSR2 "$name" >/dev/null
for _ in $(seq 50); do podman logs "$name" 2>&1 | grep -q 'received SIGUSR2: refused, this process is PID 1' && break; sleep 0.1; done
podman logs "$name" 2>&1 | grep 'received SIGUSR2' || fail "no refusal logged"
podman logs "$name" 2>&1 | grep -q 'received SIGUSR2: refused, this process is PID 1' || fail "the SIGUSR2 line is not the refusal"
sleep 0.5
[ "$(podman inspect --format '{{.State.Running}} {{.State.Pid}}' "$name")" = "true $pid" ] || fail "the container stopped or reflectd's pid changed"
touch "$work/go"
for i in $(seq "$clients"); do
    for _ in $(seq 100); do cmp -s "$work/expected.$i" "$work/received.$i" && break; sleep 0.05; done
    cmp -s "$work/expected.$i" "$work/received.$i" || fail "client $i: no echo after SIGUSR2"
done
echo "same pid $pid, still running, all $clients connections still echo"

step "podman stop: /readyz 503 while the listener still accepts, then EOF to every client, exit 0"
began=$(now)
podman stop --time "$podman_stop_time" "$name" >/dev/null 2>"$work/stop.err" &
stopper=$!
unready=""
for _ in $(seq 200); do [ "$(status_of /readyz)" = 503 ] && { unready=$(now); break; }; sleep 0.01; done
[ -n "$unready" ] || fail "/readyz never answered 503 after podman stop"
echo "/readyz 503 after $(elapsed "$began" "$unready") s"
reply=$(printf 'still serving while not ready\n' | timeout 3 socat -t 1 - "TCP:127.0.0.1:$port" 2>&1 || true)
[ "$reply" = "still serving while not ready" ] || fail "the echo listener did not serve while /readyz was 503 (got '$reply'): the 503 came after the listener closed"
echo "a new client still echoed while /readyz was 503"
closed=""
for _ in $(seq 300); do
    if ! socat -u /dev/null "TCP:127.0.0.1:$port,connect-timeout=1" 2>/dev/null; then closed=$(now); break; fi
    sleep 0.02
done
[ -n "$closed" ] || fail "the echo listener did not close within 6 s of podman stop"
echo "echo listener closed $(elapsed "$began" "$closed") s after podman stop"
wait "$stopper" || fail "podman stop failed: $(cat "$work/stop.err")"
stopped=$(now)
exit_code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
stop_seconds=$(elapsed "$began" "$stopped")
lost=0
for i in $(seq "$clients"); do
    # Each socat ends 0.2 s after the server's EOF (its input is still open): 2 s is plenty.
    client=$(cat "$work/pid.$i")
    for _ in $(seq 100); do kill -0 "$client" 2>/dev/null || break; sleep 0.02; done
    if kill -0 "$client" 2>/dev/null; then
        client_status="still connected 2 s after the exit (no EOF from the server)"
        kill "$client" 2>/dev/null || true
    else
        code=0
        wait "$client" || code=$?
        client_status="socat status $code"
        [ "$code" = 0 ] && client_status=""
    fi
    if [ -n "$client_status" ] || ! cmp -s "$work/expected.$i" "$work/received.$i"; then
        lost=$((lost + 1))
        echo "client $i: ${client_status:-EOF}, received $(stat -c %s "$work/received.$i") of $(stat -c %s "$work/expected.$i") bytes: $(cat "$work/socat.$i")" >&2
    fi
done
podman logs "$name" 2>&1 | grep -E 'received SIGTERM|--stop-delay over|stopped' || true
echo "podman stop to exit: $stop_seconds s; exit status $exit_code; clients with an incomplete echo or no EOF: $lost of $clients"
[ "$exit_code" = 0 ] || fail "the container exited with status $exit_code"
awk -v s="$stop_seconds" -v b="$stop_budget" 'BEGIN { exit !(s < b) }' || fail "the stop took $stop_seconds s (budget $stop_budget s)"
[ "$lost" = 0 ] || fail "$lost clients lost echoes or saw no EOF"
step "container check passed: image $(podman image inspect --format '{{.Size}}' "$tag") bytes, stop $stop_seconds s, 0 echoes lost"
