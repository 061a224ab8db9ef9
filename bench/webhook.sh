#!/usr/bin/env bash
# konsumer's workload webhook against a bare rustls + hyper baseline, in one run.
#
#   bench/webhook.sh                       # ~7 minutes after the build
#   CARGO_TARGET_DIR=/tmp/t ROUNDS=5 bench/webhook.sh
#
# Builds release (`konsumer` and `examples/baseline.rs`), installs `oha` from crates.io
# if it is missing, starts konsumer in local mode (a temporary directory holding
# examples/local/orders.yaml, --log-format json) and the baseline (which answers a canned AdmissionReview with konsumer's generated
# certificate) on free loopback ports, then loads each with
# tests/fixtures/admission/pod-create-large.json over TLS with keep-alive:
#
#   max   DURATION (10s) at CONNS (16) connections, as fast as it goes
#   rate  DURATION at RATE (1000) req/s on RATE_CONNS (16) connections, latency
#         corrected for coordinated omission (oha --latency-correction)
#   deployment, validate  as max, with a Deployment CREATE
#         (deployment-create-instance-label.json) and with the validating webhook
#         and Konsumerator's README example (consumer-v1alpha1-seed-example.validate.json)
#
# ROUNDS (3) times, servers interleaved, and reports medians. Beside req/s and latency
# it reports each server's CPU time per request (utime+stime from /proc/PID/stat over the
# run), the load generator's CPU, and the CPU used by anything else on the machine
# during the run ("other"; should be ~0 for a clean measurement). Then it measures the
# RSS of konsumer with CONSUMERS (1000) Consumers loaded: after start, after a few
# requests, after SETTLE (30) s idle (with each server's CPU use while idle), and after
# 5 s of load.
#
# Markdown results on stdout, progress on stderr. Needs curl, jq, awk, and sqlite3
# for the latencies without connection setup (Debian packages; apt-get installs a
# missing one). Before measuring it waits (up to WAIT_IDLE seconds, 300) for the machine
# to be idle (other CPU use < 10 % of a core over 2 s), because the load generator and
# the servers share the cores, and repeats (TRIES, 3, times at most) a run during which
# other processes used more than OTHER_MAX (0.15) cores on average or PEAK_MAX (0.5)
# cores in any one second. PIN=1 pins the servers to CPU 1 and oha to CPU 0.
# KEEP=1 keeps the work directory (raw oha JSON, server logs).
# KONSUMER_BIN=path measures that konsumer binary (say, a build of main) instead of this build.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10s}
CONNS=${CONNS:-16}
RATE=${RATE:-1000}
RATE_CONNS=${RATE_CONNS:-16}
WARMUP=${WARMUP:-3s}
ROUNDS=${ROUNDS:-3}
CONSUMERS=${CONSUMERS:-1000}
SETTLE=${SETTLE:-30}
WAIT_IDLE=${WAIT_IDLE:-300}
OTHER_MAX=${OTHER_MAX:-0.15}
PEAK_MAX=${PEAK_MAX:-0.5}
TRIES=${TRIES:-3}
PIN=${PIN:-0}
KEEP=${KEEP:-0}
BODY=${BODY:-$ROOT/tests/fixtures/admission/pod-create-large.json}
# The other requests measured (max mode only): a Deployment CREATE, and the
# validating webhook with Konsumerator's README example.
DEPLOYMENT_BODY=$ROOT/tests/fixtures/admission/deployment-create-instance-label.json
VALIDATE_BODY=$ROOT/tests/fixtures/admission/consumer-v1alpha1-seed-example.validate.json
SETUP_S=${SETUP_S:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in curl jq awk; do
    if ! command -v "$tool" >/dev/null; then
        log "installing $tool"
        apt-get install -y "$tool" >&2 || die "$tool is needed (apt-get install $tool)"
    fi
done
if command -v sqlite3 >/dev/null || { log "installing sqlite3"; apt-get install -y sqlite3 >&2; }; then
    HAVE_SQLITE=1
else
    HAVE_SQLITE=0
    log "no sqlite3: latency without connection setup not reported"
fi

WORK=$(mktemp -d /tmp/konsumer-bench.XXXXXX)
PIDS=()
cleanup() {
    local pid i
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    # konsumer can take seconds to stop while its reconciler waits on Prometheus.
    for pid in "${PIDS[@]}"; do
        for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LOADAVG_START=$(cat /proc/loadavg)
log "load average at start: $LOADAVG_START"

# --- build ------------------------------------------------------------------------
log "building release (target dir $TARGET_DIR)"
(cd "$ROOT" && cargo build --release --locked --example baseline --bin konsumer) >&2
# KONSUMER_BIN: measure another konsumer binary (an earlier build) against the same baseline.
KONSUMER=${KONSUMER_BIN:-$TARGET_DIR/release/konsumer}
BASELINE=$TARGET_DIR/release/examples/baseline
[ -x "$KONSUMER" ] && [ -x "$BASELINE" ] || die "binaries not found under $TARGET_DIR/release"

if ! command -v oha >/dev/null; then
    log "installing oha from crates.io"
    cargo install oha --locked >&2
fi
OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
[ -x "$OHA" ] || die "oha not found after install"
OHA_VERSION=$("$OHA" --version)

if [ "$PIN" = 1 ]; then
    SRV_PIN=(taskset -c 1)
    GEN_PIN=(taskset -c 0)
else
    SRV_PIN=()
    GEN_PIN=()
fi

# --- helpers ----------------------------------------------------------------------
# utime+stime of a process, in clock ticks.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# busy and total jiffies of the whole machine (all CPUs).
machine_ticks() { awk '/^cpu / { print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8+$9 }' /proc/stat; }
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }'; }
f0() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }
f1() { awk -v x="$1" 'BEGIN { printf "%.1f", x }'; }
f2() { awk -v x="$1" 'BEGIN { printf "%.2f", x }'; }
f3() { awk -v x="$1" 'BEGIN { printf "%.3f", x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", (b > 0 ? a / b : 0) }'; }

