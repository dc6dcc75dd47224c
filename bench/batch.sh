#!/bin/sh
# bench/batch.sh - lambda-batch against bare SQLite (issue 4's benchmark).
#
#   1. import: BATCH_BENCH_IMPORT (default 10M) orders from a lambda-gen NDJSON file through
#      `lambda-batch import`, then `lambda-batch run` (recompute of every view, Kafka empty);
#   2. kafka: BATCH_BENCH_KAFKA (default 1M) orders produced by lambda-gen (lz4, 64 partitions,
#      10,000 merchants so the busiest partition stays within the embedded Kafka's ~5 MiB),
#      then one `lambda-batch run` (ingest + recompute).
# Beside each, in the same run: a bare SQLite load of the same rows (sqlite3 .import of a CSV
# export, same primary key, same pragmas, one transaction) and a bare GROUP BY merchant_id.
# Prints seconds, orders/s and ours / (bare load + bare group by). Goal: within 2x.
#   3. history (issue 13): BATCH_BENCH_HISTORY (default 1M and 4M) orders over 60 days imported
#      into one data directory each, a first run, then BATCH_BENCH_REPS (default 3) rounds of
#      5,000 new orders in Kafka (a tenth late by up to 60 days) and an incremental run in each;
#      then full runs at the largest history beside bare GROUP BY merchant_id and GROUP BY
#      merchant_id, hour over the same rows; and batch.db's growth per incremental version, in
#      pages. Medians. Goals: the 4M incremental run within 1.5x of the 1M one and at most 10%
#      of a full run at 4M; the full run within 2x of the two bare GROUP BYs; the growth
#      proportional to the buckets rewritten.
# BATCH_BENCH_PHASES (default "import kafka history") picks the phases.
set -eu
cd "$(dirname "$0")/.."
BIN=${LAMBDA_BIN:-bin}
IMPORT_N=${BATCH_BENCH_IMPORT:-10000000}
HISTORY=${BATCH_BENCH_HISTORY:-"1000000 4000000"}
REPS=${BATCH_BENCH_REPS:-3}
PHASES=${BATCH_BENCH_PHASES:-"import kafka history"}
KAFKA_N=${BATCH_BENCH_KAFKA:-1000000}
dir=$(mktemp -d "${TMPDIR:-/tmp}/lambda-bench-batch-XXXXXX")
dk=""
dk2=""
cleanup() {
    [ -n "$dk" ] && kill "$dk" 2>/dev/null && wait "$dk" 2>/dev/null
    [ -n "$dk2" ] && kill "$dk2" 2>/dev/null && wait "$dk2" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }'; }
ratio() { awk -v a="$1" -v b="$2" -v c="$3" 'BEGIN { printf "%.2f", ((b + c) > 0 ? a / (b + c) : 0) }'; }

# bare DB ORDER: loads the rows of DB/master.db (exported in ORDER) into a bare table; sets
# bare_load and bare_group (seconds).
bare() {
    sqlite3 -csv "$1/master.db" "SELECT merchant_id, order_id, amount_cents, event_time_ms,
        partition, offset, raw FROM orders ORDER BY $2" >"$dir/rows.csv"
    rm -f "$dir/bare.db"*
    sqlite3 "$dir/bare.db" "PRAGMA journal_mode=WAL; CREATE TABLE orders(merchant_id TEXT NOT
        NULL, order_id TEXT NOT NULL, amount_cents INTEGER NOT NULL, event_time_ms INTEGER NOT
        NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL, raw BLOB,
        PRIMARY KEY(merchant_id, order_id)) WITHOUT ROWID" >/dev/null
    t0=$(now)
    sqlite3 "$dir/bare.db" -cmd "PRAGMA synchronous=NORMAL" -cmd "PRAGMA cache_size=-262144" \
        ".import --csv $dir/rows.csv orders"
    t1=$(now)
    sqlite3 "$dir/bare.db" "PRAGMA cache_size=-262144; SELECT count(*) FROM (SELECT merchant_id,
        count(*), sum(amount_cents) FROM orders GROUP BY merchant_id)" >/dev/null
    t2=$(now)
    bare_load=$(secs "$t0" "$t1")
    bare_group=$(secs "$t1" "$t2")
    rm -f "$dir/rows.csv" "$dir/bare.db"*
}

