#!/usr/bin/env bash
# MQTT pipeline: sensor readings through one private mosquitto, same payloads and QoS in every
# scenario, measured by bench/mqtt_pipeline/mqtt_load (built with the release preset):
#
#   (a) raw    publisher -> broker -> subscriber (one hop: the ceiling)
#   (b) relay  publisher -> broker -> mosquitto_sub -t in | mosquitto_pub -t out -l -> broker
#              -> subscriber (two hops, zero logic, the stock clients)
#   (c) alert  publisher -> broker -> wispd, Lua threshold (functions/alert) -> broker ->
#              subscriber; 1% of the readings are above the limit and produce an alert
#   (d) echo   the same with functions/echo: every reading produces an action
#
# Sustained events/s for each (throughput mode), the ratios c/a, d/a, d/b, and end-to-end
# latency p50/p99/p99.9 at fixed rates for (a), (b) and (d) (latency mode: paced, measured from
# the intended send time). Run by hand, not in CI:
#
#   cmake --preset release && cmake --build --preset release
#   bench/mqtt_pipeline/run.sh
#   MQTT_BENCH_SMOKE=1 bench/mqtt_pipeline/run.sh    # ~25 s: does every path work, losing nothing?
#
# Environment: QOS (1), COUNT (100000 readings per throughput run), WINDOW (1000 readings the
# publisher may run ahead of the outputs), RATES ("1000 10000" readings/s for latency),
# DURATION (5 s per latency run), SHARDS (wispd --shards, nproc), ACTION_EVERY (100: one
# reading in 100 is above the limit), SCENARIOS ("raw relay alert echo"), RELAY_NODELAY (1:
# the stock relay gets --nodelay like the other clients), BROKER_CPUS / LOAD_CPUS /
# RELAY_CPUS / NODE_CPUS (taskset -c lists; empty = not pinned), NICE (e.g. -10: every process
# of the benchmark at that priority, to keep other work on a shared machine from dominating the
# figures; needs root), OUTBOX (empty: the node's default; "false": wispd with mqtt.outbox off,
# i.e. emits published directly, for a before/after of the action outbox), WISPD, MQTT_LOAD.
#
# Output: a table, the ratios and goals, and a last line `RESULT {...json...}`. Exits 1 when a
# path cannot be set up, stalls, or loses a QoS 1 message (after printing what it measured).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/bench/mqtt_pipeline"

SMOKE=${MQTT_BENCH_SMOKE:-0}
if [[ "$SMOKE" == 1 ]]; then
  COUNT=${COUNT:-3000}
  RATES=${RATES:-1000}
  DURATION=${DURATION:-1}
else
  COUNT=${COUNT:-100000}
  RATES=${RATES:-"1000 10000"}
  DURATION=${DURATION:-5}
fi
QOS=${QOS:-1}
WINDOW=${WINDOW:-1000}
SHARDS=${SHARDS:-$(nproc)}
ACTION_EVERY=${ACTION_EVERY:-100}
SCENARIOS=${SCENARIOS:-"raw relay alert echo"}
RELAY_NODELAY=${RELAY_NODELAY:-1}
BROKER_CPUS=${BROKER_CPUS:-}
LOAD_CPUS=${LOAD_CPUS:-}
RELAY_CPUS=${RELAY_CPUS:-}
NODE_CPUS=${NODE_CPUS:-}
NICE=${NICE:-}
WISPD=${WISPD:-$ROOT/build/release/wispd}
MQTT_LOAD=${MQTT_LOAD:-$ROOT/build/release/bench/mqtt_load}
MOSQUITTO=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}

log() { printf '[mqtt-bench] %s\n' "$*" >&2; }
die() {
  printf '[mqtt-bench] error: %s\n' "$*" >&2
  exit 1
}
wants() { [[ " $SCENARIOS " == *" $1 "* ]]; }

# --- tools --------------------------------------------------------------------------------------

