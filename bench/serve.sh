#!/bin/sh
# bench/serve.sh - lambda-serve beside a bare libmicrohttpd server answering a constant
# 200-byte JSON on the second call of its access handler (the ceiling), in the same run, on
# data directories written by the real layers (issue 15): lambda-gen produces ORDERS orders of
# MERCHANTS merchants over 16 partitions, then
#   backlog: lambda-speed alone caught up on all of them (no batch version);
#   batch:   lambda-batch published a version of the first ORDERS, and lambda-speed counted
#            the EXTRA produced after it (a published version plus a speed part).
# Both speed layers keep running while they are measured. For each: one merchant, a merchant
# at random per request (lambda-serve with its default threads, one per core but one, and with
# 2), ?ids= of 100 random merchants, /top?window=5m, as throughput and p99 ratios against the
# bare server at its best thread count (1 or 2). Goal: random merchants >= 0.70x the
# requests/s, p99 <= 1.50x, each server at its best thread count. Then freshness: produce -> the /events event after
# which /query counts the order, p50/p99 over FRESH orders.
# Needs make all (bin/) and wrk; compiles its helpers itself.
# Env: BENCH_DURATION (10s), BENCH_CONNECTIONS (32), BENCH_ORDERS (600000),
#      BENCH_MERCHANTS (1000), BENCH_EXTRA (60000), BENCH_FRESH (200).
set -eu
cd "$(dirname "$0")/.."
DUR=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNECTIONS:-32}
ORDERS=${BENCH_ORDERS:-600000}
MERCHANTS=${BENCH_MERCHANTS:-1000}
EXTRA=${BENCH_EXTRA:-60000}
FRESH=${BENCH_FRESH:-200}
BIN=$PWD/bin
OUT=build/bench/serve
W=$(mktemp -d "${TMPDIR:-/tmp}/lambda-bench-serve-XXXXXX")
PIDS=

cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT INT TERM

command -v wrk >/dev/null || { echo "bench/serve: wrk is not installed" >&2; exit 1; }
for b in lambda-serve lambda-speed lambda-batch lambda-gen lambda-devkafka; do
    [ -x "$BIN/$b" ] || { echo "bench/serve: run 'make' first (bin/$b)" >&2; exit 1; }
done
mkdir -p "$OUT"
cc -O2 -std=c11 -D_DEFAULT_SOURCE -Wall -Wextra -Werror -pthread -o "$OUT/bare-mhd" \
    bench/bare_mhd.c -lmicrohttpd
cc -O2 -std=c11 -D_DEFAULT_SOURCE -Wall -Wextra -Werror -o "$OUT/serve-fresh" \
    bench/serve_fresh.c -lrdkafka -lcurl
cc -O2 -o "$OUT/speed-wait" bench/speed_wait.c -lsqlite3

# Waits (bounded) for a line matching $2 in file $1 and prints the port it names.
port_of() {
    i=0
    while [ $i -lt 200 ]; do
        p=$(grep -o "$2=[0-9]*" "$1" 2>/dev/null | head -1 | cut -d= -f2)
        [ -n "$p" ] && { echo "$p"; return 0; }
        i=$((i + 1)); sleep 0.05
    done
    echo "bench/serve: no '$2' in $1" >&2; cat "$1" >&2; return 1
}

