#!/usr/bin/env bash
# Load test of the read path: GET /v1/sites/{id}/spaces?limit=200 (200 spaces per response) on the
# release build with the demo data (SQLite), using wrk on loopback. Prints requests/s and latency
# percentiles. Usage: bench/api.sh [duration_secs] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-20}"
connections="${2:-64}"
command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
cargo build --release -q
data_dir="$(mktemp -d)"
log="$data_dir/demo.log"
BERTH__DATA_DIR="$data_dir" RUST_LOG=warn ./target/release/berth demo --listen 127.0.0.1:0 >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$data_dir"' EXIT
for _ in $(seq 1 100); do grep -q "stop with Ctrl-C" "$log" && break; sleep 0.2; done
api=$(awk '$1 == "API" {print $2}' "$log")
key=$(awk '/operator admin key/ {print $4}' "$log")
site=$(awk '/off-street site/ {print $3}' "$log")
url="$api/sites/$site/spaces?limit=200"
n=$(curl -s -H "Authorization: Bearer $key" "$url" | grep -o '"code"' | wc -l)
echo "endpoint: GET /v1/sites/{id}/spaces?limit=200 -> $n spaces per response"
wrk -t2 -c"$connections" -d"${duration}s" --latency -H "Authorization: Bearer $key" "$url"
echo "server RSS: $(ps -o rss= -p $pid) KiB"