need_packages=()
[[ -x "$MOSQUITTO" ]] || need_packages+=(mosquitto)
command -v mosquitto_sub >/dev/null || need_packages+=(mosquitto-clients)
if ((${#need_packages[@]} > 0)); then
  if [[ $(id -u) -ne 0 ]]; then
    die "missing ${need_packages[*]}: install them (sudo apt-get install ${need_packages[*]})"
  fi
  log "installing ${need_packages[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_packages[@]}"
  MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
fi
[[ -x "$MQTT_LOAD" ]] || die "$MQTT_LOAD not found: build it first with
    cmake --preset release && cmake --build --preset release --target mqtt_load
  (or set MQTT_LOAD=/path/to/mqtt_load)"
if wants alert || wants echo; then
  [[ -x "$WISPD" ]] || die "$WISPD not found: build it with the release preset (or set WISPD=...,
  or SCENARIOS=\"raw relay\" to skip wisp)"
fi
[[ "$QOS" == 0 || "$QOS" == 1 ]] || die "QOS must be 0 or 1, not '$QOS'"

# --- plumbing ------------------------------------------------------------------------------------

TMP=$(mktemp -d -t wisp-mqtt-bench.XXXXXX)
PIDS=()

stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local pid
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[$i]}"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# pinned CPUS CMD...: runs CMD under `taskset -c CPUS` when CPUS is set, and at `nice -n NICE`
# when NICE is set.
pinned() {
  local cpus=$1
  shift
  local prefix=()
  [[ -n "$NICE" ]] && prefix+=(nice -n "$NICE")
  [[ -n "$cpus" ]] && prefix+=(taskset -c "$cpus")
  "${prefix[@]}" "$@"
}
# spawn CPUS CMD... &: the same for a server run in the background. The subshell that `&` makes
# execs CMD (nice and taskset exec too), so that $! is CMD's own PID and stop_pid reaches it.
spawn() {
  local cpus=$1
  shift
  local prefix=()
  [[ -n "$NICE" ]] && prefix+=(nice -n "$NICE")
  [[ -n "$cpus" ]] && prefix+=(taskset -c "$cpus")
  exec "${prefix[@]}" "$@"
}

free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
  else
    node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
  fi
}

# field JSON KEY: a number (or true/false) from a flat JSON object; "null" when absent.
field() {
  local v
  v=$(grep -o "\"$2\":[^,}]*" <<<"$1" | head -n1 | cut -d: -f2)
  echo "${v:-null}"
}

# --- the broker ----------------------------------------------------------------------------------

# The broker's queue limits must not be what is measured, nor drop anything:
# - max_queued_messages 0 (no limit; default 1000, above which QoS 1 messages for a slow
#   subscriber are dropped). The throughput runs keep every queue under WINDOW readings
#   anyway; a latency run at a rate the path cannot sustain queues the rest, and its figures
#   say so (arrival rate below the send rate).
# - max_inflight_messages 100 (default 20) unacknowledged QoS 1 messages towards each client,
#   the same for every subscriber (mqtt_load, mosquitto_sub, wispd).
# - set_tcp_nodelay: the broker's replies leave at once instead of waiting on Nagle.
BROKER_PORT=$(free_port)
cat >"$TMP/mosquitto.conf" <<EOF
listener $BROKER_PORT 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 100
max_queued_messages 0
max_queued_bytes 0
set_tcp_nodelay true
log_dest file $TMP/mosquitto.log
log_type error
log_type warning
EOF
if [[ $(id -u) -eq 0 ]]; then echo "user root" >>"$TMP/mosquitto.conf"; fi
log "broker: $("$MOSQUITTO" -h 2>&1 | head -n1 | sed 's/^mosquitto //'), 127.0.0.1:$BROKER_PORT"
spawn "$BROKER_CPUS" "$MOSQUITTO" -c "$TMP/mosquitto.conf" >"$TMP/mosquitto.out" 2>&1 &
BROKER_PID=$!
PIDS+=("$BROKER_PID")
for _ in $(seq 100); do
  if mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -t bench/ping -m up 2>/dev/null; then break; fi
  kill -0 "$BROKER_PID" 2>/dev/null || die "mosquitto exited: $(cat "$TMP/mosquitto.out")"
  sleep 0.1
done
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -t bench/ping -m up ||
  die "mosquitto does not answer on 127.0.0.1:$BROKER_PORT"

load() { pinned "$LOAD_CPUS" "$MQTT_LOAD" --port "$BROKER_PORT" --qos "$QOS" "$@"; }

declare -A EPS LOST LAT_P50 LAT_P99 LAT_P999 LAT_RATE

# measure NAME IN OUT OUTPUTS(all|actions) LATENCY(yes|no)
measure() {
  local name=$1 in=$2 out=$3 outputs=$4 latency=$5 json rate
  log "$name: throughput, $COUNT readings, window $WINDOW, QoS $QOS"
  json=$(load --in "$in" --out "$out" --outputs "$outputs" --mode throughput --count "$COUNT" \
    --window "$WINDOW" --action-every "$ACTION_EVERY") || die "$name: throughput run failed"
  printf '%s\n' "$json" >>"$TMP/results.jsonl"
  EPS[$name]=$(field "$json" events_per_s)
  LOST[$name]=$(field "$json" lost)
  [[ "$latency" == yes ]] || return 0
  for rate in $RATES; do
    log "$name: latency at $rate readings/s for ${DURATION}s"
    json=$(load --in "$in" --out "$out" --outputs "$outputs" --mode latency --rate "$rate" \
      --duration "$DURATION" --action-every "$ACTION_EVERY") || die "$name: latency run failed"
    printf '%s\n' "$json" >>"$TMP/results.jsonl"
    LAT_P50[$name,$rate]=$(field "$json" p50_ms)
    LAT_P99[$name,$rate]=$(field "$json" p99_ms)
    LAT_P999[$name,$rate]=$(field "$json" p999_ms)
    LAT_RATE[$name,$rate]=$(field "$json" recv_rate)
    LOST[$name]=$((${LOST[$name]} + $(field "$json" lost)))
  done
}

# probe IN OUT WHAT: waits until a reading published on IN comes out on OUT.
probe() {
  load --in "$1" --out "$2" --mode probe --timeout 20 >/dev/null ||
    die "$3 did not pass a probe reading from $1 to $2 (logs in $TMP)"
}

log "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); pinning:" \
  "broker '${BROKER_CPUS:-none}', load tool '${LOAD_CPUS:-none}', relay" \
  "'${RELAY_CPUS:-none}', wispd '${NODE_CPUS:-none}'; nice '${NICE:-unchanged}'"
LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)