"$BIN/lambda-devkafka" --partitions 64 --bootstrap-file "$dir/bs" >"$dir/dk.out" 2>"$dir/dk.err" &
dk=$!
i=0
while [ ! -s "$dir/bs" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
bs=$(cat "$dir/bs")

has() { case " $PHASES " in *" $1 "*) return 0 ;; esac; return 1; }
# median of the numbers on stdin
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { tr ' ' '\n' | sed -n "s/^$1=//p" | head -1; }

if has import; then
echo "batch import: generating $IMPORT_N orders as NDJSON"
"$BIN/lambda-gen" --stdout --count "$IMPORT_N" --merchants 10000 --seed 2 \
    --start-time 2026-11-01T00:00:00Z --time-step 100ms --log-level warn >"$dir/orders.ndjson"
t0=$(now)
"$BIN/lambda-batch" import --data-dir "$dir/i" --log-level warn "$dir/orders.ndjson" >/dev/null
t1=$(now)
"$BIN/lambda-batch" run --data-dir "$dir/i" --brokers "$bs" --log-level warn >/dev/null
t2=$(now)
rm -f "$dir/orders.ndjson"
n=$(sqlite3 "$dir/i/master.db" "SELECT count(*) FROM orders")
imp=$(secs "$t0" "$t1")
rec=$(secs "$t1" "$t2")
tot=$(secs "$t0" "$t2")
bare "$dir/i" offset
echo "batch import: orders=$n import_s=$imp recompute_s=$rec total_s=$tot orders_per_s=$(rate "$n" "$tot")"
echo "batch import: bare_load_s=$bare_load bare_group_by_s=$bare_group ratio=$(ratio "$tot" "$bare_load" "$bare_group") (goal <= 2)"
rm -rf "$dir/i"
fi

if has kafka; then
echo "batch kafka: producing $KAFKA_N orders (lz4, 64 partitions)"
"$BIN/lambda-gen" --brokers "$bs" --count "$KAFKA_N" --merchants 10000 --seed 1 \
    --start-time 2026-11-21T00:00:00Z --log-level warn
t0=$(now)
"$BIN/lambda-batch" run --data-dir "$dir/k" --brokers "$bs" --log-level warn >"$dir/run.out"
t1=$(now)
n=$(sqlite3 "$dir/k/master.db" "SELECT count(*) FROM orders")
lost=$(sqlite3 "$dir/k/master.db" "SELECT coalesce(max(value), 0) FROM counters WHERE name='deleted_offsets'")
[ "$lost" -eq 0 ] || echo "batch kafka: note: Kafka had already dropped $lost offsets"
tot=$(secs "$t0" "$t1")
bare "$dir/k" "partition, offset"
echo "batch kafka: orders=$n ingest_and_recompute_s=$tot orders_per_s=$(rate "$n" "$tot") ($(cat "$dir/run.out"))"
echo "batch kafka: bare_load_s=$bare_load bare_group_by_s=$bare_group ratio=$(ratio "$tot" "$bare_load" "$bare_group") (goal <= 2)"
rm -rf "$dir/k"
fi

