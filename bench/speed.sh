#!/bin/sh
# bench/speed.sh - lambda-speed figures (issue 5); prints, never fails on a figure.
#
#  1. catch-up: events/s applied by lambda-speed on a topic pre-filled with N events (32
#     partitions, lz4, so the embedded Kafka keeps them all), beside a bare librdkafka +
#     jansson consumer on the same topic (bench/speed_bare.c). Goal: >= 80% of the bare rate.
#     The bare consumer runs twice per round: with librdkafka's defaults, and with the consumer
#     properties lambda-speed sets for itself (queued.min.messages, fetch.wait.max.ms), so the
#     ratio against the second is lambda-speed's own work and nothing else. Rounds alternate
#     bare and lambda-speed runs; the line "speed.catchup median" gives the medians.
#  2. memory: RSS after 1M and after RSS_N events (10,000 merchants, paced so nothing is
#     deleted before it is read). Goal: flat within 10% (bounded duplicate state).
#  3. freshness: p99 of (commit time of the first checkpoint holding an event - its produce
#     time) under a paced stream (bench/speed_fresh.c). Goal: <= checkpoint_ms + 100 ms.
#
# Environment: SPEED_BENCH_ROUNDS (3), SPEED_BENCH_EVENTS (1000000), SPEED_BENCH_RSS_EVENTS (10000000),
# SPEED_BENCH_RSS_RATE (50000/s), SPEED_BENCH_FRESH_RATE (5000/s), SPEED_BENCH_FRESH_SECS (20),
# SPEED_BENCH_PHASES ("catchup rss fresh"), SPEED_BENCH_KEEP (set: keep the work directory and its
# logs), LAMBDA_BIN (bin).
set -eu
cd "$(dirname "$0")/.."
BIN=${LAMBDA_BIN:-bin}
N=${SPEED_BENCH_EVENTS:-1000000}
ROUNDS=${SPEED_BENCH_ROUNDS:-3}
# What lambda-speed sets on its consumer unless told otherwise (speed/speed.c make_consumer).
SPEED_PROPS="queued.min.messages=200000 fetch.wait.max.ms=50"
RSS_N=${SPEED_BENCH_RSS_EVENTS:-10000000}
RSS_RATE=${SPEED_BENCH_RSS_RATE:-50000}
FRESH_RATE=${SPEED_BENCH_FRESH_RATE:-5000}
FRESH_SECS=${SPEED_BENCH_FRESH_SECS:-20}
PHASES=" ${SPEED_BENCH_PHASES:-catchup rss fresh} "
W=$(mktemp -d "${TMPDIR:-/tmp}/lambda-bench-speed-XXXXXX")
PIDS=""

cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

cc -O2 -o "$W/speed_bare" bench/speed_bare.c -lrdkafka -ljansson
cc -O2 -o "$W/speed_fresh" bench/speed_fresh.c -lrdkafka -lsqlite3
cc -O2 -o "$W/speed_wait" bench/speed_wait.c -lsqlite3

now() { date +%s.%N; }