# --- (a) raw one hop -----------------------------------------------------------------------------

if wants raw; then
  measure raw bench/raw bench/raw all yes
fi

# --- (b) the stock relay -------------------------------------------------------------------------

if wants relay; then
  nodelay=()
  [[ "$RELAY_NODELAY" == 1 ]] && nodelay=(--nodelay)
  # Two processes joined by a FIFO rather than a shell pipe, so that both have a PID to stop.
  mkfifo "$TMP/relay.fifo"
  spawn "$RELAY_CPUS" mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q "$QOS" "${nodelay[@]}" \
    -i "bench-relay-pub-$$" -t bench/relay/out -l <"$TMP/relay.fifo" >"$TMP/relay-pub.log" 2>&1 &
  PIDS+=($!)
  spawn "$RELAY_CPUS" mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -q "$QOS" "${nodelay[@]}" \
    -i "bench-relay-sub-$$" -t bench/relay/in >"$TMP/relay.fifo" 2>"$TMP/relay-sub.log" &
  relay_sub_pid=$!
  PIDS+=("$relay_sub_pid")
  log "relay: mosquitto_sub -q $QOS ${nodelay[*]} -t bench/relay/in |" \
    "mosquitto_pub -q $QOS ${nodelay[*]} -t bench/relay/out -l"
  probe bench/relay/in bench/relay/out "the stock relay"
  measure relay bench/relay/in bench/relay/out all yes
  stop_pid "$relay_sub_pid" # the publisher ends with its input
fi

# --- (c) and (d): wispd --------------------------------------------------------------------------

# wisp_scenario NAME IN OUT OUTPUTS LATENCY
wisp_scenario() {
  local name=$1 data="$TMP/wisp-$1" pid
  mkdir -p "$data"
  # Its own client id per scenario: the broker keeps a node's persistent session, and another
  # scenario's subscriptions must not follow this one.
  cat >"$TMP/wisp-$name.yaml" <<EOF
log_level: warn
mqtt:
  client_id: wisp-bench-$name-$$
EOF
  if [[ -n "${OUTBOX:-}" ]]; then
    echo "  outbox: $OUTBOX" >>"$TMP/wisp-$name.yaml"
  fi
  log "$name: $WISPD --shards $SHARDS --broker mqtt://127.0.0.1:$BROKER_PORT --deploy functions/$name"
  spawn "$NODE_CPUS" "$WISPD" --listen 127.0.0.1:0 --data "$data" --config "$TMP/wisp-$name.yaml" \
    --shards "$SHARDS" --broker "mqtt://127.0.0.1:$BROKER_PORT" --deploy "$HERE/functions/$name" \
    >"$TMP/wispd-$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  probe "$2" "$3" "wispd ($name)"
  measure "$name" "$2" "$3" "$4" "$5"
  stop_pid "$pid"
  if grep -qiE 'error|warn' "$TMP/wispd-$name.log"; then
    log "$name: wispd logged:"
    sed 's/^/    /' "$TMP/wispd-$name.log" | tail -n 20 >&2
  fi
}

wants alert && wisp_scenario alert bench/alert/in bench/alert/out actions no
wants echo && wisp_scenario echo bench/echo/in bench/echo/out all yes

# --- report --------------------------------------------------------------------------------------

