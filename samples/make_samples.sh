#!/usr/bin/env bash
# Regenerate the samples in samples/<scenario>/ with two real strongSwan peers (run as root).
#
#   samples/make_samples.sh                 all scenarios
#   samples/make_samples.sh healthy-gcm     only some (names: see samples/README.md)
#   samples/make_samples.sh --out /tmp/s    write elsewhere
#
# Each scenario gets two network namespaces (<tag>-l, <tag>-r) joined by a veth with outer
# addresses 198.18.0.1/.2 (RFC 2544 benchmarking range); nothing is sent outside them.
# The work is done by samples/lib/make_samples.py (tests/netns_peers.py brings the peers up and
# tears them down); this wrapper adds a last-resort trap that kills the processes it recorded
# and deletes its namespaces, whatever happens (Ctrl-C, error, kill).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "make_samples.sh: needs root (network namespaces, charon); try: sudo $0 $*" >&2
    exit 1
fi
for bin in /usr/lib/ipsec/charon swanctl tcpdump ip python3; do
    if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "$bin" ]; then
        echo "make_samples.sh: $bin not found (apt-get install strongswan-charon strongswan-swanctl libcharon-extra-plugins tcpdump iproute2)" >&2
        exit 1
    fi
done

TAG="ipss$$"
PIDS="$(mktemp /tmp/ipss-pids.XXXXXX)"
WORK="$(mktemp -d /tmp/ipss-work.XXXXXX)"

PY=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # First let the Python driver clean up after itself (it turns SIGTERM into an orderly stop).
    if [ -n "$PY" ] && kill -0 "$PY" 2>/dev/null; then
        kill -TERM "$PY" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$PY" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$PY" 2>/dev/null || true
        rc=130
    fi
    # The Python side stops everything it started; this only catches what a hard kill of it
    # left behind: the pids it recorded (if still alive) and the namespaces with our tag.
    if [ -s "$PIDS" ]; then
        for pid in $(cat "$PIDS"); do
            # Only our charon/tcpdump: a recorded pid may have been reused meanwhile.
            if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qE 'charon|tcpdump|bridge.py'; then
                kill -TERM "$pid" 2>/dev/null || true
            fi
        done
    fi
    for ns in "$TAG-l" "$TAG-m" "$TAG-r"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -f "$PIDS"
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT INT TERM

# In the background + wait, so a signal to this script is handled at once (bash defers traps
# while a foreground child runs).
python3 samples/lib/make_samples.py --tag "$TAG" --pids "$PIDS" --work-root "$WORK" "$@" &
PY=$!
wait "$PY"
