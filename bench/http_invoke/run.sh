#!/usr/bin/env bash
# HTTP invoke throughput: wisp (examples/hello through POST /v1/functions/hello/invoke) against
# nginx (`return 200`) and a single-process Node.js server giving the same reply, under the
# same wrk load, one server at a time on this machine. Run by hand, not in CI:
#
#   cmake --preset release && cmake --build --preset release
#   bench/http_invoke/run.sh
#
# Environment: CONNECTIONS (32), DURATION (10s), THREADS (wrk -t, 1), SHARDS (nproc; wisp shards
# and nginx workers), WARMUP (2s, discarded run before each measurement), TARGETS ("wisp nginx
# node"), BODY (a small JSON reading), CONTENT_TYPE (application/json), WISPD and WISP (default
# build/release/wispd and build/release/wisp).
#
# wisp parses the JSON body before the handler runs; nginx and Node.js do not, so the
# comparison is, if anything, unfair to wisp. wrk shares the cores with the server under test:
# compare ratios from the same run, not absolute figures across machines.
#
# Output: a table, the ratios, and a last line `RESULT {...json...}` for scripts.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/bench/http_invoke"

CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-1}
SHARDS=${SHARDS:-$(nproc)}
WARMUP=${WARMUP:-2s}
TARGETS=${TARGETS:-"wisp nginx node"}
BODY=${BODY:-'{"pump":"p1","vibration":9.2}'}
CONTENT_TYPE=${CONTENT_TYPE:-application/json}
WISPD=${WISPD:-$ROOT/build/release/wispd}
WISP=${WISP:-$ROOT/build/release/wisp}
EXPECTED_BODY=$'Hello from wisp\n'

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
  printf '[bench] error: %s\n' "$*" >&2
  exit 1
}

wants() { [[ " $TARGETS " == *" $1 "* ]]; }

# --- tools --------------------------------------------------------------------------------------

need_packages=()
command -v wrk >/dev/null || need_packages+=(wrk)
command -v curl >/dev/null || need_packages+=(curl)
if wants nginx && ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
  need_packages+=(nginx-light)
