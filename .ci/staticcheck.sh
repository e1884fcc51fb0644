#!/usr/bin/env bash
# staticcheck on the root module and every sub-module, with the default
# checks plus the doc-comment ones (a package comment, doc comments that
# start with the name they document). .ci/run starts it in the background
# once the race tests have passed: it is mostly compiling and type-checking
# the sub-modules' dependencies, and the stages beside it (PostgreSQL, NATS
# and the rollouts) spend much of their time waiting on timers.
set -uo pipefail
cd "$(dirname "$0")/.."
s=$(date +%s)
# A release that supports Go 1.26; `go install pkg@version` fetches it
# through the module proxy without touching any go.mod.
STATICCHECK=honnef.co/go/tools/cmd/staticcheck@v0.8.2
CHECKS=inherit,ST1000,ST1020,ST1021,ST1022
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN="$bin" go install "$STATICCHECK" || exit 1
"$bin/staticcheck" -version
rc=0
"$bin/staticcheck" -checks "$CHECKS" ./... || rc=1
for mod in $(find . -mindepth 2 -name go.mod -not -path './.git/*' -not -path '*/node_modules/*' | sort); do
	echo "staticcheck in $(dirname "$mod")"
	(cd "$(dirname "$mod")" && "$bin/staticcheck" -checks "$CHECKS" ./...) || rc=1
done
echo "staticcheck took $(( $(date +%s) - s ))s"
exit $rc
