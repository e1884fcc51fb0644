#!/usr/bin/env bash
# The Kubernetes stage: the manifests (examples/kubernetes), GRPCServer
# against a real grpc-go server (examples/grpc) and the load tests of
# examples/httpserver through a rolling update (e2e), each a module of its
# own. Without -race: they test the library as deployed; its race tests run
# in .ci/run. The e2e tests print their figures (-v).
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
if ! command -v wrk >/dev/null; then
	SUDO=
	[ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	$SUDO apt-get install -y -qq wrk >/dev/null
fi
for mod in examples/kubernetes examples/grpc; do
	echo "--- $mod"
	(cd "$mod" && go vet ./... && go test -count=1 ./...)
done
echo "--- e2e"
(cd e2e && go vet ./... && go test -count=1 -v ./... | grep -v '^=== RUN')
echo "e2e.sh took $(( $(date +%s) - T0 ))s"
