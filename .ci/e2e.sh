#!/usr/bin/env bash
# The Kubernetes stage: the manifests (examples/kubernetes), GRPCServer
# against a real grpc-go server (examples/grpc), the streams example
# (examples/streams), and the e2e tests: the load tests of
# examples/httpserver and the long-lived connections (WebSocket, SSE with
# the npm eventsource package, gRPC streams, HTTP/2 with Go's client and
# h2load) through a rolling update, each a module of its own. Without
# -race: they test the library as deployed; its race tests run in .ci/run.
# The e2e tests print their figures (-v).
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
	SUDO=
	[ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "--- npm ci (e2e/node: the eventsource package)"
(cd e2e/node && npm ci --no-audit --no-fund --loglevel=error)
for mod in examples/kubernetes examples/grpc examples/streams; do
	echo "--- $mod"
	(cd "$mod" && go vet ./... && go test -count=1 ./...)
done
echo "--- e2e"
(cd e2e && go vet ./... && go test -count=1 -v ./... | grep -v '^=== RUN')
echo "e2e.sh took $(( $(date +%s) - T0 ))s"
