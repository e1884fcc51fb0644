#!/usr/bin/env bash
# run.sh reproduces BENCHMARKS.md: the machine, the Go version and load, the
# benchmarks (count 6, about 6 minutes on 2 cores) with benchstat's ratios to
# the hand-rolled loop, the stuck-hook table and the binary sizes. Raw output
# goes to bench/results/. Run from anywhere: bash bench/run.sh
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p results
{
	echo "nproc: $(nproc)"
	grep -m1 'model name' /proc/cpuinfo
	go version
	echo "load before: $(uptime)"
} | tee results/machine.txt
# Six rounds of -count=1 rather than one -count=6, so that each library is
# sampled at six moments spread over the run: on a shared machine a burst of
# load then widens every library's spread instead of biasing one of them.
go test -c -o results/bench.test .
: >results/bench.txt
for i in $(seq "${COUNT:-6}"); do
	echo "load at round $i: $(cut -d' ' -f1-3 /proc/loadavg)" >>results/machine.txt
	./results/bench.test -test.run '^$' -test.bench . -test.benchmem | tee -a results/bench.txt
done
rm results/bench.test
grep -m1 '^cpu:' results/bench.txt | sed 's/^cpu:/go test cpu:/' >>results/machine.txt
echo "load after: $(uptime)" | tee -a results/machine.txt
go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da -col /lib results/bench.txt | tee results/benchstat.txt
go test -count=1 -run TestStuckHook -v . | tee results/stuck.txt
bash sizes.sh | tee results/sizes.txt
