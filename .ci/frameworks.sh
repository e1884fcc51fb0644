#!/usr/bin/env bash
# The frameworks stage: e2e/frameworks, a module of its own, runs gin,
# echo, chi, x/net h2c, net/http h2c and connect-go under shutdown through
# a shutdown with requests and streams in flight, and sends a gin program a
# real SIGTERM. No -race: the library's own race tests run in .ci/run.
# Prints the table of figures (-v).
set -euo pipefail
cd "$(dirname "$0")/../e2e/frameworks"
T0=$(date +%s)
trap 'echo "frameworks.sh took $(( $(date +%s) - T0 ))s"' EXIT
go vet ./...
go test -count=1 -v ./... | grep -v '^=== RUN'
