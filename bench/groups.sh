#!/bin/sh
# bench/groups.sh - GET /groups over a 100,000-merchant dimension, on a data directory written by
# the real speed layer: lambda-gen streams BENCH_ORDERS orders over BENCH_MERCHANTS merchants
# (Zipf-skewed) into lambda-devkafka, lambda-speed takes them in, and lambda-serve joins them
# with a CSV naming every merchant (three categories). wrk then asks /groups?group=category
# and, beside it, /top over the same 5-minute window; the figures are wrk's requests/s and
# latency percentiles, and how many merchants the window holds.
# Needs bin/ (make all). Env: BENCH_DURATION (10s), BENCH_MERCHANTS (100000), BENCH_ORDERS (400000).
set -eu
cd "$(dirname "$0")/.."
DUR=${BENCH_DURATION:-10s}
MERCHANTS=${BENCH_MERCHANTS:-100000}
ORDERS=${BENCH_ORDERS:-400000}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lambda-bench-groups-XXXXXX")
KAFKA_PID= SPEED_PID= SERVE_PID=

cleanup() {
    for p in $SERVE_PID $SPEED_PID $KAFKA_PID; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

command -v wrk >/dev/null || { echo "bench/groups: wrk is not installed" >&2; exit 1; }
[ -x bin/lambda-serve ] || { echo "bench/groups: run 'make' first" >&2; exit 1; }

# Waits (bounded, 120 s) until file $1 holds a line matching $2.
wait_for() {
    i=0
    until grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1))
        [ $i -gt 1200 ] && { echo "bench/groups: no '$2' in $1" >&2; exit 1; }
        sleep 0.1
    done
}

bin/lambda-devkafka --partitions 4 --bootstrap-file "$WORK/bootstrap" 2>"$WORK/kafka.log" &
KAFKA_PID=$!
wait_for "$WORK/kafka.log" "msg=ready"
BROKERS=$(cat "$WORK/bootstrap")
bin/lambda-speed --brokers "$BROKERS" --data-dir "$WORK/data" 2>"$WORK/speed.log" &
SPEED_PID=$!
# Paced so the speed layer keeps up with the embedded Kafka's retention.
bin/lambda-gen --brokers "$BROKERS" --count "$ORDERS" --rate 50000 --merchants "$MERCHANTS" \
    --time-step 1ms 2>"$WORK/gen.log"
valid=$(sed -n 's/.*msg=done .* valid=\([0-9]*\).*/\1/p' "$WORK/gen.log")
i=0
until [ "$(sqlite3 "$WORK/data/speed.db" "SELECT value FROM counters WHERE name='applied'" 2>/dev/null)" = "$valid" ]; do
    i=$((i + 1))
    [ $i -gt 600 ] && { echo "bench/groups: the speed layer did not catch up to $valid" >&2; exit 1; }
    sleep 0.1
done
awk -v n="$MERCHANTS" 'BEGIN {
    print "merchant_id,name,category,country"
    split("books toys food", cat, " ")
    for (i = 1; i <= n; i++) printf "m-%d,\"Shop %d, Ltd.\",%s,%s\n", i, i, cat[i % 3 + 1], i % 2 ? "FR" : "DE"
}' >"$WORK/merchants.csv"
bin/lambda-serve --port 0 --data-dir "$WORK/data" --dimension-file "$WORK/merchants.csv" \
    2>"$WORK/serve.log" &
SERVE_PID=$!
wait_for "$WORK/serve.log" "listening"
PORT=$(sed -n 's/.*listening port=\([0-9]*\).*/\1/p' "$WORK/serve.log" | head -1)
BASE=http://127.0.0.1:$PORT
groups=$(curl -s "$BASE/groups?group=category&window=5m")
in_window=$(echo "$groups" | grep -o '"merchants":[0-9]*' | awk -F: '{ n += $2 } END { print n }')
echo "groups: dimension of $MERCHANTS merchants; $ORDERS orders; merchants in the window: $in_window"
for path in "/groups?group=category&window=5m" "/top?window=5m&n=10"; do
    wrk -t1 -c2 -d"$DUR" --latency "$BASE$path" >"$WORK/wrk.out"
    rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$WORK/wrk.out")
    p50=$(sed -n 's/^ *50% *\([0-9.a-z]*\).*/\1/p' "$WORK/wrk.out")
    p99=$(sed -n 's/^ *99% *\([0-9.a-z]*\).*/\1/p' "$WORK/wrk.out")
    echo "groups: $path requests/s=$rps p50=$p50 p99=$p99"
done
