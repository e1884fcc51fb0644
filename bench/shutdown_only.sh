#!/usr/bin/env bash
# shutdown_only.sh reproduces BENCHMARKS.md's "The shutdown alone" table:
# BenchmarkShutdownOnly (trigger to Wait, New and registration untimed) and,
# beside it in the same run, BenchmarkNoopHooks (the whole op) for 100 and
# 10,000 no-op hooks, every library. Three rounds of -count=1 at
# -benchtime=20x (about 2 minutes on 2 cores), then benchstat's ratios to
# the hand-rolled loop. Raw output goes to bench/results/shutdown-only*.txt.
# Run from anywhere: bash bench/shutdown_only.sh
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p results
machine=results/shutdown-only-machine.txt
out=results/shutdown-only.txt
{
	echo "nproc: $(nproc)"
	grep -m1 'model name' /proc/cpuinfo
	go version
	echo "start: $(date -u +%T)"
} | tee "$machine"
go test -c -o results/bench.test .
: >"$out"
for i in $(seq "${COUNT:-3}"); do
	echo "load at round $i: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$machine"
	./results/bench.test -test.run '^$' -test.benchtime 20x \
		-test.bench 'ShutdownOnly|NoopHooks/lib=.*/n=(100|10000)$' | tee -a "$out"
done
rm results/bench.test
echo "end: $(date -u +%T)" | tee -a "$machine"
go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da -col /lib "$out" | tee results/shutdown-only-benchstat.txt