# start_kafka NAME PARTITIONS: an embedded Kafka; sets BS and KPID.
start_kafka() {
    "$BIN/lambda-devkafka" --partitions "$2" --bootstrap-file "$W/$1.bs" \
        >"$W/$1.dk.out" 2>"$W/$1.dk.err" &
    KPID=$!
    PIDS="$PIDS $KPID"
    i=0
    while [ ! -s "$W/$1.bs" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    BS=$(cat "$W/$1.bs")
}

# start_speed NAME [flags...]: lambda-speed on $BS with data in $W/NAME; sets SPID.
start_speed() {
    name=$1
    shift
    "$BIN/lambda-speed" --brokers "$BS" --data-dir "$W/$name" "$@" 2>"$W/$name.err" &
    SPID=$!
    PIDS="$PIDS $SPID"
}

# wait_committed DIR N: until the committed positions sum to N (bounded: 20 minutes).
wait_committed() {
    "$W/speed_wait" "$1" "$2" 1200
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

phase() { case "$PHASES" in *" $1 "*) return 0 ;; esac; return 1; }

# 1. catch-up rate against the bare consumer.
if phase catchup; then
start_kafka catchup 32
"$BIN/lambda-gen" --brokers "$BS" --count "$N" --merchants 10000 --seed 1 --dup-pct 1 \
    --truth "$W/catchup.truth" 2>"$W/gen1.err"
: >"$W/catchup.rates"
r=1
while [ $r -le "$ROUNDS" ]; do
    bare=$("$W/speed_bare" "$BS" orders)
    echo "round=$r $bare (librdkafka defaults)"
    bare_eps=$(echo "$bare" | sed 's/.*rate=\([0-9]*\).*/\1/')
    # shellcheck disable=SC2086
    same=$("$W/speed_bare" "$BS" orders $SPEED_PROPS)
    echo "round=$r $same ($SPEED_PROPS)"
    same_eps=$(echo "$same" | sed 's/.*rate=\([0-9]*\).*/\1/')
    t0=$(now)
    start_speed "catchup-$r"
    wait_committed "$W/catchup-$r" "$N"
    t1=$(now)
    rss=$(rss_kb "$SPID")
    stop "$SPID"
    awk -v n="$N" -v a="$t0" -v b="$t1" -v bare="$bare_eps" -v same="$same_eps" -v r="$r" \
        -v rss="$rss" 'BEGIN { v = n / (b - a);
        printf "speed.catchup round=%d events=%d seconds=%.2f speed_eps=%.0f bare_eps=%d ratio=%.2f bare_same_props_eps=%d ratio_same_props=%.2f rss_kb=%d\n", r, n, b - a, v, bare, v / bare, same, v / same, rss }' |
        tee -a "$W/catchup.rates"
    r=$((r + 1))
done
m1=$(sed 's/.* ratio=\([0-9.]*\) .*/\1/' "$W/catchup.rates" | median)
m2=$(sed 's/.* ratio_same_props=\([0-9.]*\) .*/\1/' "$W/catchup.rates" | median)
echo "speed.catchup median rounds=$ROUNDS ratio=$m1 ratio_same_props=$m2 goal_ratio>=0.80"
stop "$KPID"
fi

# 2. RSS after 1M and after RSS_N events, paced.
if phase rss; then
start_kafka rss 32
start_speed rss
"$BIN/lambda-gen" --brokers "$BS" --count "$RSS_N" --rate "$RSS_RATE" --merchants 10000 \
    --seed 2 --dup-pct 1 --truth "$W/rss.truth" 2>"$W/gen2.err" &
GPID=$!
PIDS="$PIDS $GPID"
step=1000000
mark=$step
while [ $mark -le "$RSS_N" ]; do
    wait_committed "$W/rss" $mark
    r=$(rss_kb "$SPID")
    [ $mark -eq $step ] && rss1=$r
    echo "speed.rss events=$mark rss_kb=$r"
    mark=$((mark + step))
done
wait "$GPID" || true
awk -v a="$rss1" -v b="$r" -v n="$RSS_N" \
    'BEGIN { printf "speed.rss after_1M_kb=%d after_%d_kb=%d growth_pct=%.1f goal_growth_pct<=10\n", a, n, b, (b - a) * 100 / a }'
grep msg=checkpoint_summary "$W/rss.err" | tail -1 | sed 's/.*msg=/speed.rss last_summary: /'
echo "speed.rss spills=$(grep -c msg=spill_started "$W/rss.err") merges=$(grep -c msg=merge_started "$W/rss.err")"
stop "$SPID"
stop "$KPID"
fi

# 3. freshness under a paced stream.
if phase fresh; then
start_kafka fresh 8
start_speed fresh
i=0
until sqlite3 "$W/fresh/speed.db" "SELECT value FROM meta WHERE key = 'checkpoint_ms'" \
    2>/dev/null | grep -q .; do
    i=$((i + 1))
    [ $i -lt 400 ] || break
    sleep 0.05
done
fresh=$("$W/speed_fresh" "$BS" orders "$W/fresh" "$FRESH_RATE" "$FRESH_SECS")
echo "speed.freshness $fresh checkpoint_ms=200 goal_p99_ms<=300"
stop "$SPID"
stop "$KPID"
fi
if [ -n "${SPEED_BENCH_KEEP:-}" ]; then echo "speed.kept dir=$W"; else rm -rf "$W"; fi