# Waits until the machine is idle: other processes use < 10 % of a core over 2 s.
wait_idle() {
    local deadline=$((SECONDS + WAIT_IDLE)) b0 t0 b1 t1 busy
    while :; do
        read -r b0 t0 < <(machine_ticks)
        sleep 2
        read -r b1 t1 < <(machine_ticks)
        busy=$(awk -v b=$((b1 - b0)) -v t="$CLK_TCK" 'BEGIN { printf "%.2f", b / t / 2 }')
        if awk -v x="$busy" 'BEGIN { exit !(x < 0.10) }'; then
            log "machine idle (${busy} cores busy)"
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "warning: machine still busy (${busy} cores) after ${WAIT_IDLE}s; measuring anyway"
            IDLE_WARNING="machine was busy (${busy} cores used by other processes) when measuring began"
            return 0
        fi
        log "machine busy (${busy} cores used by others); waiting"
    done
}
IDLE_WARNING=""
NOISY=0

# Starts konsumer in local mode on free ports. Sets K_PID, K_URL, K_ADMIN.
start_konsumer() {
    local dir=$1 logf=$2 i line
    "${SRV_PIN[@]}" "$KONSUMER" serve --local "$dir" --log-format json \
        --webhook-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 >"$logf" 2>&1 &
    K_PID=$!
    PIDS+=("$K_PID")
    for i in $(seq 600); do
        line=$(grep -m1 '"message":"konsumer serving"' "$logf" || true)
        [ -n "$line" ] && break
        kill -0 "$K_PID" 2>/dev/null || { cat "$logf" >&2; die "konsumer exited"; }
        sleep 0.05
    done
    [ -n "$line" ] || die "konsumer did not start (see $logf)"
    K_URL="https://$(jq -r .webhook_addr <<<"$line")/mutate/workloads"
    K_ADMIN="http://$(jq -r .admin_addr <<<"$line")"
    for i in $(seq 600); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$K_ADMIN/readyz")" = 200 ] && return 0
        sleep 0.05
    done
    die "konsumer not ready after 30 s"
}

