#!/usr/bin/env bash
# 1,000 concurrent clients in one round on loopback: the real protocol (enroll, base weights, assignment,
# one local step of real training on the tiny model, upload), FedIT, every client sampled. Prints the
# round time (server clock, from listening to the round's close) and the server's peak memory (VmHWM).
# Usage: bash bench/chaos/load1000.sh [CLIENTS]   (default 1000). Bounded: the clients give up after 2 h.
set -euo pipefail
cd "$(dirname "$0")/../.."
clients=${1:-1000}
dotnet build bench/chaos/FedLora.Chaos -c Release -v q -nologo >/dev/null
tool=bench/chaos/FedLora.Chaos/bin/Release/net10.0/FedLora.Chaos
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))
# Every client shares 127.0.0.1: the per-address limits are raised to let them all in at once.
"$tool" serve --state "$work/state" --port "$port" --method fedit --clients "$clients" --per-round "$clients" --rounds 1 \
  --per-address $((clients * 2)) --max-connections $((clients * 2)) --linger 30 >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do grep -q listening "$work/serve.log" && break; sleep 0.2; done
start=$(date +%s.%N)
"$tool" clients --server "http://127.0.0.1:$port/" --clients "$clients" --poll-ms 200 | tee "$work/clients.log"
end=$(date +%s.%N)
wait "$server"
cat "$work/serve.log" | grep -E "round|finished|digest|peak" || true
updates=$(grep -oE 'updates [0-9]+' "$work/serve.log" | awk '{print $2}')
peak=$(grep -oE 'peak-rss-mb [0-9.]+' "$work/serve.log" | awk '{print $2}')
echo "load: $clients clients, 1 round, $updates updates aggregated; clients' wall time $(echo "$end - $start" | bc) s; server peak RSS $peak MB"
[ "$updates" = "$clients" ] || { echo "FAIL: $updates of $clients updates aggregated"; exit 1; }
awk -v p="$peak" 'BEGIN { exit !(p < 1024) }' || { echo "FAIL: server peak RSS $peak MB >= 1 GB"; exit 1; }
echo "PASS"
