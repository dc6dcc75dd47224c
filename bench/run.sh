#!/bin/sh
echo "bench: no benchmarks built yet"
