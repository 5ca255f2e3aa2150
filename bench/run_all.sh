#!/usr/bin/env bash
# Run the three benchmarks and write their JSON into bench/results/ (gitignored).
#
#   bench/run_all.sh            # from the repository root or anywhere
#   PYTHON=/path/to/python bench/run_all.sh
#
# Each benchmark first waits (up to 2 minutes) for other work on the machine to stop, and is
# killed by `timeout` if it ever runs longer than 15 minutes; every process it starts dies with it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=bench/results
mkdir -p "$OUT"

echo "== closed loop: 100 charge points, gateway vs bare Autobahn (5 rounds of 10 s each)" >&2
timeout --kill-after=30 900 "$PY" bench/closed_loop.py --wait-quiet 120 --out "$OUT/closed_loop.json" >/dev/null

echo "== idle memory: 10000 idle charge points" >&2
timeout --kill-after=30 900 "$PY" bench/idle_memory.py --wait-quiet 120 --out "$OUT/idle_memory.json" >/dev/null

echo "== TLS edge: wss vs ws, handshakes/s (3 rounds of 1000 each) and 5000 idle connections each" >&2
timeout --kill-after=30 900 "$PY" bench/tls_edge.py --wait-quiet 120 --out "$OUT/tls_edge.json" >/dev/null

"$PY" - "$OUT/closed_loop.json" "$OUT/idle_memory.json" "$OUT/tls_edge.json" <<'PY'
import json, sys
closed, idle, tls = (json.load(open(p)) for p in sys.argv[1:])
g, b = closed["gateway"], closed["bare"]
print(f"closed loop ({closed['cps']} CPs): gateway {g['calls_per_s']} calls/s p50 {g['p50_ms']} ms "
      f"p99 {g['p99_ms']} ms; bare {b['calls_per_s']} calls/s p50 {b['p50_ms']} ms p99 {b['p99_ms']} ms; "
      f"ratio {closed['ratio_gateway_to_bare']} (target >= {closed['target_ratio']}; pairs "
      f"{closed['ratio_per_round_pair']}, median {closed['ratio_paired_median']})")
print(f"idle memory ({idle['opened']}/{idle['cps']} connections): {idle['kb_per_connection']} KB each "
      f"(RSS {idle['rss_before_kb']} -> {idle['rss_after_kb']} KB; target < {idle['target_kb_per_connection']})")
hs, im = tls["handshakes"], tls["idle_memory"]
print(f"tls edge (TLS {tls['settings']['tls_version']}): handshakes/s ws {hs['ws']['handshakes_per_s']} "
      f"wss {hs['wss']['handshakes_per_s']} (ratio {hs['ratio_wss_to_ws']['handshakes_per_s']}), gateway CPU "
      f"per handshake ws {hs['ws']['gateway_cpu_us_per_handshake']} us wss {hs['wss']['gateway_cpu_us_per_handshake']} us; "
      f"idle ws {im['ws']['kb_per_connection']} KB wss {im['wss']['kb_per_connection']} KB per connection "
      f"({im['wss']['opened']}/{tls['settings']['idle_connections_per_side']} wss; target < "
      f"{tls['target_kb_per_wss_connection']}: {'met' if tls['target_met'] else 'missed'})")
print(f"JSON: {' '.join(sys.argv[1:])}")
PY
