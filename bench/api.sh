#!/usr/bin/env bash
# The HTTP API's GET of a Consumer beside the workload webhook, in one run.
#
#   bench/api.sh                                   # builds release first; ~2 minutes after
#   KONSUMER_BIN=target/release/konsumer ROUNDS=5 bench/api.sh
#
# Starts the built binary in local mode (examples/local/orders.yaml, --log-format json,
# --no-reconciler --no-delivery so that nothing else runs, --api-token-file) and loads,
# ROUNDS (3) times interleaved, each for DURATION (10s) at RATE (1000) req/s on CONNS
# (16) kept-alive TLS connections, latency corrected for coordinated omission:
#
#   api      GET /v1/namespaces/streams/consumers/orders with a bearer token
#            (the token file's digest set is cached; the file is only stat'ed)
#   webhook  POST /mutate/workloads with tests/fixtures/admission/pod-create-from-replicaset.json
#
# and reports medians of p50/p99/p99.9 and konsumer's CPU time per request
# (utime+stime from /proc/PID/stat over the run ÷ requests). Markdown on stdout.
# Needs oha (cargo install oha --locked), curl, jq, awk.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10s}
RATE=${RATE:-1000}
CONNS=${CONNS:-16}
ROUNDS=${ROUNDS:-3}
KONSUMER=${KONSUMER_BIN:-}
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ -z "$KONSUMER" ]; then
    (cd "$ROOT" && cargo build --release --locked --bin konsumer) >&2
    KONSUMER=${CARGO_TARGET_DIR:-$ROOT/target}/release/konsumer
fi
[ -x "$KONSUMER" ] || die "no konsumer binary at $KONSUMER"
command -v oha >/dev/null || { log "installing oha"; cargo install oha --locked >&2; }
OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")

WORK=$(mktemp -d /tmp/konsumer-api-bench.XXXXXX)
K_PID=
cleanup() {
    [ -n "$K_PID" ] && kill "$K_PID" 2>/dev/null && wait "$K_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/dir"
cp "$ROOT/examples/local/orders.yaml" "$WORK/dir/"
TOKEN=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
echo "$TOKEN" >"$WORK/tokens"

"$KONSUMER" serve --local "$WORK/dir" --log-format json --no-reconciler --no-delivery \
    --webhook-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --api-addr 127.0.0.1:0 \
    --api-token-file "$WORK/tokens" >"$WORK/log" 2>&1 &
K_PID=$!
for _ in $(seq 600); do
    grep -q '"message":"konsumer serving"' "$WORK/log" && break
    kill -0 "$K_PID" 2>/dev/null || { cat "$WORK/log" >&2; die "konsumer exited"; }
    sleep 0.05
done
API=$(grep -m1 '"message":"HTTP API serving"' "$WORK/log" | jq -r .addr)
HOOK=$(grep -m1 '"message":"konsumer serving"' "$WORK/log" | jq -r .webhook_addr)
CA=$WORK/dir/.konsumer/tls/ca.crt
API_URL="https://localhost:${API##*:}/v1/namespaces/streams/consumers/orders"
HOOK_URL="https://localhost:${HOOK##*:}/mutate/workloads"
BODY=$ROOT/tests/fixtures/admission/pod-create-from-replicaset.json
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$CA" -H "Authorization: Bearer $TOKEN" "$API_URL")
[ "$code" = 200 ] || die "api answered $code"
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$CA" -H 'Content-Type: application/json' --data "@$BODY" "$HOOK_URL")
[ "$code" = 200 ] || die "webhook answered $code"

cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

# One run: name, then oha arguments. Prints: p50 p99 p99.9 (ms) rps cpu_us_per_req non200
run() {
    local name=$1 out=$WORK/$1.json c0 c1; shift
    c0=$(cpu_ticks "$K_PID")
    "$OHA" --no-tui --output-format json -o "$out" --cacert "$CA" -z "$DURATION" -c "$CONNS" \
        -q "$RATE" --latency-correction "$@" >&2
    c1=$(cpu_ticks "$K_PID")
    jq -r --argjson cpu $((c1 - c0)) --argjson tck "$CLK_TCK" '
        ([.statusCodeDistribution[]] | add // 0) as $n
        | (.statusCodeDistribution | to_entries | map(select(.key != "200") | .value) | add // 0) as $bad
        | [ .latencyPercentiles.p50 * 1000, .latencyPercentiles.p99 * 1000,
            .latencyPercentiles["p99.9"] * 1000, .summary.requestsPerSec,
            (if $n > 0 then $cpu / $tck / $n * 1e6 else 0 end), $bad ]
        | map(tostring) | join(" ")' "$out"
}

# Warm-up.
"$OHA" --no-tui --cacert "$CA" -z 2s -c "$CONNS" -H "Authorization: Bearer $TOKEN" "$API_URL" >/dev/null
declare -A R
for round in $(seq "$ROUNDS"); do
    log "round $round: api"
    R[api,$round]=$(run api -H "Authorization: Bearer $TOKEN" "$API_URL")
    log "round $round: webhook"
    R[webhook,$round]=$(run webhook -m POST -D "$BODY" -H 'Content-Type: application/json' "$HOOK_URL")
done

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
field() { local name=$1 i=$2 r; for r in $(seq "$ROUNDS"); do echo "${R[$name,$r]}" | cut -d' ' -f"$i"; done | median; }
fmt() { awk -v x="$1" -v d="$2" 'BEGIN { printf "%.*f", d, x }'; }

echo "konsumer: $KONSUMER ($("$KONSUMER" --version 2>/dev/null || echo unknown)); $(nproc) CPUs; oha $("$OHA" --version | awk '{print $2}')"
echo "$ROUNDS rounds of $DURATION at $RATE req/s on $CONNS TLS keep-alive connections, coordinated-omission corrected; medians"
echo
echo "| request | p50 ms | p99 ms | p99.9 ms | req/s | konsumer CPU µs/request | non-200 |"
echo "|---|---|---|---|---|---|---|"
for name in api webhook; do
    label=$([ "$name" = api ] && echo "api GET consumer (bearer token)" || echo "webhook POST /mutate/workloads")
    echo "| $label | $(fmt "$(field "$name" 1)" 3) | $(fmt "$(field "$name" 2)" 3) | $(fmt "$(field "$name" 3)" 3) | $(fmt "$(field "$name" 4)" 0) | $(fmt "$(field "$name" 5)" 1) | $(field "$name" 6) |"
done
