#!/usr/bin/env bash
# The long chaos cases (the fast ones are in tests/FedLora.Server.Tests). Each runs the server and its clients as
# separate processes on loopback (bench/chaos/FedLora.Chaos: a tiny model, the real protocol, real training), attacks
# or breaks the server, and checks the final state against an uninterrupted control run (its SHA-256 digest over the
# global adapters and base weights). Every loop and wait is bounded.
# Usage: bash bench/chaos/chaos.sh [CASE...]   cases: kill9 sigterm readonly flood abuse poison (default: all)
set -uo pipefail
cd "$(dirname "$0")/../.."
dotnet build bench/chaos/FedLora.Chaos -c Release -v q -nologo >/dev/null || exit 1
tool=bench/chaos/FedLora.Chaos/bin/Release/net10.0/FedLora.Chaos
work=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
job=(--method fslora --clients 6 --per-round 3 --rounds 6)
failures=0
server=""

# start_server STATE PORT [ARGS...]: starts the server (appending to STATE.log) and waits (<= 30 s) until it listens.
start_server() {
  local state=$1 port=$2; shift 2
  local before; before=$(grep -c listening "$state.log" 2>/dev/null || true)
  "$tool" serve --state "$state" --port "$port" "${job[@]}" --linger 5 "$@" >>"$state.log" 2>&1 &
  server=$!
  for _ in $(seq 1 150); do
    [ "$(grep -c listening "$state.log" 2>/dev/null || true)" -gt "${before:-0}" ] && return 0
    kill -0 "$server" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

clients() { timeout 900 "$tool" clients --server "http://127.0.0.1:$1/" --clients 6 --poll-ms 50 "${@:2}"; }
digest() { grep -oE 'digest [0-9A-F]+' "$1.log" | tail -1 | awk '{print $2}'; }
port() { echo $((20000 + RANDOM % 30000)); }
check() { # check NAME CONDITION-MESSAGE STATUS
  if [ "$3" -eq 0 ]; then echo "PASS $1: $2"; else echo "FAIL $1: $2"; failures=$((failures + 1)); fi
}
same_as_control() { [ -n "$(digest "$1")" ] && [ "$(digest "$1")" = "$control" ]; }

# The control: the same job, uninterrupted.
p=$(port); start_server "$work/control" "$p" || { echo "control server did not start"; exit 1; }
clients "$p" >/dev/null; wait "$server"
control=$(digest "$work/control")
echo "control digest $control"
[ -n "$control" ] || { cat "$work/control.log"; exit 1; }

case_kill9() {
  # kill -9 at random moments, and right after a round's save (while the next round's first updates are written).
  local s=$work/kill p; p=$(port)
  start_server "$s" "$p" || return 1
  clients "$p" >"$work/kill.clients" 2>&1 &
  local client_pid=$! kills=0
  for i in $(seq 1 6); do
    if [ $((i % 2)) -eq 0 ]; then
      local closed; closed=$(grep -c closed "$s.log" || true)
      for _ in $(seq 1 100); do [ "$(grep -c closed "$s.log" || true)" -gt "$closed" ] && break; sleep 0.05; done
    else
      sleep "0.$((RANDOM % 9 + 1))"
    fi
    kill -0 "$server" 2>/dev/null || break
    kill -9 "$server"; wait "$server" 2>/dev/null; kills=$((kills + 1))
    start_server "$s" "$p" || return 1
  done
  wait "$client_pid"; wait "$server"
  same_as_control "$s"; check kill9 "$kills kill -9 at random points and after saves; final state equals the control" $?
}

case_sigterm() {
  local s=$work/term p; p=$(port)
  start_server "$s" "$p" || return 1
  clients "$p" >/dev/null 2>&1 &
  local client_pid=$!
  sleep "1.$((RANDOM % 9))"
  local t0; t0=$(date +%s.%N)
  kill -TERM "$server"
  local waited=0
  while kill -0 "$server" 2>/dev/null && [ $waited -lt 200 ]; do sleep 0.1; waited=$((waited + 1)); done
  wait "$server"; local rc=$?
  local took; took=$(echo "$(date +%s.%N) - $t0" | bc)
  [ "$rc" -eq 0 ] && grep -q stopped "$s.log"; check sigterm-exit "SIGTERM: exit $rc after ${took} s (bound 20 s)" $?
  start_server "$s" "$p" || return 1
  wait "$client_pid"; wait "$server"
  same_as_control "$s"; check sigterm "restart after SIGTERM; final state equals the control" $?
}

case_readonly() {
  # The state folder turns unwritable mid-run, then writable again. As root, chmod does not stop writes, so every
  # future round file is made a folder (the save fails exactly as on a read-only disk); otherwise chmod a-w is used.
  local s=$work/ro p; p=$(port)
  start_server "$s" "$p" || return 1
  if [ "$(id -u)" -eq 0 ]; then
    for r in $(seq 1 6); do f=$(printf '%s/state-%06d.safetensors' "$s" "$r"); [ -e "$f" ] || mkdir "$f"; done
  else
    chmod -R a-w "$s"
  fi
  clients "$p" >/dev/null 2>&1 &
  local client_pid=$!
  sleep 8
  kill -0 "$server" 2>/dev/null && grep -q "could not be saved\|cannot keep" "$s/server.log"; check readonly-up "unwritable state folder: server up, failure logged" $?
  if [ "$(id -u)" -eq 0 ]; then find "$s" -maxdepth 1 -type d -name 'state-*.safetensors' -exec rmdir {} +; else chmod -R u+w "$s"; fi
  wait "$client_pid"; wait "$server"
  same_as_control "$s"; check readonly "writable again: the job finished equal to the control" $?
}

case_flood() {
  # The flood comes while the server waits for enrollments (the tiny job itself lasts only seconds), then the job runs.
  local s=$work/flood p; p=$(port)
  start_server "$s" "$p" || return 1
  local n=$(( $(ulimit -n) - 300 ))
  timeout 300 "$tool" flood --server "http://127.0.0.1:$p/" --connections "$n" --hold-seconds 10 | tee "$work/flood.out"
  local rc=${PIPESTATUS[0]}
  check flood-up "$n idle connections (up to the fd limit): the server answers afterwards" "$rc"
  clients "$p" >/dev/null 2>&1; wait "$server"
  local peak; peak=$(grep -oE 'peak-rss-mb [0-9.]+' "$s.log" | tail -1 | awk '{print $2}')
  same_as_control "$s" && awk -v p="$peak" 'BEGIN { exit !(p < 1024) }'; check flood "job finished equal to the control; server peak RSS $peak MB (< 1024)" $?
}

case_abuse() {
  local s=$work/abuse p; p=$(port)
  start_server "$s" "$p" || return 1
  clients "$p" >/dev/null 2>&1 &
  local client_pid=$!
  sleep 1
  timeout 300 "$tool" abuse --server "http://127.0.0.1:$p/" --clients 6 | tee "$work/abuse.out"
  check abuse-refused "8 x 250 MB uploads, 8 x 200 MB anonymous enrollments, a 35 MB header: all refused" "${PIPESTATUS[0]}"
  wait "$client_pid"; wait "$server"
  local peak; peak=$(grep -oE 'peak-rss-mb [0-9.]+' "$s.log" | tail -1 | awk '{print $2}')
  same_as_control "$s" && awk -v p="$peak" 'BEGIN { exit !(p < 512) }'; check abuse "job finished equal to the control; server peak RSS $peak MB (< 512)" $?
}

case_poison() {
  # FlexLoRA with client 0 sending 1e20 everywhere: the job must finish with a finite state.
  local s=$work/poison p; p=$(port)
  job=(--method flexlora --clients 6 --per-round 3 --rounds 6)
  start_server "$s" "$p" || return 1
  clients "$p" --poison-client 0 | grep poison
  wait "$server"
  job=(--method fslora --clients 6 --per-round 3 --rounds 6)
  grep -q "finished rounds 6 finite True" "$s.log"; check poison "FlexLoRA with a client sending 1e20: all 6 rounds done, state finite" $?
}

cases=("$@"); [ ${#cases[@]} -eq 0 ] && cases=(kill9 sigterm readonly flood abuse poison)
for c in "${cases[@]}"; do "case_$c" || { echo "FAIL $c: could not run"; failures=$((failures + 1)); }; done
echo "chaos: $failures failure(s)"
exit $((failures > 0))
