#!/usr/bin/env bash
# Builds wisp (release) and runs a node in the foreground with the examples deployed, connected
# to a local mosquitto on loopback that this script starts, with `wisp sim` publishing simulated
# pump, feeder and HVAC readings (faults included) and the examples' alerts shown as they come.
# The broker, the simulator and the alert subscriber stop when the node stops.
# Extra arguments go to `wisp up`, e.g. ./scripts/run.sh --listen 0.0.0.0:8080 --shards 2
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake --preset release >/dev/null
# Only the binaries: the tests and benchmarks are scripts/test.sh's business.
cmake --build --preset release --target wisp wispd

# A private broker on the first free loopback port from 1883 on.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
mqtt_port=1883
while port_in_use "$mqtt_port"; do mqtt_port=$((mqtt_port + 1)); done
broker_dir=$(mktemp -d -t wisp-broker.XXXXXX)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$mqtt_port" \
  >"$broker_dir/mosquitto.conf"
/usr/sbin/mosquitto -c "$broker_dir/mosquitto.conf" >"$broker_dir/mosquitto.log" 2>&1 &
broker_pid=$!
helper_pids=()
cleanup() {
  for pid in "${helper_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  kill "$broker_pid" 2>/dev/null || true
  rm -rf "$broker_dir"
}
trap cleanup EXIT
broker="mqtt://127.0.0.1:$mqtt_port"

cat <<BANNER

wisp node starting with examples/hello, counter, pump-alert, feeder-watch and hvac-watch,
MQTT broker $broker (mosquitto, loopback only).

\`wisp sim\` publishes 3 pumps, 1 feeder and 2 HVAC units on plant/line1/... (3 readings/s) and
injects faults: pump p2's bearing wears from 20 s, feeder f1 sags at 30 s for 5 s, HVAC h1's
compressor fails at 40 s. Lines starting "sim>" are the simulator's, "alert>" are the alerts the
functions publish on plant/alerts/#: pump within a minute (then once a minute), feeder at 30 s
and again when the sag clears, hvac after about two minutes.

Try, from another terminal (adjust the address if you passed --listen):

  curl -s -X POST http://127.0.0.1:8080/v1/functions/hello/invoke
  curl -s -X POST http://127.0.0.1:8080/v1/functions/counter/invoke
  curl -s -X POST http://127.0.0.1:8080/v1/functions/pump-alert/invoke \\
       -H 'Content-Type: application/json' -d '{"pump":"p1","vibration":9.2}'
  build/release/wisp ls
  build/release/wisp logs pump-alert

  # the readings themselves, and one of your own:
  mosquitto_sub -p $mqtt_port -t 'plant/line1/#' -v
  mosquitto_pub -p $mqtt_port -t plant/line1/pump/p7 -m '{"pump":"p7","vibration":9.4}'
  build/release/wisp logs feeder-watch

  curl -s http://127.0.0.1:8080/metrics | grep wisp_function_invocations_total

Ctrl-C drains in-flight calls and stops the node, the simulator and the broker.

BANNER
# The node runs as a child so that Ctrl-C or a TERM to this script drains it, then stops the
# broker (a background child of a script does not get the terminal's SIGINT itself).
build/release/wisp up --broker "$broker" --deploy examples/hello --deploy examples/counter \
  --deploy examples/pump-alert --deploy examples/feeder-watch --deploy examples/hvac-watch "$@" &
node_pid=$!

# What the functions publish, prefixed so it stands out from the node's log. Process
# substitution keeps $! the subscriber's pid (not sed's), so cleanup can stop it.
mosquitto_sub -p "$mqtt_port" -t 'plant/alerts/#' -v > >(sed -u 's/^/alert> /') 2>&1 &
helper_pids+=($!)
# The readings; the node subscribes within a second or so of starting, long before the first
# fault, so the readings it misses meanwhile do not matter.
build/release/wisp sim --broker "$broker" --rate 0.5/s --pumps 3 --feeders 1 --hvac 2 \
  --fault pump:p2:bearing@20s --fault feeder:f1:sag@30s+5s --fault hvac:h1:compressor@40s \
  2> >(sed -u 's/^/sim> /' >&2) &
helper_pids+=($!)
trap 'kill -TERM "$node_pid" 2>/dev/null || true' INT TERM
wait "$node_pid" || true  # returns early when a trapped signal arrives
status=0
wait "$node_pid" || status=$?  # the node's own exit status, once it has drained
exit "$status"
