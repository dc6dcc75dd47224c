#!/bin/sh
# make bench: runs every bench/<name>.sh in turn; each prints its own figures. Benchmarks
# measure, they never fail the build on a figure.
set -u
cd "$(dirname "$0")/.."
found=0
for b in bench/*.sh; do
    [ "$b" = bench/run.sh ] && continue
    found=1
    echo "== $b"
    sh "$b" || echo "bench: $b failed (exit $?)"
done
[ "$found" -eq 1 ] || echo "bench: no benchmarks yet"
