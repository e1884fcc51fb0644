#!/usr/bin/env bash
# examples/sqlite is a module of its own (modernc.org/sqlite stays out of the
# library's go.mod): vet it and run its test, which builds the program, sends
# it SIGTERM mid-stream and checks the VACUUM INTO backup. No -race: the
# SQLite build is slow under it and the concurrency under test is the
# library's, which the root stage runs with -race.
set -euo pipefail
s=$(date +%s)
cd examples/sqlite
go vet ./...
go test -count=1 ./...
echo "sqlite stage: $(( $(date +%s) - s ))s"
