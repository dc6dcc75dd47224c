#!/bin/sh
# bench/serve.sh - lambda-serve's /query/<merchant> under wrk, beside a bare libmicrohttpd
# server answering a constant 200-byte JSON (the ceiling), in the same run and on the same
# cores. Goal (issue 6): >= 70% of the ceiling's requests/s, p99 within 1.5x of its p99.
# The one-merchant figure is what the goal is about: lambda-serve with its default threads (one
# per core but one, at least 1), and with 2 for comparison (on 2 cores, two workers and wrk
# queue for the cores); a last run asks for merchants at random, so that most answers miss the
# per-thread cache and read SQLite.
# Needs bin/lambda-serve (make all) and build/rel/liblambda.a; compiles its helpers itself.
# Env: BENCH_DURATION (10s), BENCH_CONNECTIONS (32), BENCH_MERCHANTS (10000).
set -eu
cd "$(dirname "$0")/.."
DUR=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNECTIONS:-32}
MERCHANTS=${BENCH_MERCHANTS:-10000}
OUT=build/bench/serve
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lambda-bench-serve-XXXXXX")
SERVE_PID= SERVE1_PID= BARE_PID=

cleanup() {
    for p in $SERVE_PID $SERVE1_PID $BARE_PID; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

command -v wrk >/dev/null || { echo "bench/serve: wrk is not installed" >&2; exit 1; }
[ -x bin/lambda-serve ] && [ -f build/rel/liblambda.a ] ||
    { echo "bench/serve: run 'make' first (bin/lambda-serve, build/rel/liblambda.a)" >&2; exit 1; }
mkdir -p "$OUT"
cc -O2 -std=c11 -D_DEFAULT_SOURCE -Wall -Wextra -Werror -pthread -o "$OUT/bare-mhd" \
    bench/bare_mhd.c -lmicrohttpd
cc -O2 -std=c11 -D_DEFAULT_SOURCE -Wall -Wextra -Werror -Ishared -o "$OUT/serve-fixture" \
    bench/serve_fixture.c build/rel/liblambda.a -lsqlite3 -lm
"$OUT/serve-fixture" "$WORK/data" "$MERCHANTS"

# Waits (bounded) for a line matching $2 in file $1 and prints the port it names.
port_of() {
    i=0
    while [ $i -lt 100 ]; do
        p=$(grep -o "$2=[0-9]*" "$1" 2>/dev/null | head -1 | cut -d= -f2)
        [ -n "$p" ] && { echo "$p"; return 0; }
        i=$((i + 1)); sleep 0.1
    done
    echo "bench/serve: no '$2' in $1" >&2; cat "$1" >&2; return 1
}

bin/lambda-serve --port 0 --data-dir "$WORK/data" 2>"$WORK/serve.log" &
SERVE_PID=$!
bin/lambda-serve --port 0 --data-dir "$WORK/data" --threads 2 2>"$WORK/serve1.log" &
SERVE1_PID=$!
"$OUT/bare-mhd" >"$WORK/bare.out" &
BARE_PID=$!
SPORT=$(port_of "$WORK/serve.log" "listening port")
S1PORT=$(port_of "$WORK/serve1.log" "listening port")
BPORT=$(port_of "$WORK/bare.out" "port")
ID=m-04242
curl -sf "http://127.0.0.1:$SPORT/query/$ID" >"$WORK/answer.json" ||
    { echo "bench/serve: /query/$ID failed" >&2; exit 1; }

# Every request a merchant drawn at random among all of them (a cold, uncached mix).
cat >"$WORK/random.lua" <<LUA
math.randomseed(42)
request = function()
    return wrk.format("GET", string.format("/query/m-%05d", math.random(0, $MERCHANTS - 1)))
end
LUA

# Runs wrk on URL [extra wrk args]; prints "req_per_s p99_ms".
measure() {
    url=$1; shift
    wrk -t1 -c"$CONNS" -d2s "$@" "$url" >/dev/null 2>&1 || true # warm-up
    wrk -t1 -c"$CONNS" -d"$DUR" --latency "$@" "$url" >"$WORK/wrk.txt" 2>&1
    awk '
        /Requests\/sec:/ { rps = $2 }
        /^ +99%/ { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
                   ms = (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : v }
        / Non-2xx or 3xx responses:/ { bad = $NF }
        END { if (bad) { print "non-2xx answers: " bad > "/dev/stderr"; exit 1 }
              printf "%.0f %.3f\n", rps, ms }' "$WORK/wrk.txt"
}

set -- $(measure "http://127.0.0.1:$BPORT/query/$ID")
BARE_RPS=$1 BARE_P99=$2
set -- $(measure "http://127.0.0.1:$SPORT/query/$ID")
SERVE_RPS=$1 SERVE_P99=$2
set -- $(measure "http://127.0.0.1:$S1PORT/query/$ID")
ONE_RPS=$1 ONE_P99=$2
set -- $(measure "http://127.0.0.1:$SPORT/" -s "$WORK/random.lua")
RAND_RPS=$1 RAND_P99=$2
# The other reads of batch rows: a minute series, an hour series, /top over minutes and over
# whole hours (issue 13: shared rows must not make them slower).
NOW_H=$(date -u +%Y-%m-%dT%H:00:00Z)
DAY_AGO=$(date -u -d '-24 hours' +%Y-%m-%dT%H:00:00Z)
set -- $(measure "http://127.0.0.1:$SPORT/query/$ID/series?step=1m&window=15m")
S1M_RPS=$1 S1M_P99=$2
set -- $(measure "http://127.0.0.1:$SPORT/query/$ID/series?step=1h&from=$DAY_AGO&to=$NOW_H")
S1H_RPS=$1 S1H_P99=$2
set -- $(measure "http://127.0.0.1:$SPORT/top?window=5m")
TOP_RPS=$1 TOP_P99=$2
set -- $(measure "http://127.0.0.1:$SPORT/top?from=$DAY_AGO&to=$NOW_H")
TOPH_RPS=$1 TOPH_P99=$2

echo "bench/serve: wrk -t1 -c$CONNS -d$DUR, $MERCHANTS merchants, GET /query/$ID ($(wc -c <"$WORK/answer.json") bytes)"
printf '  %-28s %10s req/s   p99 %8s ms\n' "bare libmicrohttpd (200 B)" "$BARE_RPS" "$BARE_P99"
printf '  %-28s %10s req/s   p99 %8s ms\n' "lambda-serve /query/$ID" "$SERVE_RPS" "$SERVE_P99"
printf '  %-28s %10s req/s   p99 %8s ms\n' "  the same, --threads 2" "$ONE_RPS" "$ONE_P99"
printf '  %-28s %10s req/s   p99 %8s ms\n' "lambda-serve, random ids" "$RAND_RPS" "$RAND_P99"
printf '  %-28s %10s req/s   p99 %8s ms\n' "series step=1m window=15m" "$S1M_RPS" "$S1M_P99"
printf '  %-28s %10s req/s   p99 %8s ms\n' "series step=1h, 24 hours" "$S1H_RPS" "$S1H_P99"
printf '  %-28s %10s req/s   p99 %8s ms\n' "/top window=5m" "$TOP_RPS" "$TOP_P99"
printf '  %-28s %10s req/s   p99 %8s ms\n' "/top over 24 whole hours" "$TOPH_RPS" "$TOPH_P99"
awk -v sr="$SERVE_RPS" -v br="$BARE_RPS" -v sp="$SERVE_P99" -v bp="$BARE_P99" 'BEGIN {
    rr = sr / br; pr = (bp > 0) ? sp / bp : 0
    printf "  one merchant: throughput ratio %.2f (goal >= 0.70: %s), p99 ratio %.2f (goal <= 1.50: %s)\n",
        rr, (rr >= 0.70 ? "met" : "MISSED"), pr, (pr <= 1.50 ? "met" : "MISSED") }'
awk -v sr="$ONE_RPS" -v br="$BARE_RPS" -v sp="$ONE_P99" -v bp="$BARE_P99" 'BEGIN {
    printf "  --threads 2:  throughput ratio %.2f, p99 ratio %.2f (two workers and wrk share 2 cores)\n",
        sr / br, (bp > 0) ? sp / bp : 0 }'
awk -v sr="$RAND_RPS" -v br="$BARE_RPS" -v sp="$RAND_P99" -v bp="$BARE_P99" 'BEGIN {
    printf "  random ids:   throughput ratio %.2f, p99 ratio %.2f (most answers miss the cache and read SQLite)\n",
        sr / br, (bp > 0) ? sp / bp : 0 }'