if has history; then
    # A Kafka of its own: the kafka phase's orders are not part of this history.
    "$BIN/lambda-devkafka" --partitions 16 --bootstrap-file "$dir/bs2" >"$dir/dk2.out" 2>"$dir/dk2.err" &
    dk2=$!
    i=0
    while [ ! -s "$dir/bs2" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    bs2=$(cat "$dir/bs2")
    biggest=0
    for n in $HISTORY; do [ "$n" -gt "$biggest" ] && biggest=$n; done
    echo "batch history: generating $biggest orders over 60 days (10,000 merchants)"
    "$BIN/lambda-gen" --stdout --count "$biggest" --merchants 10000 --seed 5 \
        --start-time 2026-09-01T00:00:00Z --time-step $((60 * 86400000 / biggest)) \
        --log-level warn >"$dir/history.ndjson"
    # The history is the first N lines, so a smaller one spans fewer days: take every k-th line
    # instead, so each history covers the same 60 days.
    for n in $HISTORY; do
        awk -v k=$((biggest / n)) 'NR % k == 0' "$dir/history.ndjson" >"$dir/h$n.ndjson"
        "$BIN/lambda-batch" import --data-dir "$dir/h$n" --log-level warn "$dir/h$n.ndjson" >/dev/null
        rm -f "$dir/h$n.ndjson"
        "$BIN/lambda-batch" run --data-dir "$dir/h$n" --brokers "$bs2" --log-level warn >/dev/null
    done
    rm -f "$dir/history.ndjson"
    for r in $(seq 1 "$REPS"); do
        "$BIN/lambda-gen" --brokers "$bs2" --count 5000 --merchants 10000 \
            --seed $((100 + r)) --start-time "2026-10-31T0$r:00:00Z" --late-pct 10 \
            --late-days 60 --log-level warn
        for n in $HISTORY; do
            # -readonly: a closing writer connection would checkpoint and delete the log the
            # batch keeps between runs (as it is kept whenever lambda-serve has the file open).
            before=$(sqlite3 -readonly "$dir/h$n/batch.db" "PRAGMA page_count")
            t0=$(now)
            "$BIN/lambda-batch" run --data-dir "$dir/h$n" --brokers "$bs2" \
                --log-level warn >"$dir/run.out"
            t1=$(now)
            after=$(sqlite3 -readonly "$dir/h$n/batch.db" "PRAGMA page_count")
            echo "$(secs "$t0" "$t1")" >>"$dir/inc$n"
            echo $((after - before)) >>"$dir/pages$n"
            field buckets_rewritten <"$dir/run.out" >>"$dir/buckets$n"
            echo "batch history: round $r history=$n $(cat "$dir/run.out")"
        done
    done
    for r in $(seq 1 "$REPS"); do
        t0=$(now)
        "$BIN/lambda-batch" run --full --data-dir "$dir/h$biggest" --brokers "$bs2" \
            --log-level warn >"$dir/run.out"
        t1=$(now)
        echo "$(secs "$t0" "$t1")" >>"$dir/full"
        echo "batch history: full history=$biggest $(cat "$dir/run.out")"
        # The bare GROUP BYs read the rows the full run just read: it merged the recent level
        # into orders_base, so that table holds them all (the view `orders` would add a UNION
        # ALL the full run does not pay).
        t0=$(now)
        sqlite3 "$dir/h$biggest/master.db" "PRAGMA cache_size=-262144; SELECT count(*) FROM
            (SELECT merchant_id, count(*), sum(amount_cents) FROM orders_base GROUP BY merchant_id)" >/dev/null
        t1=$(now)
        sqlite3 "$dir/h$biggest/master.db" "PRAGMA cache_size=-262144; SELECT count(*) FROM
            (SELECT merchant_id, event_time_ms / 3600000, count(*), sum(amount_cents) FROM orders_base
            GROUP BY 1, 2)" >/dev/null
        t2=$(now)
        echo "$(secs "$t0" "$t1")" >>"$dir/bare_m"
        echo "$(secs "$t1" "$t2")" >>"$dir/bare_h"
    done
    smallest=$biggest
    for n in $HISTORY; do [ "$n" -lt "$smallest" ] && smallest=$n; done
    for n in $HISTORY; do
        echo "batch history: incremental history=$n median_s=$(median <"$dir/inc$n")" \
            "pages_per_version=$(median <"$dir/pages$n") buckets_rewritten=$(median <"$dir/buckets$n")"
    done
    inc_small=$(median <"$dir/inc$smallest")
    inc_big=$(median <"$dir/inc$biggest")
    full=$(median <"$dir/full")
    bm=$(median <"$dir/bare_m")
    bh=$(median <"$dir/bare_h")
    echo "batch history: full history=$biggest median_s=$full bare_group_by_merchant_s=$bm" \
        "bare_group_by_merchant_hour_s=$bh"
    echo "batch history: incremental $biggest / $smallest = $(ratio "$inc_big" "$inc_small" 0) (goal <= 1.5)"
    echo "batch history: incremental / full at $biggest = $(ratio "$inc_big" "$full" 0) (goal <= 0.10)"
    echo "batch history: full / (bare group bys) = $(ratio "$full" "$bm" "$bh") (goal <= 2)"
    rm -rf "$dir"/h*
fi
