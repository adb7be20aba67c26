#!/usr/bin/env bash
# Builds wisp (release) and runs a node in the foreground with the examples deployed, connected
# to a local mosquitto on loopback that this script starts (and stops when the node stops).
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
trap 'kill "$broker_pid" 2>/dev/null || true; rm -rf "$broker_dir"' EXIT
broker="mqtt://127.0.0.1:$mqtt_port"

cat <<BANNER

wisp node starting with examples/hello, examples/counter and examples/pump-alert,
MQTT broker $broker (mosquitto, loopback only).
Try, from another terminal (adjust the address if you passed --listen):

  curl -s -X POST http://127.0.0.1:8080/v1/functions/hello/invoke
  curl -s -X POST http://127.0.0.1:8080/v1/functions/counter/invoke
  curl -s -X POST http://127.0.0.1:8080/v1/functions/pump-alert/invoke \\
       -H 'Content-Type: application/json' -d '{"pump":"p1","vibration":9.2}'
  build/release/wisp ls
  build/release/wisp logs pump-alert

  # sensor readings over MQTT: pump-alert runs on plant/+/pump/#, alerts go to plant/alerts/pump
  mosquitto_sub -p $mqtt_port -t 'plant/alerts/#' -v &
  mosquitto_pub -p $mqtt_port -t plant/line1/pump/p7 -m '{"pump":"p7","vibration":9.4}'

  curl -s http://127.0.0.1:8080/metrics | grep wisp_function_invocations_total

Ctrl-C drains in-flight calls and stops the node and the broker.

BANNER
# The node runs as a child so that Ctrl-C or a TERM to this script drains it, then stops the
# broker (a background child of a script does not get the terminal's SIGINT itself).
build/release/wisp up --broker "$broker" --deploy examples/hello --deploy examples/counter \
  --deploy examples/pump-alert "$@" &
node_pid=$!
trap 'kill -TERM "$node_pid" 2>/dev/null || true' INT TERM
wait "$node_pid" || true  # returns early when a trapped signal arrives
status=0
wait "$node_pid" || status=$?  # the node's own exit status, once it has drained
exit "$status"
