#!/usr/bin/env bash
# The services stage: examples/postgres (pgx against a real PostgreSQL) and
# examples/queue (nats.go against a real nats-server -js), each a module of
# its own. Installs Debian's postgresql and nats-server when missing (one
# apt-get update, only then). CI=true, so a missing server fails the tests
# instead of skipping them. No -race: the concurrency under test is the
# library's, which .ci/run tests with -race; these build the program once
# per test binary, signal it and print the figures (-v).
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
need=()
if ! command -v postgres >/dev/null && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
	need+=(postgresql)
fi
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
	need+=(nats-server)
fi
if [ ${#need[@]} -gt 0 ]; then
	SUDO=
	[ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export CI=true
for mod in examples/postgres examples/queue; do
	echo "--- $mod"
	(cd "$mod" && go vet ./... && go test -count=1 -v ./... | grep -v '^=== ')
done
echo "services.sh took $(( $(date +%s) - T0 ))s"
