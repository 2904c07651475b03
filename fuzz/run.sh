#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) each, two at a time,
# then minimizes the corpora. Needs a nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz --locked`). Crashes land in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-600}
targets=(normalize_route token_extract jwt_verify config_load)
cargo +nightly fuzz build --release
run() {
  local t=$1
  mkdir -p "corpus/$t"
  timeout $((SECONDS_EACH + 60)) cargo +nightly fuzz run --release "$t" "corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -max_len=16384 > "logs-$t.txt" 2>&1
  echo "$t: $(grep -E '^(#[0-9]+.*DONE|Done)' "logs-$t.txt" | tail -1)"
}
mkdir -p logs
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  run "${targets[i]}" &
  [ $((i + 1)) -lt ${#targets[@]} ] && run "${targets[i + 1]}" &
  wait
done
for t in "${targets[@]}"; do
  cargo +nightly fuzz cmin --release "$t" "corpus/$t" > "logs-cmin-$t.txt" 2>&1 || true
done
echo "corpora: $(find corpus -type f | wc -l) files"
