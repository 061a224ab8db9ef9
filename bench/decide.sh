#!/usr/bin/env bash
# CPU per step of konsumer's workload decision, without HTTP or TLS (bench/decide.rs).
#
#   bench/decide.sh          # Markdown table on stdout; pinned to CPU 1 (CPU=N to change)
#
# Builds bench/decide.rs as a throwaway package in a temporary directory, depending on
# this repository's library with this repository's Cargo.lock (nothing is written to
# the repository). Honours CARGO_TARGET_DIR.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CPU=${CPU:-1}
PKG=$(mktemp -d /tmp/konsumer-decide.XXXXXX)
trap 'rm -rf "$PKG"' EXIT

mkdir -p "$PKG/src"
cp "$ROOT/bench/decide.rs" "$PKG/src/main.rs"
cp "$ROOT/Cargo.lock" "$PKG/Cargo.lock"
cat >"$PKG/Cargo.toml" <<EOF
[package]
name = "konsumer-decide-bench"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
konsumer = { path = "$ROOT" }
serde = "1"
serde_json = "1"
tracing = "0.1"
tracing-subscriber = { version = "0.3", features = ["env-filter", "json", "fmt"] }

[profile.release]
debug = 1
EOF

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$PKG" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --quiet) >&2
BIN=$TARGET_DIR/release/konsumer-decide-bench
echo "load average: $(cat /proc/loadavg), pinned to CPU $CPU"
echo
taskset -c "$CPU" "$BIN" "$ROOT" json 2>/dev/null
taskset -c "$CPU" "$BIN" "$ROOT" text 2>/dev/null | tail -1

# Instructions per call, counted by callgrind (immune to a busy machine): each
# step run ITERS + 1 times and once (one-time work drops out), the difference divided by ITERS.
if [ "${CALLGRIND:-1}" = 1 ] && command -v valgrind >/dev/null; then
    ITERS=${ITERS:-200}
    irs() {
        local out
        out=$(mktemp /tmp/konsumer-decide-cg.XXXXXX)
        STEP=$1 ITERS=$2 valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" "$ROOT" "$3" >/dev/null 2>&1
        awk '/^summary:/ { print $2 }' "$out"
        rm -f "$out"
    }
    echo
    echo "| step (callgrind, $ITERS calls) | instructions per call |"
    echo "|---|---:|"
    for step in ${STEPS:-skip serde lazy decide ops text encode allops all span0 span:json span:text vskip vvalue vrules vread vparts vall}; do
        id=${step%%:*} fmt=${step#*:}
        [ "$fmt" = "$step" ] && fmt=json
        base=$(irs "$id" 0 "$fmt")
        with=$(irs "$id" "$ITERS" "$fmt")
        printf '| %s | %s |\n' "$step" "$(awk -v a="$with" -v b="$base" -v n="$ITERS" 'BEGIN { printf "%.0f", (a - b) / n }')"
    done
fi