# The data: one broker, two data directories.
"$BIN/lambda-devkafka" --partitions 16 --bootstrap-file "$W/bs" >"$W/dk.out" 2>"$W/dk.err" &
PIDS="$PIDS $!"
i=0
while [ ! -s "$W/bs" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
BS=$(cat "$W/bs")
t0=$(date +%s)
"$BIN/lambda-gen" --brokers "$BS" --count "$ORDERS" --merchants "$MERCHANTS" --seed 1 \
    2>"$W/gen1.err"
"$BIN/lambda-batch" run --brokers "$BS" --data-dir "$W/batch" >"$W/batch.out" 2>"$W/batch.err"
"$BIN/lambda-gen" --brokers "$BS" --count "$EXTRA" --merchants "$MERCHANTS" --seed 2 \
    2>"$W/gen2.err"
for d in backlog batch; do
    "$BIN/lambda-speed" --brokers "$BS" --data-dir "$W/$d" 2>"$W/speed-$d.err" &
    PIDS="$PIDS $!"
done
"$OUT/speed-wait" "$W/backlog" $((ORDERS + EXTRA)) 1200
"$OUT/speed-wait" "$W/batch" $((ORDERS + EXTRA)) 1200
echo "bench/serve: data written in $(($(date +%s) - t0)) s: $ORDERS + $EXTRA orders, $MERCHANTS merchants, 16 partitions ($(cat "$W/batch.out"))"

for t in 1 2; do
    "$OUT/bare-mhd" "$t" >"$W/bare$t.out" 2>/dev/null &
    PIDS="$PIDS $!"
done
for d in backlog batch; do
    "$BIN/lambda-serve" --port 0 --data-dir "$W/$d" 2>"$W/serve-$d.log" &
    PIDS="$PIDS $!"
    "$BIN/lambda-serve" --port 0 --data-dir "$W/$d" --threads 2 2>"$W/serve-$d-t2.log" &
    PIDS="$PIDS $!"
done
BARE1=$(port_of "$W/bare1.out" port)
BARE2=$(port_of "$W/bare2.out" port)
PORT_backlog=$(port_of "$W/serve-backlog.log" "listening port")
PORT_batch=$(port_of "$W/serve-batch.log" "listening port")
PORT2_backlog=$(port_of "$W/serve-backlog-t2.log" "listening port")
PORT2_batch=$(port_of "$W/serve-batch-t2.log" "listening port")

cat >"$W/random.lua" <<LUA
math.randomseed(42)
request = function()
    return wrk.format("GET", string.format("/query/m-%d", math.random(1, $MERCHANTS)))
end
LUA
cat >"$W/ids.lua" <<LUA
math.randomseed(7)
request = function()
    local ids = {}
    for i = 1, 100 do ids[i] = string.format("m-%d", math.random(1, $MERCHANTS)) end
    return wrk.format("GET", "/query?ids=" .. table.concat(ids, ","))
end
LUA

# Runs wrk on URL [extra wrk args]; prints "req_per_s p99_ms".
measure() {
    url=$1; shift
    wrk -t1 -c"$CONNS" -d2s "$@" "$url" >/dev/null 2>&1 || true # warm-up
    wrk -t1 -c"$CONNS" -d"$DUR" --latency "$@" "$url" >"$W/wrk.txt" 2>&1
    awk '
        /Requests\/sec:/ { rps = $2 }
        /^ +99%/ { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
                   ms = (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : v }
        / Non-2xx or 3xx responses:/ { bad = $NF }
        END { if (bad) { print "non-2xx answers: " bad > "/dev/stderr"; exit 1 }
              printf "%.0f %.3f\n", rps, ms }' "$W/wrk.txt"
}

# The bare server with each load the servers get (a fixed URL; a URL drawn by a wrk script,
# which costs wrk CPU on the same cores), at its best thread count (1 or 2) for each.
# best_bare SCRIPT|-: sets BR BP BT.
best_bare() {
    if [ "$1" = - ]; then
        set -- $(measure "http://127.0.0.1:$BARE1/query/m-1"); r1=$1 p1=$2
        set -- $(measure "http://127.0.0.1:$BARE2/query/m-1"); r2=$1 p2=$2
    else
        s=$1
        set -- $(measure "http://127.0.0.1:$BARE1/" -s "$s"); r1=$1 p1=$2
        set -- $(measure "http://127.0.0.1:$BARE2/" -s "$s"); r2=$1 p2=$2
    fi
    if awk -v a="$r1" -v b="$r2" 'BEGIN { exit !(a >= b) }'; then
        BT=1 BR=$r1 BP=$p1
    else
        BT=2 BR=$r2 BP=$p2
    fi
}
best_bare -
BARE_T=$BT BARE_RPS=$BR BARE_P99=$BP
best_bare "$W/random.lua"
BRAND_T=$BT BRAND_RPS=$BR BRAND_P99=$BP
best_bare "$W/ids.lua"
BIDS_T=$BT BIDS_RPS=$BR BIDS_P99=$BP
echo "bench/serve: wrk -t1 -c$CONNS -d$DUR; ratios against the bare libmicrohttpd (200 B) under the same wrk load, at its best thread count"
printf '  %-40s %10s %9s %7s %7s\n' "" "req/s" "p99 ms" "x rps" "x p99"
# line NAME RPS P99 BARE_RPS BARE_P99
line() {
    awk -v name="$1" -v r="$2" -v p="$3" -v br="$4" -v bp="$5" 'BEGIN {
        printf "  %-40s %10s %9s %7.2f %7.2f\n", name, r, p, r / br, (bp > 0) ? p / bp : 0 }'
}
line "bare, /query/m-1 ($BARE_T threads)" "$BARE_RPS" "$BARE_P99" "$BARE_RPS" "$BARE_P99"
line "bare, random URLs ($BRAND_T threads)" "$BRAND_RPS" "$BRAND_P99" "$BRAND_RPS" "$BRAND_P99"
line "bare, 100-id URLs ($BIDS_T threads)" "$BIDS_RPS" "$BIDS_P99" "$BIDS_RPS" "$BIDS_P99"
for d in backlog batch; do
    eval port=\$PORT_$d
    eval port2=\$PORT2_$d
    curl -sf "http://127.0.0.1:$port/query/m-1" >"$W/answer-$d.json" ||
        { echo "bench/serve: /query/m-1 on $d failed" >&2; exit 1; }
    set -- $(measure "http://127.0.0.1:$port/query/m-1")
    line "$d: /query/m-1" "$1" "$2" "$BARE_RPS" "$BARE_P99"
    set -- $(measure "http://127.0.0.1:$port/" -s "$W/random.lua")
    RAND_RPS=$1 RAND_P99=$2
    line "$d: /query/<random merchant>" "$1" "$2" "$BRAND_RPS" "$BRAND_P99"
    set -- $(measure "http://127.0.0.1:$port2/" -s "$W/random.lua")
    RAND2_RPS=$1 RAND2_P99=$2
    line "$d: the same, --threads 2" "$1" "$2" "$BRAND_RPS" "$BRAND_P99"
    # the goal with each server at its best thread count
    awk -v r="$RAND_RPS" -v p="$RAND_P99" -v r2="$RAND2_RPS" -v p2="$RAND2_P99" \
        -v br="$BRAND_RPS" -v bp="$BRAND_P99" -v d="$d" 'BEGIN {
        t = 1; if (r2 > r) { r = r2; p = p2; t = 2 }
        rr = r / br; pr = (bp > 0) ? p / bp : 0
        printf "  %-40s goal >= 0.70: %s (%.2f), p99 <= 1.50: %s (%.2f), at %d threads\n",
            d ": random merchants", (rr >= 0.70 ? "met" : "MISSED"), rr,
            (pr <= 1.50 ? "met" : "MISSED"), pr, t }'
    set -- $(measure "http://127.0.0.1:$port/" -s "$W/ids.lua")
    line "$d: /query?ids= (100 random)" "$1" "$2" "$BIDS_RPS" "$BIDS_P99"
    set -- $(measure "http://127.0.0.1:$port/top?window=5m")
    line "$d: /top?window=5m" "$1" "$2" "$BARE_RPS" "$BARE_P99"
done
echo "  answer (batch): $(cat "$W/answer-batch.json")"
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$(pgrep -f "lambda-serve --port 0 --data-dir $W/batch" | head -1)/status" 2>/dev/null || echo "?")
echo "  lambda-serve (batch) RSS ${rss} kB with $MERCHANTS merchants in memory"
echo "bench/serve: freshness, produce -> /events event whose snapshot counts the order (checkpoint_ms 200):"
"$OUT/serve-fresh" "$BS" "$PORT_batch" "$FRESH" | sed 's/^/  /'
