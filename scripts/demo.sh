#!/bin/sh
# make demo: the whole stack on one machine. Starts lambda-devkafka (unless brokers= is set in
# the environment as LAMBDA_BROKERS or in $LAMBDA_CONFIG), lambda-speed, lambda-serve and
# lambda-gen at a steady rate with some late, duplicated and invalid orders, and runs
# lambda-batch every 30 s as cron would. Ctrl-C stops every process cleanly; the data directory
# (./data, or LAMBDA_DATA_DIR) stays, and the next `make demo` continues from it.
set -u
cd "$(dirname "$0")/.."
BIN=$PWD/bin
DATA=${LAMBDA_DATA_DIR:-$PWD/data}
PORT=${DEMO_PORT:-8080}
RATE=${DEMO_RATE:-40}
BATCH_EVERY=${DEMO_BATCH_SECONDS:-30}
LOGS=$DATA/logs
mkdir -p "$LOGS"
export LAMBDA_DATA_DIR=$DATA

pids=""
say() { printf '%s demo: %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# Waits (bounded) until file $1 contains $2.
wait_for() {
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1))
        [ $i -gt 300 ] && { say "gave up waiting for '$2' in $1"; return 1; }
        sleep 0.1
    done
}

stop() {
    trap - INT TERM
    say "stopping"
    [ -n "${gen_pid:-}" ] && kill -TERM "$gen_pid" 2>/dev/null && wait "$gen_pid"
    [ -n "${batch_loop:-}" ] && kill -TERM "$batch_loop" 2>/dev/null && wait "$batch_loop"
    [ -n "${speed_pid:-}" ] && kill -TERM "$speed_pid" 2>/dev/null && wait "$speed_pid" &&
        say "speed layer checkpointed and stopped"
    [ -n "${serve_pid:-}" ] && kill -TERM "$serve_pid" 2>/dev/null && wait "$serve_pid"
    [ -n "${kafka_pid:-}" ] && kill -TERM "$kafka_pid" 2>/dev/null && wait "$kafka_pid" &&
        say "embedded Kafka saved to $DATA/devkafka.dump"
    say "stopped; data in $DATA (run make demo again to continue)"
    exit 0
}
trap stop INT TERM

brokers=${LAMBDA_BROKERS:-}
if [ -z "$brokers" ] && [ -n "${LAMBDA_CONFIG:-}" ]; then
    brokers=$(sed -n 's/^[[:space:]]*brokers[[:space:]]*=[[:space:]]*//p' "$LAMBDA_CONFIG" | tail -1)
fi
if [ -z "$brokers" ]; then
    rm -f "$DATA/bootstrap"
    "$BIN/lambda-devkafka" --partitions 4 --persist "$DATA/devkafka.dump" \
        --bootstrap-file "$DATA/bootstrap" >/dev/null 2>"$LOGS/devkafka.log" &
    kafka_pid=$!
    wait_for "$LOGS/devkafka.log" "msg=ready" || stop
    brokers=$(cat "$DATA/bootstrap")
    say "embedded Kafka at $brokers (log: $LOGS/devkafka.log)"
else
    say "using the Kafka cluster at $brokers"
fi
export LAMBDA_BROKERS=$brokers

"$BIN/lambda-speed" 2>>"$LOGS/speed.log" &
speed_pid=$!
"$BIN/lambda-serve" --port "$PORT" 2>>"$LOGS/serve.log" &
serve_pid=$!
wait_for "$LOGS/serve.log" "listening" || stop
"$BIN/lambda-gen" --count 0 --rate "$RATE" --merchants 50 --late-pct 1 --dup-pct 2 \
    --invalid-pct 1 --seed "$(date +%s)" 2>>"$LOGS/gen.log" &
gen_pid=$!

(
    trap 'exit 0' TERM
    while :; do
        sleep "$BATCH_EVERY" &
        wait $!
        "$BIN/lambda-batch" run >>"$LOGS/batch.log" 2>&1
    done
) &
batch_loop=$!

cat <<TXT

  lambda-stack is running (logs in $LOGS).

  Dashboard:  http://127.0.0.1:$PORT/

  curl http://127.0.0.1:$PORT/query/m-1
  curl 'http://127.0.0.1:$PORT/top?window=5m&n=5'
  curl 'http://127.0.0.1:$PORT/query/m-2/series?step=1m&from=$(date -u -d '-15 min' +%Y-%m-%dT%H:%M:00Z)&to=$(date -u -d '+1 min' +%Y-%m-%dT%H:%M:00Z)'

  lambda-batch runs every ${BATCH_EVERY}s (as cron would). Ctrl-C stops everything.

TXT
while :; do
    sleep 1 &
    wait $!
    if ! kill -0 "$speed_pid" 2>/dev/null || ! kill -0 "$serve_pid" 2>/dev/null; then
        say "a layer exited; see $LOGS"
        stop
    fi
done