num() { # num ARRAY KEY -> the figure or null
  local -n arr=$1
  echo "${arr[$2]:-null}"
}
ratio() {
  local a=${EPS[$1]:-} b=${EPS[$2]:-}
  if [[ -n "$a" && -n "$b" && "$b" != 0 && "$b" != null ]]; then
    awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }'
  else
    echo null
  fi
}
# goal TEXT OK?: prints met / missed / not measured.
verdict() {
  local ok=$1
  case "$ok" in
    1) echo met ;;
    0) echo MISSED ;;
    *) echo "not measured" ;;
  esac
}
at_least() { # at_least X Y: 1 when X >= Y, 0 when not, null if either is missing
  [[ "$1" == null || "$2" == null ]] && echo null && return
  awk -v x="$1" -v y="$2" 'BEGIN { print (x >= y) ? 1 : 0 }'
}

LOAD_AFTER=$(cut -d' ' -f1 /proc/loadavg)
echo
printf '%-7s %12s %6s' SCENARIO EVENTS/S LOST
for rate in $RATES; do printf ' %26s' "@${rate}/s p50/p99/p99.9 ms"; done
echo
for name in raw relay alert echo; do
  wants "$name" || continue
  printf '%-7s %12s %6s' "$name" "$(num EPS "$name")" "$(num LOST "$name")"
  for rate in $RATES; do
    if [[ -n "${LAT_P50[$name,$rate]:-}" ]]; then
      printf ' %26s' "${LAT_P50[$name,$rate]}/${LAT_P99[$name,$rate]}/${LAT_P999[$name,$rate]}"
    else
      printf ' %26s' -
    fi
  done
  echo
done
echo
c_a=$(ratio alert raw)
d_a=$(ratio echo raw)
d_b=$(ratio echo relay)
p99_gap=null
last_rate=${RATES##* }
if [[ -n "${LAT_P99[echo,$last_rate]:-}" && -n "${LAT_P99[raw,$last_rate]:-}" ]]; then
  p99_gap=$(awk -v d="${LAT_P99[echo,$last_rate]}" -v a="${LAT_P99[raw,$last_rate]}" \
    'BEGIN { printf "%.3f", d - a }')
fi
echo "c/a (alert/raw): $c_a   goal >= 0.8: $(verdict "$(at_least "$c_a" 0.8)")"
echo "d/a (echo/raw):  $d_a   goal >= 0.45: $(verdict "$(at_least "$d_a" 0.45)")"
echo "d/b (echo/relay): $d_b   goal >= 1.5: $(verdict "$(at_least "$d_b" 1.5)")"
gap_ok=null
[[ "$p99_gap" != null ]] && gap_ok=$(at_least 1 "$p99_gap")
echo "p99 echo - raw at ${last_rate}/s: $p99_gap ms   goal <= 1 ms: $(verdict "$gap_ok")"
echo "(QoS $QOS, $COUNT readings per throughput run, window $WINDOW, ${DURATION}s per latency" \
  "run, 1 in $ACTION_EVERY readings above the limit, wispd shards $SHARDS, $(nproc) cores" \
  "shared by broker, load tool, relay/wispd, nice ${NICE:-unchanged}; load average $LOAD_BEFORE" \
  "before, $LOAD_AFTER after)"

latency_json() {
  local first=1 name rate out="{"
  for name in raw relay echo; do
    for rate in $RATES; do
      [[ -n "${LAT_P50[$name,$rate]:-}" ]] || continue
      ((first)) || out+=","
      first=0
      out+="\"${name}_${rate}\":{\"p50_ms\":${LAT_P50[$name,$rate]},\"p99_ms\":${LAT_P99[$name,$rate]},"
      out+="\"p999_ms\":${LAT_P999[$name,$rate]},\"recv_rate\":${LAT_RATE[$name,$rate]}}"
    done
  done
  echo "$out}"
}
total_lost=0
for name in "${!LOST[@]}"; do total_lost=$((total_lost + ${LOST[$name]})); done

printf 'RESULT {"raw_eps":%s,"relay_eps":%s,"alert_eps":%s,"echo_eps":%s,' \
  "$(num EPS raw)" "$(num EPS relay)" "$(num EPS alert)" "$(num EPS echo)"
printf '"ratio_alert_raw":%s,"ratio_echo_raw":%s,"ratio_echo_relay":%s,"p99_gap_ms":%s,' \
  "$c_a" "$d_a" "$d_b" "$p99_gap"
printf '"latency":%s,"lost":%s,"qos":%s,"count":%s,"window":%s,"duration_s":%s,' \
  "$(latency_json)" "$total_lost" "$QOS" "$COUNT" "$WINDOW" "$DURATION"
printf '"action_every":%s,"shards":%s,"cores":%s,"smoke":%s}\n' \
  "$ACTION_EVERY" "$SHARDS" "$(nproc)" "$([[ "$SMOKE" == 1 ]] && echo true || echo false)"

if [[ "$QOS" == 1 && "$total_lost" != 0 ]]; then
  die "$total_lost QoS 1 message(s) lost: the figures above do not count"
fi
