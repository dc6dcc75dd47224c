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
set -eu
cd "$(dirname "$0")/.."
BIN=${LAMBDA_BIN:-bin}
IMPORT_N=${BATCH_BENCH_IMPORT:-10000000}
KAFKA_N=${BATCH_BENCH_KAFKA:-1000000}
dir=$(mktemp -d "${TMPDIR:-/tmp}/lambda-bench-batch-XXXXXX")
dk=""
cleanup() {
    [ -n "$dk" ] && kill "$dk" 2>/dev/null && wait "$dk" 2>/dev/null
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
