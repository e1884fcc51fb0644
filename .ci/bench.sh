#!/usr/bin/env bash
# bench.sh keeps the comparison module (bench/) from rotting: it vets and
# builds it, and runs its tests and every benchmark once (-benchtime=1x).
# The figures in BENCHMARKS.md come from a proper run, not from this one.
# Run from the repository root.
set -euo pipefail
s=$(date +%s)
cd bench
gofmt_out=$(gofmt -l .)
if [ -n "$gofmt_out" ]; then
	echo "gofmt needed:"
	echo "$gofmt_out"
	exit 1
fi
go vet ./...
go build ./...
go test -count=1 -run . -bench . -benchtime=1x ./...
echo "bench.sh: $(($(date +%s) - s))s"
