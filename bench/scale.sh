#!/usr/bin/env bash
# konsumer with many Consumers, in local mode, their Prometheus unreachable: memory,
# idle CPU, log volume and reconcile pass time as the fleet grows.
#
#   bench/scale.sh                    # 1,000, 10,000 and 50,000 Consumers
#   COUNTS="10000" IDLE=60 bench/scale.sh
#   ARGS=--manage-deployments=false bench/scale.sh   # the same fleet, unmanaged
#
# For each count N in COUNTS it writes N copies of examples/local/orders.yaml
# (metadata.name and spec.name varied, the Prometheus address
# http://127.0.0.1:1, which refuses connections), starts the release konsumer on
# them (`--log-format json`, the reconciler's default 10 s interval), and reports:
# the time until ready and until all N are cached, RSS (VmRSS) when loaded, after
# the first passes (WARMUP s), and after IDLE more seconds with nothing changing,
# the peak (VmHWM), the CPU used in those IDLE seconds, the reconcile passes
# (konsumer_reconcile_pass_duration_seconds: count and mean) and the log lines
# per level, and the managed Deployment manifests written (4 per copy: the
# example has a deploymentTemplate, and --manage-deployments is on by default).
# ARGS are more `konsumer serve` flags. Markdown on stdout, progress on stderr.
# Needs curl and jq. BUILD=0 uses the release binary as it is; KONSUMER_BIN=path
# runs that binary instead (an earlier build kept for a same-session comparison).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COUNTS=${COUNTS:-"1000 10000 50000"}
WARMUP=${WARMUP:-30}
IDLE=${IDLE:-60}
ARGS=${ARGS:-}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[scale %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

WORK=$(mktemp -d /tmp/konsumer-scale.XXXXXX)
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "${BUILD:-1}" = 1 ]; then
    log "building release"
    # The same command as bench/webhook.sh: the same features, so neither rebuilds
    # what the other built.
    (cd "$ROOT" && cargo build --release --locked --example baseline --bin konsumer) >&2
fi
KONSUMER=${KONSUMER_BIN:-$TARGET_DIR/release/konsumer}

cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }'; }
metric() { curl -s "$ADMIN/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

TEMPLATE=$(sed 's#http://prometheus.monitoring.svc:9090#http://127.0.0.1:1#' "$ROOT/examples/local/orders.yaml")

echo "load average at start: \`$(cat /proc/loadavg)\`; $(nproc) CPUs; commit $(git -C "$ROOT" rev-parse --short HEAD)${ARGS:+; flags \`$ARGS\`}"
echo
echo "| Consumers | ready | all cached | RSS loaded | RSS after ${WARMUP} s | RSS after ${IDLE} s more | peak | CPU while idle | passes (mean wall time) | WARN / INFO lines in ${IDLE} s | per Consumer (RSS after idle − 1 Consumer's) | managed Deployments |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"

BASE_RSS=""
for n in 1 $COUNTS; do
    dir=$WORK/c$n
    mkdir -p "$dir"
    log "writing $n Consumers"
    printf '%s\n' "$TEMPLATE" >"$dir/orders.yaml"
    for ((i = 2; i <= n; i++)); do
        name=$(printf 'orders-%05d' "$i")
        t=${TEMPLATE/  name: orders$'\n'  namespace/  name: $name$'\n'  namespace}
        printf '%s\n' "${t/  name: orders$'\n'  namespace: streams$'\n'  partitionEnvKey/  name: $name$'\n'  namespace: streams$'\n'  partitionEnvKey}" >"$dir/$name.yaml"
    done
    logf=$WORK/konsumer-$n.log
    t0=$(date +%s%N)
    # shellcheck disable=SC2086 # ARGS are words
    "$KONSUMER" serve --local "$dir" --log-format json \
        --webhook-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 $ARGS >"$logf" 2>&1 &
    PID=$!
    line=""
    for _ in $(seq 1200); do
        line=$(grep -m1 '"message":"konsumer serving"' "$logf" || true)
        [ -n "$line" ] && break
        kill -0 "$PID" 2>/dev/null || { tail "$logf" >&2; die "konsumer exited"; }
        sleep 0.05
    done
    [ -n "$line" ] || die "konsumer did not start"
    ADMIN="http://$(jq -r .admin_addr <<<"$line")"
    until [ "$(curl -s -o /dev/null -w '%{http_code}' "$ADMIN/readyz")" = 200 ]; do sleep 0.05; done
    ready_ms=$((($(date +%s%N) - t0) / 1000000))
    until [ "$(metric konsumer_consumers)" = "$n" ]; do sleep 0.05; done
    loaded_ms=$((($(date +%s%N) - t0) / 1000000))
    rss_loaded=$(status_kb "$PID" VmRSS)
    log "$n Consumers: ready in $ready_ms ms; first passes for $WARMUP s"
    sleep "$WARMUP"
    rss_warm=$(status_kb "$PID" VmRSS)
    c0=$(cpu_ticks "$PID")
    lines0=$(wc -l <"$logf")
    log "idle for $IDLE s"
    sleep "$IDLE"
    c1=$(cpu_ticks "$PID")
    rss_idle=$(status_kb "$PID" VmRSS)
    hwm=$(status_kb "$PID" VmHWM)
    idle_cores=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" -v s="$IDLE" 'BEGIN { printf "%.3f", (b - a) / t / s }')
    warn=$(tail -n +$((lines0 + 1)) "$logf" | grep -c '"level":"WARN"' || true)
    info=$(tail -n +$((lines0 + 1)) "$logf" | grep -c '"level":"INFO"' || true)
    passes=$(metric konsumer_reconcile_pass_duration_seconds_count)
    pass_sum=$(metric konsumer_reconcile_pass_duration_seconds_sum)
    pass_mean=$(awk -v s="${pass_sum:-0}" -v c="${passes:-0}" 'BEGIN { printf "%.0f ms", (c > 0 ? s / c * 1000 : 0) }')
    managed=$({ find "$dir/.konsumer/deployments" -name '*.yaml' 2>/dev/null || true; } | wc -l)
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=""
    if [ "$n" = 1 ]; then
        BASE_RSS=$rss_idle
        per="–"
    else
        per=$(awk -v a="$rss_idle" -v b="$BASE_RSS" -v n="$n" 'BEGIN { printf "%.1f KB", (a - b) / (n - 1) }')
    fi
    echo "| $n | $ready_ms ms | $loaded_ms ms | $(mb "$rss_loaded") | $(mb "$rss_warm") | $(mb "$rss_idle") | $(mb "$hwm") | $idle_cores cores | ${passes:-0} ($pass_mean) | $warn / $info | $per | $managed |"
    rm -rf "$dir"
done
echo
echo "load average at end: \`$(cat /proc/loadavg)\`"