# Every second while process $2 (oha) runs, the CPU used by everything but it and
# process $1 (the server); writes the highest one-second value, in ticks, to $3.
# Builtins only, so that it barely adds to what it measures.
sample_other() {
    local spid=$1 opid=$2 out=$3 peak=0 line b s o b0 s0 o0 first=1
    local -a f
    while kill -0 "$opid" 2>/dev/null; do
        read -r line </proc/stat || break
        f=($line)
        b=$((f[1] + f[2] + f[3] + f[6] + f[7]))
        read -r line <"/proc/$spid/stat" || break
        line=${line##*) }
        f=($line)
        s=$((f[11] + f[12]))
        read -r line <"/proc/$opid/stat" 2>/dev/null || break
        line=${line##*) }
        f=($line)
        o=$((f[11] + f[12]))
        if [ "$first" = 0 ] && [ $((b - b0 - (s - s0) - (o - o0))) -gt "$peak" ]; then
            peak=$((b - b0 - (s - s0) - (o - o0)))
            echo "$peak" >"$out"
        fi
        first=0 b0=$b s0=$s o0=$o
        read -r -t 1 <> <(:) || true
    done
}

# One oha run. Args: name url out.json [oha args...]. Prints a TSV record:
# rps p50_ms p99_ms p999_ms requests non200 errors server_us_per_req server_cores
# oha_cores other_cores other_peak_cores
load() {
    local name=$1 url=$2 out=$3 pid; shift 3
    pid=${SERVER_PID[$name]}
    local c0 c1 mb0 mt0 mb1 mt1 gen
    echo 0 >"$out.other"
    c0=$(cpu_ticks "$pid")
    read -r mb0 mt0 < <(machine_ticks)
    # `times` in the subshell prints the CPU time of its children (oha) on line 2.
    gen=$( (
        "${GEN_PIN[@]}" "$OHA" --no-tui --output-format json -o "$out" --cacert "$CA" \
            -m POST -D "${LOAD_BODY:-$BODY}" -H 'Content-Type: application/json' -w "$@" "$url" >&2 &
        opid=$!
        sample_other "$pid" "$opid" "$out.other" &
        spid=$!
        wait "$opid"
        kill "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
        times
    ) | awk 'NR == 2 {
        split($1, u, /[ms]/); split($2, s, /[ms]/); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }')
    c1=$(cpu_ticks "$pid")
    read -r mb1 mt1 < <(machine_ticks)
    jq -r --argjson cpu $((c1 - c0)) --argjson tck "$CLK_TCK" --argjson gen "$gen" \
        --argjson busy $((mb1 - mb0)) --argjson peak "$(cat "$out.other")" '
        ([.statusCodeDistribution[]] | add // 0) as $n
        | (.statusCodeDistribution | to_entries | map(select(.key != "200") | .value) | add // 0) as $bad
        | ([.errorDistribution[]] | add // 0) as $err
        | .summary.total as $wall
        | [ .summary.requestsPerSec,
            .latencyPercentiles.p50 * 1000, .latencyPercentiles.p99 * 1000,
            .latencyPercentiles["p99.9"] * 1000,
            $n, $bad, $err,
            (if $n > 0 then $cpu / $tck / $n * 1e6 else 0 end),
            $cpu / $tck / $wall, $gen / $wall,
            (($busy - $cpu) / $tck - $gen) / $wall, $peak / $tck ]
        | map(tostring) | join("\t")' "$out" | tr -d '\n'
    # p50, p99 and p99.9 without the first second (connection setup), from oha's per-request
    # database (rate runs, when sqlite3 is there); -1 otherwise.
    if [ -s "$out.db" ]; then
        sqlite3 -separator ' ' "$out.db" "
            with x as (select duration from oha where start > $SETUP_S),
                 n as (select count(*) as c from x)
            select (select duration from x order by duration limit 1 offset (select cast(c * 0.50 as int) from n)) * 1000,
                   (select duration from x order by duration limit 1 offset (select cast(c * 0.99 as int) from n)) * 1000,
                   (select duration from x order by duration limit 1 offset (select cast(c * 0.999 as int) from n)) * 1000" |
            awk '{ printf "\t%s\t%s\t%s\n", $1, $2, $3 }'
        rm -f "$out.db"
    else
        printf '\t-1\t-1\t-1\n'
    fi
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# --- servers ----------------------------------------------------------------------
mkdir -p "$WORK/one" "$WORK/many" "$WORK/results"
cp "$ROOT/examples/local/orders.yaml" "$WORK/one/"

log "starting konsumer (1 Consumer)"
start_konsumer "$WORK/one" "$WORK/konsumer.log"
KONSUMER_PID=$K_PID KONSUMER_URL=$K_URL
CA=$WORK/one/.konsumer/tls/ca.crt
RSS_K_IDLE=$(status_kb "$KONSUMER_PID" VmRSS)

log "starting the baseline"
"${SRV_PIN[@]}" "$BASELINE" --addr 127.0.0.1:0 \
    --cert "$WORK/one/.konsumer/tls/tls.crt" --key "$WORK/one/.konsumer/tls/tls.key" \
    >"$WORK/baseline.log" 2>&1 &
BASELINE_PID=$!
PIDS+=("$BASELINE_PID")
for _ in $(seq 200); do
    grep -q 'listening on' "$WORK/baseline.log" && break
    kill -0 "$BASELINE_PID" 2>/dev/null || { cat "$WORK/baseline.log" >&2; die "baseline exited"; }
    sleep 0.05
done
BASELINE_URL="https://$(sed -n 's/^baseline listening on //p' "$WORK/baseline.log")/mutate/workloads"
[ "$BASELINE_URL" != "https:///mutate/workloads" ] || die "baseline did not start"
RSS_B_IDLE=$(status_kb "$BASELINE_PID" VmRSS)

declare -A SERVER_PID=([konsumer]=$KONSUMER_PID [baseline]=$BASELINE_PID)
declare -A SERVER_URL=([konsumer]=$KONSUMER_URL [baseline]=$BASELINE_URL)

# Both must answer 200 with an allowed patch, konsumer through its real decision path.
for name in konsumer baseline; do
    curl -sS --cacert "$CA" -H 'Content-Type: application/json' --data-binary "@$BODY" \
        -o "$WORK/results/$name-answer.json" "${SERVER_URL[$name]}"
    jq -e '.response.allowed == true and (.response.patch | length > 0)' \
        "$WORK/results/$name-answer.json" >/dev/null ||
        die "$name did not answer with an allowed patch: $(head -c 300 "$WORK/results/$name-answer.json")"
done
curl -sS --cacert "$CA" -H 'Content-Type: application/json' --data-binary "@$DEPLOYMENT_BODY" \
    "$KONSUMER_URL" | jq -e '.response.allowed == true and (.response.patch | length > 0)' >/dev/null ||
    die "konsumer did not patch $DEPLOYMENT_BODY"
curl -sS --cacert "$CA" -H 'Content-Type: application/json' --data-binary "@$VALIDATE_BODY" \
    "${KONSUMER_URL%/mutate/workloads}/validate/consumers" |
    jq -e '.response.allowed == true and (.response.warnings | length > 0)' >/dev/null ||
    die "konsumer did not allow $VALIDATE_BODY with its deprecation warning"
K_ANSWER_BYTES=$(wc -c <"$WORK/results/konsumer-answer.json")
B_ANSWER_BYTES=$(wc -c <"$WORK/results/baseline-answer.json")
log "konsumer at $KONSUMER_URL (pid $KONSUMER_PID), baseline at $BASELINE_URL (pid $BASELINE_PID)"

wait_idle
LOADAVG_MEASURE=$(cat /proc/loadavg)
log "load average before measuring: $LOADAVG_MEASURE"

for name in baseline konsumer; do
    log "warm-up $name ($WARMUP)"
    load "$name" "${SERVER_URL[$name]}" "$WORK/results/warmup-$name.json" -z "$WARMUP" -c "$CONNS" >/dev/null
done

# --- throughput and latency -------------------------------------------------------
RUNS=$WORK/results/runs.tsv
: >"$RUNS"
for round in $(seq "$ROUNDS"); do
    for mode in max rate deployment validate; do
        # Alternate the order so neither server always runs first.
        if [ $((round % 2)) = 1 ]; then order="baseline konsumer"; else order="konsumer baseline"; fi
        for name in $order; do
            url=${SERVER_URL[$name]}
            LOAD_BODY=$BODY
            if [ "$mode" = max ]; then
                args=(-z "$DURATION" -c "$CONNS")
            elif [ "$mode" = deployment ]; then
                args=(-z "$DURATION" -c "$CONNS")
                LOAD_BODY=$DEPLOYMENT_BODY
            elif [ "$mode" = validate ]; then
                args=(-z "$DURATION" -c "$CONNS")
                LOAD_BODY=$VALIDATE_BODY
                url=${url%/mutate/workloads}/validate/consumers
            else
                args=(-z "$DURATION" -c "$RATE_CONNS" -q "$RATE" --latency-correction)
                [ "$HAVE_SQLITE" = 1 ] && args+=(--db-url "$WORK/results/$name-$mode-$round.json.db")
            fi
            for try in $(seq "$TRIES"); do
                rec=$(LOAD_BODY=$LOAD_BODY load "$name" "$url" "$WORK/results/$name-$mode-$round.json" "${args[@]}")
                other=$(cut -f11 <<<"$rec") peak=$(cut -f12 <<<"$rec")
                awk -v o="$other" -v m="$OTHER_MAX" -v p="$peak" -v pm="$PEAK_MAX" \
                    'BEGIN { exit !(o > m || p > pm) }' || break
                [ "$try" = "$TRIES" ] && { log "warning: $name $mode round $round: other processes used $other cores (peak $peak); keeping it"; NOISY=$((NOISY + 1)); break; }
                log "$name $mode round $round: other processes used $other cores (peak $peak in 1 s); again"
                wait_idle
            done
            printf '%s\t%s\t%s\t%s\n' "$name" "$mode" "$round" "$rec" >>"$RUNS"
            log "$(awk -F'\t' -v OFS=' ' 'END { printf "%s %s round %s: %.0f req/s, p50 %.3f ms, p99 %.3f ms (steady %.3f), %.1f µs CPU/req, other %.2f cores (peak %.2f)\n", $1, $2, $3, $4, $5, $6, $17, $11, $14, $15 }' "$RUNS")"
        done
    done
done
RSS_K_LOADED=$(status_kb "$KONSUMER_PID" VmRSS)
HWM_K_LOADED=$(status_kb "$KONSUMER_PID" VmHWM)
RSS_B_LOADED=$(status_kb "$BASELINE_PID" VmRSS)
HWM_B_LOADED=$(status_kb "$BASELINE_PID" VmHWM)

# med NAME MODE COLUMN (1-based within the record after name, mode, round)
med() { awk -F'\t' -v n="$1" -v m="$2" -v c="$3" '$1 == n && $2 == m { print $(c + 3) }' "$RUNS" | median; }
col() { awk -F'\t' -v n="$1" -v m="$2" -v c="$3" -v f="$4" '$1 == n && $2 == m { printf "%s" f, s, $(c + 3); s = ", " }' "$RUNS"; }

# --- RSS with many Consumers ------------------------------------------------------
log "generating $CONSUMERS Consumers"
cp "$ROOT/examples/local/orders.yaml" "$WORK/many/orders.yaml"
for i in $(seq 2 "$CONSUMERS"); do
    n=$(printf 'orders-%04d' "$i")
    sed -e "s/^  name: orders\$/  name: $n/" "$ROOT/examples/local/orders.yaml" >"$WORK/many/$n.yaml"
done
log "starting konsumer ($CONSUMERS Consumers)"
t0=$(date +%s%N)
start_konsumer "$WORK/many" "$WORK/konsumer-many.log"
MANY_PID=$K_PID
READY_MS=$((($(date +%s%N) - t0) / 1000000))
for _ in $(seq 600); do
    LOADED=$(curl -s "$K_ADMIN/metrics" | awk '$1 == "konsumer_consumers" { print $2 }')
    [ "$LOADED" = "$CONSUMERS" ] && break
    sleep 0.05
done
LOADED_MS=$((($(date +%s%N) - t0) / 1000000))
[ "$LOADED" = "$CONSUMERS" ] || die "konsumer loaded ${LOADED:-?} Consumers, expected $CONSUMERS"
RSS_MANY_READY=$(status_kb "$MANY_PID" VmRSS)
# A few requests, each for a different Consumer.
for i in 1 2 $((CONSUMERS / 4)) $((CONSUMERS / 2)) $((CONSUMERS * 3 / 4)) "$CONSUMERS"; do
    [ "$i" -ge 1 ] || continue
    if [ "$i" = 1 ]; then n=orders; else n=$(printf 'orders-%04d' "$i"); fi
    sed "s/\"konsumerator.lwolf.org\/consumer\":\"orders\"/\"konsumerator.lwolf.org\/consumer\":\"$n\"/" \
        "$BODY" >"$WORK/body-$n.json"
    curl -sS --cacert "$WORK/many/.konsumer/tls/ca.crt" -H 'Content-Type: application/json' \
        --data-binary "@$WORK/body-$n.json" "$K_URL" | jq -e '.response.allowed == true' >/dev/null ||
        die "konsumer ($CONSUMERS Consumers) did not allow a request for $n"
done
RSS_MANY_FEW=$(status_kb "$MANY_PID" VmRSS)
# Idle: RSS after SETTLE seconds, and what each server does with its CPU meanwhile.
log "idle for $SETTLE s"
i0_many=$(cpu_ticks "$MANY_PID") i0_one=$(cpu_ticks "$KONSUMER_PID") i0_base=$(cpu_ticks "$BASELINE_PID")
RSS_MANY_SERIES=""
for _ in $(seq 5); do
    sleep "$(awk -v s="$SETTLE" 'BEGIN { print s / 5 }')"
    RSS_MANY_SERIES="$RSS_MANY_SERIES${RSS_MANY_SERIES:+, }$(mb "$(status_kb "$MANY_PID" VmRSS)")"
done
IDLE_MANY=$(awk -v a="$i0_many" -v b="$(cpu_ticks "$MANY_PID")" -v t="$CLK_TCK" -v s="$SETTLE" 'BEGIN { printf "%.3f", (b - a) / t / s }')
IDLE_ONE=$(awk -v a="$i0_one" -v b="$(cpu_ticks "$KONSUMER_PID")" -v t="$CLK_TCK" -v s="$SETTLE" 'BEGIN { printf "%.3f", (b - a) / t / s }')
IDLE_BASE=$(awk -v a="$i0_base" -v b="$(cpu_ticks "$BASELINE_PID")" -v t="$CLK_TCK" -v s="$SETTLE" 'BEGIN { printf "%.3f", (b - a) / t / s }')
RSS_MANY_SETTLED=$(status_kb "$MANY_PID" VmRSS)
THREADS_MANY=$(status_kb "$MANY_PID" Threads)
log "load burst on konsumer ($CONSUMERS Consumers)"
"${GEN_PIN[@]}" "$OHA" --no-tui --output-format quiet --cacert "$WORK/many/.konsumer/tls/ca.crt" \
    -m POST -D "$BODY" -H 'Content-Type: application/json' -w -z 5s -c "$CONNS" "$K_URL" >&2
RSS_MANY_LOADED=$(status_kb "$MANY_PID" VmRSS)
HWM_MANY=$(status_kb "$MANY_PID" VmHWM)

LOADAVG_END=$(cat /proc/loadavg)

# --- report -----------------------------------------------------------------------

K_MAX=$(med konsumer max 1) B_MAX=$(med baseline max 1)
K_CPU=$(med konsumer max 8) B_CPU=$(med baseline max 8)
K_DCPU=$(med konsumer deployment 8) B_DCPU=$(med baseline deployment 8)
K_VCPU=$(med konsumer validate 8) B_VCPU=$(med baseline validate 8)
K_RCPU=$(med konsumer rate 8) B_RCPU=$(med baseline rate 8)
K_P99=$(med konsumer rate 3) B_P99=$(med baseline rate 3)
K_SP99=$(med konsumer rate 14) B_SP99=$(med baseline rate 14)

cat <<EOF
## Run

- command: \`bench/webhook.sh\` (DURATION=$DURATION CONNS=$CONNS RATE=$RATE RATE_CONNS=$RATE_CONNS ROUNDS=$ROUNDS WARMUP=$WARMUP PIN=$PIN)
- konsumer: ${KONSUMER_BIN:+$KONSUMER_BIN, not the build of }commit $(GIT_OPTIONAL_LOCKS=0 git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(GIT_OPTIONAL_LOCKS=0 git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' with uncommitted changes in src/ or Cargo.*')
- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r)
- load generator: $OHA_VERSION, body \`${BODY#"$ROOT"/}\` ($(wc -c <"$BODY") bytes), TLS 1.3 with the CA konsumer generated, HTTP/1.1 keep-alive
- answers: konsumer $K_ANSWER_BYTES bytes (its real patch), baseline $B_ANSWER_BYTES bytes (canned)
- load average: at start \`$LOADAVG_START\`, before measuring \`$LOADAVG_MEASURE\`, at end \`$LOADAVG_END\`${IDLE_WARNING:+
- **warning: $IDLE_WARNING**}$( [ "$NOISY" = 0 ] || echo "
- **warning: $NOISY runs had other processes using more than $OTHER_MAX cores**")

Medians of $ROUNDS rounds (servers interleaved). "other" is CPU used by processes other
than the server under test and oha during the run, in cores (should be ≈ 0); "peak"
is its highest one-second value.

### Throughput: $DURATION, $CONNS connections, unthrottled

| server | req/s | p50 | p99 | p99.9 | server CPU / req | server cores | oha cores | other cores (peak) | errors |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
for name in konsumer baseline; do
    printf '| %s | %s | %s ms | %s ms | %s ms | %s µs | %s | %s | %s | %s |\n' "$name" \
        "$(f0 "$(med $name max 1)")" "$(f3 "$(med $name max 2)")" "$(f3 "$(med $name max 3)")" \
        "$(f3 "$(med $name max 4)")" "$(f1 "$(med $name max 8)")" "$(f2 "$(med $name max 9)")" \
        "$(f2 "$(med $name max 10)")" "$(f2 "$(med $name max 11)") ($(f2 "$(med $name max 12)"))" \
        "$(awk -F'\t' -v n=$name '$1 == n && $2 == "max" { s += $9 + $10 } END { print s + 0 }' "$RUNS")"
done
cat <<EOF
| **konsumer / baseline** | **$(ratio "$K_MAX" "$B_MAX")** | | | | **$(ratio "$K_CPU" "$B_CPU")** | | | | |

Per round, req/s: konsumer $(col konsumer max 1 %.0f); baseline $(col baseline max 1 %.0f).
Server CPU / req ratio above 1 means konsumer spends that many times the baseline's CPU per request.

### Latency at a fixed $RATE req/s: $DURATION, $RATE_CONNS connections, coordinated-omission corrected

p50 and p99 are over all requests, including the first ones, which wait for the
$RATE_CONNS TLS connections to be set up; "steady" leaves out the requests sent in the
first ${SETUP_S} s (an apiserver keeps its webhook connections open).

| server | req/s | p50 | p99 | p99.9 | steady p50 | steady p99 | steady p99.9 | server CPU / req | server cores | oha cores | other cores (peak) | errors |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
for name in konsumer baseline; do
    printf '| %s | %s | %s ms | %s ms | %s ms | %s ms | %s ms | %s ms | %s µs | %s | %s | %s | %s |\n' "$name" \
        "$(f0 "$(med $name rate 1)")" "$(f3 "$(med $name rate 2)")" "$(f3 "$(med $name rate 3)")" \
        "$(f3 "$(med $name rate 4)")" \
        "$(f3 "$(med $name rate 13)")" "$(f3 "$(med $name rate 14)")" "$(f3 "$(med $name rate 15)")" \
        "$(f1 "$(med $name rate 8)")" "$(f2 "$(med $name rate 9)")" \
        "$(f2 "$(med $name rate 10)")" "$(f2 "$(med $name rate 11)") ($(f2 "$(med $name rate 12)"))" \
        "$(awk -F'\t' -v n=$name '$1 == n && $2 == "rate" { s += $9 + $10 } END { print s + 0 }' "$RUNS")"
done
cat <<EOF

Per round, p99 ms: konsumer $(col konsumer rate 3 %.3f); baseline $(col baseline rate 3 %.3f).
Per round, steady p99 ms: konsumer $(col konsumer rate 14 %.3f); baseline $(col baseline rate 14 %.3f).

### Other requests: $DURATION, $CONNS connections, unthrottled

| request | server | req/s | p50 | p99 | server CPU / req | konsumer / baseline | other cores (peak) | errors |
|---|---|---:|---:|---:|---:|---:|---:|---:|
$(for mode in deployment validate; do
    case $mode in
        deployment) what="Deployment CREATE (\`${DEPLOYMENT_BODY#"$ROOT"/}\`, $(wc -c <"$DEPLOYMENT_BODY") bytes) on \`/mutate/workloads\`" ;;
        validate) what="seed example (\`${VALIDATE_BODY#"$ROOT"/}\`, $(wc -c <"$VALIDATE_BODY") bytes) on \`/validate/consumers\`" ;;
    esac
    for name in konsumer baseline; do
        r=""
        [ "$name" = konsumer ] && r=$(ratio "$(med konsumer $mode 8)" "$(med baseline $mode 8)")
        printf '| %s | %s | %s | %s ms | %s ms | %s µs | %s | %s (%s) | %s |\n' "$what" "$name" \
            "$(f0 "$(med $name $mode 1)")" "$(f3 "$(med $name $mode 2)")" "$(f3 "$(med $name $mode 3)")" \
            "$(f1 "$(med $name $mode 8)")" "$r" "$(f2 "$(med $name $mode 11)")" "$(f2 "$(med $name $mode 12)")" \
            "$(awk -F'\t' -v n=$name -v m=$mode '$1 == n && $2 == m { s += $9 + $10 } END { print s + 0 }' "$RUNS")"
        what=""
    done
done)

### Memory (VmRSS; VmHWM is the peak) and idle CPU

| process | after start | after a few requests | after ${SETTLE} s idle | after 5 s of load | peak (VmHWM) | CPU while idle |
|---|---:|---:|---:|---:|---:|---:|
| konsumer, 1 Consumer | $(mb "$RSS_K_IDLE") | | | $(mb "$RSS_K_LOADED") (after the runs) | $(mb "$HWM_K_LOADED") | $IDLE_ONE cores |
| konsumer, $CONSUMERS Consumers | $(mb "$RSS_MANY_READY") | $(mb "$RSS_MANY_FEW") | $(mb "$RSS_MANY_SETTLED") | $(mb "$RSS_MANY_LOADED") | $(mb "$HWM_MANY") | $IDLE_MANY cores |
| baseline | $(mb "$RSS_B_IDLE") | | | $(mb "$RSS_B_LOADED") (after the runs) | $(mb "$HWM_B_LOADED") | $IDLE_BASE cores |

konsumer with $CONSUMERS Consumers: ready in $READY_MS ms, all $CONSUMERS in its cache after
$LOADED_MS ms; RSS every $(awk -v s="$SETTLE" 'BEGIN { print s / 5 }') s while idle: $RSS_MANY_SERIES; $THREADS_MANY threads.

### Targets (issue 11)

| target | result | |
|---|---|---|
| \`/mutate/workloads\`, \`pod-create-large\`: server CPU per request ≤ 2.0× the baseline's | $(ratio "$K_CPU" "$B_CPU") ($(f0 "$K_CPU") vs $(f0 "$B_CPU") µs) | $(awk -v a="$K_CPU" -v b="$B_CPU" 'BEGIN { print (a <= 2.0 * b ? "met" : "**missed**") }') |
| same, Deployment CREATE: ≤ 2.5× | $(ratio "$K_DCPU" "$B_DCPU") ($(f0 "$K_DCPU") vs $(f0 "$B_DCPU") µs) | $(awk -v a="$K_DCPU" -v b="$B_DCPU" 'BEGIN { print (a <= 2.5 * b ? "met" : "**missed**") }') |
| \`/validate/consumers\`, seed example: ≤ 2.5× | $(ratio "$K_VCPU" "$B_VCPU") ($(f0 "$K_VCPU") vs $(f0 "$B_VCPU") µs) | $(awk -v a="$K_VCPU" -v b="$B_VCPU" 'BEGIN { print (a <= 2.5 * b ? "met" : "**missed**") }') |
| p99 < 1 ms at $RATE req/s, steady (connections open) | $(f3 "$K_SP99") ms (baseline $(f3 "$B_SP99") ms) | $(awk -v p="$K_SP99" 'BEGIN { print (p < 0 ? "not measured (no sqlite3)" : p < 1 ? "met" : "**missed**") }') |
| same, including connection setup | $(f3 "$K_P99") ms (baseline $(f3 "$B_P99") ms) | $(awk -v p="$K_P99" 'BEGIN { print (p < 1 ? "met" : "**missed**") }') |
| RSS < 50 MB with $CONSUMERS Consumers, after a few requests | $(mb "$RSS_MANY_FEW") | $(awk -v r="$RSS_MANY_FEW" 'BEGIN { print (r < 50 * 1024 ? "met" : "**missed**") }') |
| same, after ${SETTLE} s idle | $(mb "$RSS_MANY_SETTLED") | $(awk -v r="$RSS_MANY_SETTLED" 'BEGIN { print (r < 50 * 1024 ? "met" : "**missed**") }') |
| same, peak (VmHWM) after ${CONNS}-connection load | $(mb "$HWM_MANY") | $(awk -v r="$HWM_MANY" 'BEGIN { print (r < 50 * 1024 ? "met" : "**missed**") }') |
EOF
log "done"
