#!/usr/bin/env bash
# shutdowngrpc is a module of its own that users import (grpc-go stays out
# of the library's go.mod): vet it and run its tests and Examples against
# real grpc-go servers on loopback, with -race, since its interceptor has
# concurrency of its own (a stream's context ended from m.Context()).
# examples/grpc, which uses it, runs in .ci/e2e.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
s=$(date +%s)
cd shutdowngrpc
go vet ./...
go test -race -count=1 ./...
echo "grpc stage: $(( $(date +%s) - s ))s"
