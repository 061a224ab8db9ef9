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