fi
if wants node && ! command -v node >/dev/null; then need_packages+=(nodejs); fi
if ((${#need_packages[@]} > 0)); then
  if [[ $(id -u) -ne 0 ]]; then
    die "missing ${need_packages[*]}: install them (sudo apt-get install ${need_packages[*]}) or re-run as root"
  fi
  log "installing ${need_packages[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_packages[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if wants wisp; then
  [[ -x "$WISPD" ]] || die "$WISPD not found: build it first with
    cmake --preset release && cmake --build --preset release
  (or set WISPD=/path/to/wispd, or TARGETS=\"nginx node\" to skip wisp)"
  [[ -x "$WISP" ]] || die "$WISP not found: build it with the release preset (or set WISP=...)"
fi

# --- plumbing ------------------------------------------------------------------------------------

TMP=$(mktemp -d -t wisp-bench.XXXXXX)
server_pid=""

stop_server() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}
cleanup() {
  stop_server
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
  else
    node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
  fi
}

# Waits until `curl URL` answers (any status), or fails after 10 s.
wait_http() {
  local url=$1 what=$2
  for _ in $(seq 100); do
    if curl -s -o /dev/null "$url"; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || die "$what exited during start-up (see its log in $TMP)"
    sleep 0.1
  done
  die "$what did not answer on $url within 10s (see its log in $TMP)"
}

# Checks that one request through the same route gives the expected reply.
check_reply() {
  local url=$1 what=$2 got
  got=$(curl -s -X POST -H "Content-Type: $CONTENT_TYPE" --data-binary "$BODY" "$url")
  [[ "$got" == "${EXPECTED_BODY%$'\n'}" ]] || die "$what answered '$got' instead of the hello reply"
}

cat >"$TMP/post.lua" <<EOF
wrk.method = "POST"
wrk.body = [[$BODY]]
wrk.headers["Content-Type"] = "$CONTENT_TYPE"
EOF

declare -A RPS P50 P99

# wrk's latency figures come as 412.00us, 1.20ms or 1.05s; this gives milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
    printf "%.3f", n }'
}

measure() {
  local name=$1 url=$2 out
  log "$name: warm-up $WARMUP"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$TMP/post.lua" "$url" >/dev/null
  log "$name: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s post.lua $url"
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$TMP/post.lua" "$url")
  printf '%s\n' "$out" >"$TMP/wrk-$name.txt"
  printf '%s\n' "$out" | sed 's/^/    /' >&2
  if grep -q 'Non-2xx or 3xx responses' <<<"$out"; then
    die "$name gave error replies under load ($(grep 'Non-2xx' <<<"$out" | xargs)); its figure would be meaningless"
  fi
  RPS[$name]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
  P50[$name]=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  P99[$name]=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
}

# --- wisp ----------------------------------------------------------------------------------------

if wants wisp; then
  port=$(free_port)
  mkdir -p "$TMP/wisp"
  log "wisp: $WISPD --listen 127.0.0.1:$port --shards $SHARDS"
  "$WISPD" --listen "127.0.0.1:$port" --data "$TMP/wisp" --shards "$SHARDS" \
    >"$TMP/wispd.log" 2>&1 &
  server_pid=$!
  wait_http "http://127.0.0.1:$port/healthz" wispd
  "$WISP" --server "http://127.0.0.1:$port" --token "$(cat "$TMP/wisp/token")" \
    deploy "$ROOT/examples/hello" >&2
  url="http://127.0.0.1:$port/v1/functions/hello/invoke"
  check_reply "$url" wisp
  measure wisp "$url"
  stop_server
fi

# --- nginx ---------------------------------------------------------------------------------------

if wants nginx; then
  port=$(free_port)
  prefix="$TMP/nginx"
  mkdir -p "$prefix"
  sed -e "s|@PREFIX@|$prefix|g" -e "s|@WORKERS@|$SHARDS|g" -e "s|@PORT@|$port|g" \
    "$HERE/nginx.conf.template" >"$prefix/nginx.conf"
  log "nginx: $SHARDS workers on 127.0.0.1:$port"
  "$NGINX" -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" >"$TMP/nginx.log" 2>&1 &
  server_pid=$!
  wait_http "http://127.0.0.1:$port/" nginx
  check_reply "http://127.0.0.1:$port/" nginx
  measure nginx "http://127.0.0.1:$port/"
  stop_server
fi

# --- node ----------------------------------------------------------------------------------------

if wants node; then
  port=$(free_port)
  log "node: $(node --version), one process on 127.0.0.1:$port"
  node "$HERE/node_server.js" "$port" >"$TMP/node.log" 2>&1 &
  server_pid=$!
  wait_http "http://127.0.0.1:$port/" node
  check_reply "http://127.0.0.1:$port/" node
  measure node "http://127.0.0.1:$port/"
  stop_server
fi

# --- report --------------------------------------------------------------------------------------

value() { # value ARRAY NAME -> the figure or "null"
  local -n arr=$1
  echo "${arr[$2]:-null}"
}
ratio() {
  local a=${RPS[$1]:-} b=${RPS[$2]:-}
  if [[ -n "$a" && -n "$b" && "$b" != 0 ]]; then
    awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }'
  else
    echo null
  fi
}

echo
printf '%-8s %12s %10s %10s\n' SERVER REQ/S P50_MS P99_MS
for name in wisp nginx node; do
  wants "$name" || continue
  printf '%-8s %12s %10s %10s\n' "$name" "$(value RPS "$name")" "$(value P50 "$name")" \
    "$(value P99 "$name")"
done
echo
echo "wisp/nginx: $(ratio wisp nginx)   wisp/node: $(ratio wisp node)   (requests/s;" \
  "connections $CONNECTIONS, duration $DURATION, wrk threads $THREADS, shards $SHARDS," \
  "$(nproc) cores)"
printf 'RESULT {"wisp_rps":%s,"nginx_rps":%s,"node_rps":%s,' \
  "$(value RPS wisp)" "$(value RPS nginx)" "$(value RPS node)"
printf '"wisp_p50_ms":%s,"wisp_p99_ms":%s,"nginx_p50_ms":%s,"nginx_p99_ms":%s,' \
  "$(value P50 wisp)" "$(value P99 wisp)" "$(value P50 nginx)" "$(value P99 nginx)"
printf '"node_p50_ms":%s,"node_p99_ms":%s,"ratio_wisp_nginx":%s,"ratio_wisp_node":%s,' \
  "$(value P50 node)" "$(value P99 node)" "$(ratio wisp nginx)" "$(ratio wisp node)"
printf '"connections":%s,"duration":"%s","shards":%s}\n' "$CONNECTIONS" "$DURATION" "$SHARDS"
