#!/bin/sh
# bench/shards.sh - the router and the shards (issue 14); prints, never fails on a figure.
#  1. router: on data written by the real layers (lambda-devkafka with 4 partitions, lambda-gen
#     producing SHARDS_BENCH_ORDERS orders of random merchants, a lambda-batch run publishing them
#     in each data directory, then SHARDS_BENCH_EXTRA more counted by the speed layers): two
#     shards (0-1 and 2-3, each its own lambda-speed, batch version and lambda-serve) and one
#     unsharded stack over the same topic. Once every server's /query equals lambda-gen's truth
#     for 31 merchants: GET /query/<a random merchant that exists> under wrk through a router
#     without a partitioner (every id asked of both shards, its worst case), through a router
#     with partitioner = murmur2_random (each id asks only its owner: the common case), and
#     through the keyed router again with router_io = threads (its workers block on their
#     shards, the path before the event loops), against the unsharded lambda-serve, side by
#     side; an answer other than 200 fails the bench. Goal: the router adds at most one
#     loopback round trip; p99 within 2x of the direct answer. Three ways of asking:
#     - saturated: CONNS connections, closed loop. On 2 cores shared by wrk, the router and two
#       shards every answer queues behind others (latency = CONNS / throughput): the figures
#       say how much CPU the router costs, not what it adds to one answer.
#     - paced: the same CONNS connections, each waiting a random time (exponential, wrk's
#       delay()) between an answer and its next request, for an offered load of PACED_RPS in
#       all, well below the direct server's and the routers' capacity: what routing adds to an
#       answer at an equal load, with queueing as requests arriving at random cause it.
#     - one connection (CONNS_LOW), closed loop: what it adds when nothing queues.
#     The round trip the goal counts in is a direct answer's p50 in the same way of asking (one
#     loopback HTTP request and its answer, plus the server's work): added p50 <= direct p50.
#     bench/rtt.c measures the bare loopback TCP round trip (no HTTP) beside it, the floor, and
#     bench/http_rtt.c one HTTP hop of the bare libraries the router is made of (libcurl, its
#     connection kept alive, asking bench/bare_mhd.c for a fixed body): the added p50 is also
#     counted in those, the honest unit of "one loopback round trip" of an HTTP hop.
#     Each router figure is the median of SHARDS_BENCH_ROUNDS rounds, each round measuring the
#     direct server and the routers one after the other (so a neighbour's load falls on both).
#  2. catch-up: SHARDS_BENCH_EVENTS events on 4 partitions read by one lambda-speed (all of
#     them), then by two shard speed layers (0-1 and 2-3) at once; on a 2-core machine this
#     says whether two shards on one machine contend (they share the cores and the broker).
# Env: BENCH_DURATION (10s), BENCH_CONNECTIONS (32), BENCH_CONNECTIONS_LOW (1), BENCH_MERCHANTS (10000),
# SHARDS_BENCH_ORDERS (200000), SHARDS_BENCH_EXTRA (20000) (4 partitions of ~5 MiB each in
# lambda-devkafka: more is lost to its retention, which the truth check would catch),
# SHARDS_BENCH_EVENTS (400000), SHARDS_BENCH_PHASES ("router catchup"), SHARDS_BENCH_ROUNDS (3),
# SHARDS_BENCH_PACED_RPS (3000: the paced measurement's offered load, req/s over all connections),
# LAMBDA_BIN (bin), SHARDS_BENCH_KEEP (set: keep the work directory and its logs),
# SHARDS_BENCH_BASE_BIN (a directory with another build's lambda-serve, e.g. main's: a keyed
# event-loop router of it is measured in every round beside this build's, so that a change is
# judged against its base at the same moment rather than against another run on a busy host).
set -eu
cd "$(dirname "$0")/.."
BIN=${LAMBDA_BIN:-bin}
DUR=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNECTIONS:-32}
CONNS_LOW=${BENCH_CONNECTIONS_LOW:-1}
MERCHANTS=${BENCH_MERCHANTS:-10000}
N=${SHARDS_BENCH_EVENTS:-400000}
ORDERS=${SHARDS_BENCH_ORDERS:-200000}
EXTRA=${SHARDS_BENCH_EXTRA:-20000}
ROUNDS=${SHARDS_BENCH_ROUNDS:-3}
PACED_RPS=${SHARDS_BENCH_PACED_RPS:-3000}
PHASES=" ${SHARDS_BENCH_PHASES:-router catchup} "
BASE=${SHARDS_BENCH_BASE_BIN:-}
OUT=build/bench/shards
W=$(mktemp -d "${TMPDIR:-/tmp}/lambda-bench-shards-XXXXXX")
PIDS=""

cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${SHARDS_BENCH_KEEP:-}" ]; then echo "bench/shards: kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT INT TERM

phase() { case "$PHASES" in *" $1 "*) return 0 ;; esac; return 1; }
now() { date +%s.%N; }

# Waits (bounded) for "listening port=N" in file $1 and prints N.
port_of() {
    i=0
    while [ $i -lt 150 ]; do
        p=$(grep -o "listening port=[0-9]*" "$1" 2>/dev/null | head -1 | cut -d= -f2)
        [ -n "$p" ] && { echo "$p"; return 0; }
        i=$((i + 1)); sleep 0.1
    done
    echo "bench/shards: no port in $1" >&2; cat "$1" >&2; return 1
}

# Runs wrk on URL $1 over $2 connections (default CONNS) with the script $W/$3.lua (default
# random: the random merchants, closed loop); prints "req_per_s p50_ms p99_ms".
measure() {
    c=${2:-$CONNS}
    lua="$W/${3:-random}.lua"
    wrk -t1 -c"$c" -d2s -s "$lua" "$1" >/dev/null 2>&1 || true # warm-up
    wrk -t1 -c"$c" -d"$DUR" --latency -s "$lua" "$1" >"$W/wrk.txt" 2>&1
    awk -v url="$1" '
        function ms(v,   u) { u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
                             return (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : v }
        /Requests\/sec:/ { rps = $2 }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        / Non-2xx or 3xx responses:/ { bad = $NF }
        /^non200 / { non200 = $2; seen = 1 }
        END { if (bad || non200 || !seen) { print "answers other than 200: " (non200 ? non200 : bad) " from " url > "/dev/stderr"; exit 1 }
              printf "%.0f %.3f %.3f\n", rps, p50, p99 }' "$W/wrk.txt"
}

# The median of each column of the lines of numbers in file $1 (e.g. "req_per_s p50_ms p99_ms").
median() {
    for col in $(seq 1 "$(head -1 "$1" | wc -w)"); do
        cut -d' ' -f$col "$1" | sort -g | awk '{ v[NR] = $1 } END { printf "%s ", v[int((NR + 1) / 2)] }'
    done
    echo
}

if phase router; then
    command -v wrk >/dev/null || { echo "bench/shards: wrk is not installed" >&2; exit 1; }
    command -v jq >/dev/null || { echo "bench/shards: jq is not installed" >&2; exit 1; }
    mkdir -p "$OUT"
    cc -O2 -o "$OUT/speed-wait" bench/speed_wait.c -lsqlite3
    cc -O2 -o "$OUT/rtt" bench/rtt.c -lm
    cc -O2 -std=c11 -D_DEFAULT_SOURCE -Wall -Wextra -Werror -o "$OUT/http-rtt" bench/http_rtt.c \
        -lcurl -lm
    cc -O2 -std=c11 -D_DEFAULT_SOURCE -Wall -Wextra -Werror -pthread -o "$OUT/bare-mhd" \
        bench/bare_mhd.c -lmicrohttpd
    # The data, written by the real layers as tests/it_shards.c and DEMO_SHARDS=2 run them: one
    # broker with 4 partitions, ORDERS orders (lz4, lambda-gen's default) published by a
    # lambda-batch run in each data directory, then EXTRA more that only the speed layers count;
    # two shards (0-1, 2-3) and one unsharded stack (all) over the same topic.
    "$BIN/lambda-devkafka" --partitions 4 --bootstrap-file "$W/rbs" >"$W/rdk.out" 2>"$W/rdk.err" &
    PIDS="$PIDS $!"
    i=0
    while [ ! -s "$W/rbs" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    RBS=$(cat "$W/rbs")
    t0=$(date +%s)
    "$BIN/lambda-gen" --brokers "$RBS" --count "$ORDERS" --merchants "$MERCHANTS" --seed 1 \
        --partitioner murmur2_random --compression lz4 --truth "$W/truth1" 2>"$W/gen1.err"
    for s in "direct all" "s0 0-1" "s1 2-3"; do
        set -- $s
        "$BIN/lambda-batch" run --brokers "$RBS" --data-dir "$W/$1" --shard-partitions "$2" \
            --partitioner murmur2_random >"$W/batch-$1.out" 2>"$W/batch-$1.err"
    done
    "$BIN/lambda-gen" --brokers "$RBS" --count "$EXTRA" --merchants "$MERCHANTS" --seed 2 \
        --partitioner murmur2_random --compression lz4 --truth "$W/truth2" 2>"$W/gen2.err"
    for s in "direct all" "s0 0-1" "s1 2-3"; do
        set -- $s
        "$BIN/lambda-speed" --brokers "$RBS" --data-dir "$W/$1" --shard-partitions "$2" \
            2>"$W/speed-$1.err" &
        PIDS="$PIDS $!"
    done
    "$OUT/speed-wait" "$W/direct" $((ORDERS + EXTRA)) 600
    h0=$(sqlite3 "$W/direct/speed.db" "SELECT sum(next_offset) FROM offsets WHERE partition IN (0,1)")
    "$OUT/speed-wait" "$W/s0" "$h0" 600
    "$OUT/speed-wait" "$W/s1" $((ORDERS + EXTRA - h0)) 600
    echo "bench/shards: data written in $(($(date +%s) - t0)) s: $ORDERS + $EXTRA orders of $MERCHANTS merchants, 4 partitions (0-1: $h0); batch: $(cat "$W/batch-direct.out")"
    # The truth of both lambda-gen runs, per merchant: "id count revenue".
    awk '$1 == "merchant" { c[$2] += $3; r[$2] += $4 } END { for (m in c) print m, c[m], r[m] }' \
        "$W/truth1" "$W/truth2" | sort >"$W/truth"
    "$BIN/lambda-serve" --port 0 --data-dir "$W/direct" 2>"$W/direct.log" &
    PIDS="$PIDS $!"
    # The shards' clients are the three routers, all from 127.0.0.1, each keeping connections
    # alive: max_connections_per_ip's default (64) would refuse some (the routers answer 503).
    "$BIN/lambda-serve" --port 0 --data-dir "$W/s0" --shard-partitions 0-1 \
        --max-connections-per-ip 0 2>"$W/shard0.log" &
    PIDS="$PIDS $!"
    "$BIN/lambda-serve" --port 0 --data-dir "$W/s1" --shard-partitions 2-3 \
        --max-connections-per-ip 0 2>"$W/shard1.log" &
    PIDS="$PIDS $!"
    DPORT=$(port_of "$W/direct.log")
    P0=$(port_of "$W/shard0.log")
    P1=$(port_of "$W/shard1.log")
    SH="http://127.0.0.1:$P0,http://127.0.0.1:$P1"
    # Without a partitioner the router asks both shards for every id; with it, only the owner.
    "$BIN/lambda-serve" --port 0 --data-dir "$W/none" --shards "$SH" 2>"$W/router.log" &
    PIDS="$PIDS $!"
    "$BIN/lambda-serve" --port 0 --data-dir "$W/none" --partitioner murmur2_random \
        --shards "$SH" 2>"$W/keyed.log" &
    PIDS="$PIDS $!"
    "$BIN/lambda-serve" --port 0 --data-dir "$W/none" --partitioner murmur2_random --router-io threads \
        --shards "$SH" 2>"$W/keyedt.log" &
    PIDS="$PIDS $!"
    "$OUT/bare-mhd" 2 >"$W/bare.out" 2>&1 &
    PIDS="$PIDS $!"
    RPORT=$(port_of "$W/router.log")
    KPORT=$(port_of "$W/keyed.log")
    TPORT=$(port_of "$W/keyedt.log")
    XPORT=$KPORT SERVERS="d r k t"
    if [ -n "$BASE" ]; then
        "$BASE/lambda-serve" --port 0 --data-dir "$W/none" --partitioner murmur2_random \
            --shards "$SH" 2>"$W/keyedb.log" &
        PIDS="$PIDS $!"
        XPORT=$(port_of "$W/keyedb.log") SERVERS="d r k t b"
    fi
    i=0
    until curl -sf "http://127.0.0.1:$KPORT/health" | grep -q '"routing":"by_key"' &&
        curl -sf "http://127.0.0.1:$TPORT/health" | grep -q '"routing":"by_key"' &&
        curl -sf "http://127.0.0.1:$XPORT/health" | grep -q '"routing":"by_key"'; do
        i=$((i + 1)); [ $i -gt 100 ] && { echo "bench/shards: the keyed router never routes by key" >&2; exit 1; }
        sleep 0.1
    done
    # Before anything is timed: every server's answer for some merchants (the busiest, then 30
    # at random) equals the truth, and a routed answer's provenance names both shards or its owner.
    NM=$(wc -l <"$W/truth")
    { grep '^m-1 ' "$W/truth"; awk 'BEGIN { srand(7) } { print rand(), $0 }' "$W/truth" |
        sort -k1,1g | head -30 | cut -d' ' -f2-; } >"$W/check"
    while read -r m c r; do
        for p in "$DPORT direct 0" "$RPORT both 2" "$KPORT keyed 1" "$TPORT threads 1" "$XPORT base 1"; do
            set -- $p
            got=$(curl -sf "http://127.0.0.1:$1/query/$m" |
                jq -r '"\(.order_count) \(.revenue_cents) \(.shards // [] | length)"') || got="no answer"
            [ "$got" = "$c $r $3" ] || {
                echo "bench/shards: /query/$m from $2: '$got', truth '$c $r' with $3 shards" >&2; exit 1; }
        done
    done <"$W/check"
    echo "bench/shards: /query of $(wc -l <"$W/check") merchants equals the truth from direct, both asked, keyed, keyed (threads)"
    # wrk asks for merchants that exist, at random; any answer but 200 fails the bench.
    { echo "local ids = {"; awk '{ printf "\"%s\",\n", $1 }' "$W/truth"; echo "}"; cat <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) math.randomseed(42); bad = 0 end
request = function()
    return wrk.format("GET", "/query/" .. ids[math.random(1, #ids)])
end
function response(status, headers, body) if status ~= 200 then bad = bad + 1 end end
function done(summary, latency, requests)
    local n = 0
    for _, t in ipairs(threads) do n = n + t:get("bad") end
    io.write(string.format("non200 %d\n", n))
end
LUA
    } >"$W/random.lua"
    # The paced script: the same requests, each connection waiting between an answer and its
    # next request an exponentially distributed time of mean CONNS / PACED_RPS seconds (wrk's
    # delay() takes whole milliseconds: floor(x + U) keeps the mean), so the offered load is
    # about PACED_RPS in all, arriving at random rather than in step.
    { cat "$W/random.lua"; awk -v c="$CONNS" -v r="$PACED_RPS" 'BEGIN {
        printf "local mean_ms = %.6f\n", c * 1000 / r }'; cat <<'LUA'
function delay() return math.floor(-mean_ms * math.log(1 - math.random()) + math.random()) end
LUA
    } >"$W/paced.lua"
    # Three ways of asking, each ROUNDS rounds of the direct server and the three routers one
    # after the other; the medians of each, side by side.
    i=0
    until BPORT=$(grep -o "port=[0-9]*" "$W/bare.out" | cut -d= -f2) && [ -n "$BPORT" ]; do
        i=$((i + 1)); [ $i -gt 100 ] && { echo "bench/shards: bare_mhd never listened" >&2; exit 1; }
        sleep 0.1
    done
    : >"$W/rtt.txt"; : >"$W/rttg.txt"; : >"$W/hrtt.txt"; : >"$W/hrttg.txt"
    for way in "sat $CONNS random" "paced $CONNS paced" "one $CONNS_LOW random"; do
        set -- $way
        for s in $SERVERS; do : >"$W/$1-$s.txt"; done
        i=0
        while [ $i -lt "$ROUNDS" ]; do
            "$OUT/rtt" 20000 >>"$W/rtt.txt"
            "$OUT/rtt" 5000 "$(awk -v r="$PACED_RPS" 'BEGIN { print 1e6 / r }')" >>"$W/rttg.txt"
            "$OUT/http-rtt" "http://127.0.0.1:$BPORT/query/m-1" 10000 >>"$W/hrtt.txt"
            "$OUT/http-rtt" "http://127.0.0.1:$BPORT/query/m-1" 3000 \
                "$(awk -v r="$PACED_RPS" 'BEGIN { print 1e6 / r }')" >>"$W/hrttg.txt"
            measure "http://127.0.0.1:$DPORT" "$2" "$3" >>"$W/$1-d.txt"
            measure "http://127.0.0.1:$RPORT" "$2" "$3" >>"$W/$1-r.txt"
            measure "http://127.0.0.1:$KPORT" "$2" "$3" >>"$W/$1-k.txt"
            measure "http://127.0.0.1:$TPORT" "$2" "$3" >>"$W/$1-t.txt"
            base=""
            if [ -n "$BASE" ]; then
                measure "http://127.0.0.1:$XPORT" "$2" "$3" >>"$W/$1-b.txt"
                base=" | base by key: $(tail -1 "$W/$1-b.txt")"
            fi
            echo "bench/shards: round $((i + 1)) $1 -c$2 direct, both asked, by key, by key (threads):" \
                "$(tail -1 "$W/$1-d.txt") | $(tail -1 "$W/$1-r.txt") | $(tail -1 "$W/$1-k.txt") |" \
                "$(tail -1 "$W/$1-t.txt")$base (load $(cut -d' ' -f1 /proc/loadavg))"
            i=$((i + 1))
        done
    done
    set -- $(median "$W/rtt.txt")
    RTT50=$1 RTT99=$2
    set -- $(median "$W/rttg.txt")
    RTTG50=$1 RTTG99=$2
    set -- $(median "$W/hrtt.txt")
    HRTT50=$1 HRTT99=$2
    set -- $(median "$W/hrttg.txt")
    HRTTG50=$1 HRTTG99=$2
    echo "bench/shards: random merchants of the $NM that exist, GET /query/<id>, wrk -t1 -d$DUR, medians of $ROUNDS rounds"
    echo "  loopback TCP round trip (bench/rtt.c, 128 bytes out, 256 back, no HTTP): back to back p50 $RTT50 ms, p99 $RTT99 ms;" \
        "at random gaps of mean 1/$PACED_RPS s p50 $RTTG50 ms, p99 $RTTG99 ms"
    echo "  bare HTTP hop (bench/http_rtt.c: libcurl keep-alive to bench/bare_mhd.c, 200-byte body): back to back" \
        "p50 $HRTT50 ms, p99 $HRTT99 ms; at random gaps of mean 1/$PACED_RPS s p50 $HRTTG50 ms, p99 $HRTTG99 ms"
    for way in "sat -c$CONNS, closed loop (saturated: latency follows throughput)" \
        "paced -c$CONNS, offered $PACED_RPS req/s in all" "one -c$CONNS_LOW, closed loop"; do
        w=${way%% *}
        rtt=$RTT50 hop=$HRTT50
        [ "$w" = paced ] && rtt=$RTTG50 hop=$HRTTG50
        echo "  $w: ${way#* }"
        set -- $(median "$W/$w-d.txt")
        D_RPS=$1 D_P50=$2 D_P99=$3
        printf '    %-34s %8s req/s   p50 %7s ms   p99 %7s ms\n' "lambda-serve, direct" "$D_RPS" "$D_P50" "$D_P99"
        routers="r both_asked router -> 2 shards (both asked)|k by_key router by key -> its shard|t by_key_threads same, router_io = threads"
        [ -n "$BASE" ] && routers="$routers|b by_key_base router by key, base binary"
        echo "$routers" | tr '|' '\n' >"$W/routers"
        while read -r r; do
            set -- $r
            f=$1 name=$2
            shift 2
            set -- "$*" $(median "$W/$w-$f.txt")
            printf '    %-34s %8s req/s   p50 %7s ms   p99 %7s ms\n' "$1" "$2" "$3" "$4"
            awk -v w="$w" -v n="$name" -v dr="$D_RPS" -v d50="$D_P50" -v d99="$D_P99" \
                -v rr="$2" -v r50="$3" -v r99="$4" -v rtt="$rtt" -v hop="$hop" 'BEGIN {
                a = r50 - d50; pr = (d99 > 0) ? r99 / d99 : 0
                printf "    shards.router.%s %-15s throughput_ratio=%.2f added_p50_ms=%.3f (%.2f direct p50s, %.2f bare http hops, %.1f tcp round trips; goal <= 1 direct p50: %s) added_p99_ms=%.3f p99_ratio=%.2f (goal <= 2.00: %s)\n",
                    w, n, (dr > 0) ? rr / dr : 0, a, (d50 > 0) ? a / d50 : 0, (hop > 0) ? a / hop : 0,
                    (rtt > 0) ? a / rtt : 0, (a <= d50 ? "met" : "MISSED"), r99 - d99, pr,
                    (pr <= 2.0 ? "met" : "MISSED") }'
        done <"$W/routers"
    done
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=""
fi

if phase catchup; then
    cc -O2 -o "$W/speed_wait" bench/speed_wait.c -lsqlite3
    "$BIN/lambda-devkafka" --partitions 4 --bootstrap-file "$W/bs" >"$W/dk.out" 2>"$W/dk.err" &
    PIDS="$PIDS $!"
    i=0
    while [ ! -s "$W/bs" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    BS=$(cat "$W/bs")
    "$BIN/lambda-gen" --brokers "$BS" --count "$N" --merchants 10000 --seed 1 2>"$W/gen.err"
    t0=$(now)
    "$BIN/lambda-speed" --brokers "$BS" --data-dir "$W/one" 2>"$W/one.err" &
    one=$!
    "$W/speed_wait" "$W/one" "$N" 1200
    t1=$(now)
    kill "$one"; wait "$one" 2>/dev/null || true
    n0=$(sqlite3 "$W/one/speed.db" "SELECT sum(next_offset) FROM offsets WHERE partition IN (0,1)")
    n1=$(sqlite3 "$W/one/speed.db" "SELECT sum(next_offset) FROM offsets WHERE partition IN (2,3)")
    t2=$(now)
    "$BIN/lambda-speed" --brokers "$BS" --data-dir "$W/s0" --shard-partitions 0-1 2>"$W/s0.err" &
    s0=$!
    "$BIN/lambda-speed" --brokers "$BS" --data-dir "$W/s1" --shard-partitions 2-3 2>"$W/s1.err" &
    s1=$!
    "$W/speed_wait" "$W/s0" "$n0" 1200
    t3a=$(now)
    "$W/speed_wait" "$W/s1" "$n1" 1200
    t3=$(now)
    kill "$s0" "$s1"; wait "$s0" "$s1" 2>/dev/null || true
    awk -v n="$N" -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v da="$t3a" -v n0="$n0" -v n1="$n1" 'BEGIN {
        one = n / (b - a); two = n / (d - c)
        printf "  shards.catchup events=%d one_speed_seconds=%.2f one_eps=%.0f two_shards_seconds=%.2f (first done after %.2f) two_eps=%.0f ratio=%.2f split=%d/%d\n",
            n, b - a, one, d - c, da - c, two, two / one, n0, n1 }'
    echo "  (ratio > 1: two shards together catch up faster than one speed layer; on $(nproc) cores they share the CPUs and one broker)"
fi
