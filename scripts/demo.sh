#!/bin/sh
# make demo: the whole stack on one machine. Starts lambda-devkafka (unless brokers= is set in
# the environment as LAMBDA_BROKERS or in $LAMBDA_CONFIG), lambda-speed, lambda-serve and
# lambda-gen at a steady rate with some late, duplicated and invalid orders, and runs
# lambda-batch every 30 s as cron would. Ctrl-C stops every process cleanly; the data directory
# (./data, or LAMBDA_DATA_DIR) stays, and the next `make demo` continues from it.
# DEMO_SHARDS=2 (or 4) runs that many shards of the 4 partitions, each with its own data
# directory (data/shard<i>), lambda-speed, lambda-serve and batch runs, behind one lambda-serve
# router on DEMO_PORT (DESIGN.md section 7).
set -u
cd "$(dirname "$0")/.."
BIN=${DEMO_BIN:-$PWD/bin}
DATA=${LAMBDA_DATA_DIR:-$PWD/data}
PORT=${DEMO_PORT:-8080}
RATE=${DEMO_RATE:-40}
BATCH_EVERY=${DEMO_BATCH_SECONDS:-30}
SHARDS=${DEMO_SHARDS:-1}
case $SHARDS in 1 | 2 | 4) ;; *) echo "demo: DEMO_SHARDS must be 1, 2 or 4" >&2; exit 2 ;; esac
LOGS=$DATA/logs
mkdir -p "$LOGS"
export LAMBDA_DATA_DIR=$DATA

pids=""
say() { printf '%s demo: %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# Waits (bounded) until file $1 contains $2 past its first $3 lines (logs are appended to).
wait_for() {
    i=0
    while ! tail -n "+$((${3:-0} + 1))" "$1" 2>/dev/null | grep -q "$2"; do
        i=$((i + 1))
        [ $i -gt 300 ] && { say "gave up waiting for '$2' in $1"; return 1; }
        sleep 0.1
    done
}

stop() {
    trap - INT TERM
    stopping=1
    say "stopping"
    # Each child is stopped, then reaped, in the order that loses nothing: no new orders, no
    # batch run in flight, the speed layer's last checkpoint, then serving and Kafka.
    for name in gen_pid batch_loop speed_pid router_pid serve_pid kafka_pid; do
        eval "pid=\${$name:-}"
        [ -n "$pid" ] || continue
        # shellcheck disable=SC2086 # a list of pids with shards
        kill -TERM $pid 2>/dev/null
        # shellcheck disable=SC2086
        wait $pid
        case $name in
        speed_pid) say "speed layer checkpointed and stopped" ;;
        kafka_pid) say "embedded Kafka saved to $DATA/devkafka.dump" ;;
        esac
    done
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

# Starts lambda-serve with its log in $1 and the rest as its arguments; sets started_port.
start_serve() {
    log=$1
    shift
    lines=$(cat "$log" 2>/dev/null | wc -l)
    "$BIN/lambda-serve" "$@" 2>>"$log" &
    started_pid=$!
    wait_for "$log" "listening" "$lines" || stop
    # --port 0 lets the system pick one: show the port it picked.
    started_port=$(tail -n "+$((lines + 1))" "$log" | sed -n 's/.*listening.*port=\([0-9]*\).*/\1/p' | head -1)
}

if [ "$SHARDS" -eq 1 ]; then
    "$BIN/lambda-speed" 2>>"$LOGS/speed.log" &
    speed_pid=$!
    start_serve "$LOGS/serve.log" --port "$PORT"
    serve_pid=$started_pid
    PORT=$started_port
    shard_dirs=$DATA
else
    # One shard per 4/SHARDS partitions, each its own data directory, on ports the system picks.
    per=$((4 / SHARDS))
    speed_pid="" serve_pid="" shard_dirs="" urls=""
    k=0 # not i: wait_for counts with i
    while [ $k -lt "$SHARDS" ]; do
        set_k="$((k * per))-$((k * per + per - 1))"
        [ "$per" -eq 1 ] && set_k=$k
        dir=$DATA/shard$k
        mkdir -p "$dir"
        LAMBDA_DATA_DIR=$dir LAMBDA_SHARD_PARTITIONS=$set_k "$BIN/lambda-speed" \
            2>>"$LOGS/speed$k.log" &
        speed_pid="$speed_pid $!"
        start_serve "$LOGS/serve$k.log" --port 0 --data-dir "$dir" --shard-partitions "$set_k"
        serve_pid="$serve_pid $started_pid"
        urls="$urls${urls:+,}http://127.0.0.1:$started_port"
        shard_dirs="$shard_dirs $dir:$set_k"
        say "shard $k: partitions $set_k, data $dir, lambda-serve on port $started_port"
        k=$((k + 1))
    done
    start_serve "$LOGS/router.log" --port "$PORT" --shards "$urls" --partitioner murmur2_random
    router_pid=$started_pid
    PORT=$started_port
    say "router on port $PORT in front of $urls"
fi
"$BIN/lambda-gen" --count 0 --rate "$RATE" --merchants 50 --late-pct 1 --dup-pct 2 \
    --invalid-pct 1 --seed "$(date +%s)" 2>>"$LOGS/gen.log" &
gen_pid=$!

(
    # The loop's own child (a sleep or a batch run) is stopped with it: nothing outlives the
    # demo. A batch run killed mid-way resumes exactly at the next one.
    child=""
    trap 'trap - TERM; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child"; exit 0' TERM
    trap '' INT
    while :; do
        sleep "$BATCH_EVERY" &
        child=$!
        wait "$child"
        for sd in $shard_dirs; do
            if [ "$SHARDS" -eq 1 ]; then
                "$BIN/lambda-batch" run >>"$LOGS/batch.log" 2>&1 &
            else
                LAMBDA_DATA_DIR=${sd%%:*} LAMBDA_SHARD_PARTITIONS=${sd#*:} \
                    "$BIN/lambda-batch" run >>"$LOGS/batch.log" 2>&1 &
            fi
            child=$!
            wait "$child"
        done
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
    [ -n "${stopping:-}" ] && continue
    for pid in $speed_pid $serve_pid ${router_pid:-}; do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "a layer exited; see $LOGS"
            stop
        fi
    done
done
