#!/usr/bin/env bash
# Hostile clients against the built binary (issue 13, items 1-3): the latency of
# one normal request while each attack holds its connections, beside the same
# request with no attack, in the same run.
#
#   bench/hostile.sh                  # builds release, ~2 minutes
#   KONSUMER_BIN=target/debug/konsumer bench/hostile.sh
#
# Scenarios (attackers connect from 127.0.0.2, the normal client from 127.0.0.1;
# everything stays on loopback, every attack is bounded in count and time):
#
#   baseline        no attack
#   admin-flood     ADMIN_FLOOD (2000) idle connections to the admin port
#   low-nofile      konsumer under a 1024 soft/hard open-file limit, LOW_FLOOD
#                   (1100) idle connections to the admin port
#   slow-tls        SLOW_TLS (1100) connections to the webhook that never start
#                   their TLS handshake
#   idle-keepalive  --max-connections 4, four idle keep-alive TLS connections
#
# For each: the time of a fresh-connection POST of pod-create-indexed-job to
# /mutate/workloads and of GET /livez (median and max of SAMPLES, 5), konsumer's
# open descriptors, and the "cannot accept" warnings it logged. Markdown on
# stdout, progress on stderr. Needs curl and python3.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SAMPLES=${SAMPLES:-5}
ADMIN_FLOOD=${ADMIN_FLOOD:-2000}
LOW_FLOOD=${LOW_FLOOD:-1100}
SLOW_TLS=${SLOW_TLS:-1100}
HOLD=${HOLD:-25}

log() { printf '[hostile %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
for tool in curl python3 prlimit; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done

if [[ -z "${KONSUMER_BIN:-}" ]]; then
    log "building release"
    (cd "$ROOT" && cargo build --release --locked --bin konsumer >&2)
    KONSUMER_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/konsumer"
fi
[[ -x "$KONSUMER_BIN" ]] || die "no binary at $KONSUMER_BIN"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# The attacker: opens N connections from 127.0.0.2 and holds them for HOLD s.
cat > "$WORK/attack.py" <<'PY'
import socket, ssl, sys, time
kind, port, n, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
held = []
def connect():
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.settimeout(2)
    s.connect(("127.0.0.1", port))
    return s
for _ in range(n):
    try:
        s = connect()
        if kind == "keepalive":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s, server_hostname="localhost")
            s.sendall(b"GET /mutate/workloads HTTP/1.1\r\nHost: localhost\r\n\r\n")
            s.recv(4096)
        held.append(s)
    except OSError:
        pass
print(len(held), flush=True)
time.sleep(hold)
PY

# start NAME [PREFIX...] -- [FLAGS...]: konsumer in local mode on free ports.
start() {
    local name=$1; shift
    local prefix=()
    while [[ $1 != -- ]]; do prefix+=("$1"); shift; done
    shift
    local dir="$WORK/$name"
    mkdir -p "$dir"
    cp "$ROOT/examples/local/orders.yaml" "$dir/"
    "${prefix[@]}" "$KONSUMER_BIN" --log-format json serve --local "$dir" --no-reconciler \
        --webhook-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 "$@" 2> "$dir/log" &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 100); do
        grep -q '"konsumer serving"' "$dir/log" 2>/dev/null && break
        sleep 0.1
    done
    WEBHOOK=$(grep -o '"webhook_addr":"[^"]*"' "$dir/log" | head -1 | cut -d'"' -f4)
    ADMIN=$(grep -o '"admin_addr":"[^"]*"' "$dir/log" | head -1 | cut -d'"' -f4)
    CA="$dir/.konsumer/tls/ca.crt"
    LOG="$dir/log"
}

stop() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }

# samples URL CURL-ARGS...: median and max seconds of SAMPLES fresh requests.
samples() {
    local url=$1; shift
    local times=()
    for _ in $(seq "$SAMPLES"); do
        times+=("$(curl -s -o /dev/null --max-time 40 -w '%{time_total}' "$@" "$url" || echo 40)")
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.3f | %.3f", a[int((NR+1)/2)], a[NR]}'
}

measure() {
    local name=$1 opened=$2
    local port=${WEBHOOK##*:}
    local webhook livez fds errors
    webhook=$(samples "https://localhost:$port/mutate/workloads" --cacert "$CA" \
        -H 'content-type: application/json' --data-binary @"$ROOT/tests/fixtures/admission/pod-create-indexed-job.json")
    livez=$(samples "http://$ADMIN/livez")
    fds=$(ls "/proc/$PID/fd" | wc -l)
    errors=$(grep -c 'cannot accept' "$LOG" || true)
    echo "| $name | $opened | $webhook | $livez | $fds | $errors |"
}

attack() { python3 "$WORK/attack.py" "$@" > "$WORK/opened" & PIDS+=("$!"); ATTACK=$!; for _ in $(seq 200); do [[ -s "$WORK/opened" ]] && break; sleep 0.1; done; OPENED=$(cat "$WORK/opened"); rm -f "$WORK/opened"; }
end_attack() { kill "$ATTACK" 2>/dev/null || true; wait "$ATTACK" 2>/dev/null || true; }

echo "konsumer: \`$KONSUMER_BIN\` ($(git -C "$ROOT" rev-parse --short HEAD)); $SAMPLES fresh-connection requests per cell, seconds (median | max)"
echo
echo "| scenario | attack connections held | webhook POST median | max | /livez median | max | konsumer fds | 'cannot accept' logs |"
echo "|---|---|---|---|---|---|---|---|"

log "baseline"
start baseline --
measure baseline 0
stop

log "admin flood: $ADMIN_FLOOD idle connections"
start admin-flood --
attack plain "${ADMIN##*:}" "$ADMIN_FLOOD" "$HOLD"
measure "admin-flood" "$OPENED"
end_attack; stop

log "low open-file limit: $LOW_FLOOD idle admin connections under nofile 1024"
start low-nofile prlimit --nofile=1024:1024 -- --
attack plain "${ADMIN##*:}" "$LOW_FLOOD" "$HOLD"
measure "low-nofile (1024)" "$OPENED"
end_attack; stop

log "slow TLS: $SLOW_TLS connections that never handshake"
start slow-tls --
attack plain "${WEBHOOK##*:}" "$SLOW_TLS" "$HOLD"
measure "slow-tls" "$OPENED"
end_attack; stop

log "idle keep-alive: --max-connections 4, 4 idle clients"
start idle-keepalive -- --max-connections 4 --max-connections-per-peer 4
attack keepalive "${WEBHOOK##*:}" 4 "$HOLD"
measure "idle-keepalive (max 4)" "$OPENED"
end_attack; stop
log "done"
