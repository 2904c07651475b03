#!/usr/bin/env bash
# Starts scopegate for the shared peer benchmark (../shared/bench, copied to
# target/peer-bench): its run.sh exports BENCH_* values and runs this as
# GATEWAY_CMD. The config mirrors the peers': /api/public none,
# /api/private any token, /api/private-scoped read:messages, one worker.
#   cp -r ../shared/bench target/peer-bench && target/peer-bench/setup.sh
#   GATEWAY_CMD=deploy/peer-bench-gateway.sh PEER_FILTER='P0|P1|P2|GW' target/peer-bench/run.sh 10 64
# TOKEN_CACHE_SIZE=0 turns the token cache off: every request is verified
# whole, as HAProxy's jwt_verify does and as with every token distinct.
# EVENTS_PER_BUSY_TURN sets `events_per_busy_turn` (the gateway's default if unset).
set -euo pipefail
cd "$(dirname "$0")/.."
config=target/peer-bench-gateway.yaml
cat > "$config" <<YAML
listen: "${BENCH_LISTEN}"
workers: 1
${EVENTS_PER_BUSY_TURN:+events_per_busy_turn: $EVENTS_PER_BUSY_TURN}
upstream:
  url: "${BENCH_UPSTREAM_URL}"
issuers:
  - issuer: "${BENCH_ISSUER}"
    audiences: ["${BENCH_AUDIENCE}"]
    jwks_uri: "${BENCH_JWKS_URL}"
    algorithms: [RS256]
tokens:
  cache_size: ${TOKEN_CACHE_SIZE:-100000}
routes:
  - path: /api/public
    methods: [GET]
    auth: none
  - path: /api/private
  - path: /api/private-scoped
    methods: [GET]
    scopes: ["${BENCH_REQUIRED_SCOPE}"]
YAML
RUST_LOG=${RUST_LOG:-warn} exec "${SCOPEGATE_BIN:-target/release/scopegate}" run -c "$config"
