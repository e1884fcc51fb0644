#!/usr/bin/env bash
# Quality gates (issue 7): staticcheck, coverage of the root package, the
# real-signal tests again under -race, and a short fuzzing run. Run from the
# repository root, as .ci/run does; each step prints its time.
set -euo pipefail
cd "$(dirname "$0")/.."

# staticcheck release that supports Go 1.26; `go install pkg@version` fetches
# it through the module proxy without touching any go.mod.
STATICCHECK=honnef.co/go/tools/cmd/staticcheck@v0.8.2
# The default checks, plus the doc-comment ones: a package comment, and doc
# comments that start with the name they document.
CHECKS=inherit,ST1000,ST1020,ST1021,ST1022
MIN_COVERAGE=${MIN_COVERAGE:-90}

step() { # step NAME COMMAND...
	local s=$(date +%s)
	echo "--- quality: $1"
	shift
	"$@"
	echo "--- quality: $(( $(date +%s) - s ))s"
}

# staticcheck_all checks the root module and every sub-module. It runs in a
# context where set -e does not apply, so it checks each status itself.
staticcheck_all() {
	local bin rc=0 mod
	bin=$(mktemp -d)
	GOBIN="$bin" go install "$STATICCHECK" || return 1
	"$bin/staticcheck" -version
	"$bin/staticcheck" -checks "$CHECKS" ./... || rc=1
	for mod in $(find . -mindepth 2 -name go.mod -not -path './.git/*' | sort); do
		echo "staticcheck in $(dirname "$mod")"
		(cd "$(dirname "$mod")" && "$bin/staticcheck" -checks "$CHECKS" ./...) || rc=1
	done
	rm -rf "$bin"
	return $rc
}

coverage() {
	local out
	out=$(mktemp)
	go test -count=1 -coverprofile="$out" .
	local line
	line=$(go tool cover -func="$out" | tail -1)
	rm -f "$out"
	echo "$line"
	local pct=${line##*[[:space:]]}
	pct=${pct%\%}
	if ! awk -v p="$pct" -v min="$MIN_COVERAGE" 'BEGIN { exit !(p >= min) }'; then
		echo "coverage ${pct}% is below ${MIN_COVERAGE}%"
		return 1
	fi
}

step "coverage (root package, at least ${MIN_COVERAGE}%)" coverage
step "real-signal tests, -race -count=3" go test -race -count=3 -run 'TestReal' .

# staticcheck (mostly building itself and type-checking) runs beside the
# fuzzer (mostly building the instrumented test binary, then 30s of wall
# time): on 2 cores that saves about a minute of a cold run. Its output is
# printed when it ends.
sc_log=$(mktemp)
(
	s=$(date +%s)
	rc=0
	staticcheck_all >"$sc_log" 2>&1 || rc=$?
	echo "--- quality: staticcheck took $(($(date +%s) - s))s (beside the fuzzer)" >>"$sc_log"
	exit $rc
) &
sc_pid=$!
trap 'kill "$sc_pid" 2>/dev/null || true; rm -f "$sc_log"' EXIT
step "fuzz FuzzShutdown 30s" go test -run '^$' -fuzz '^FuzzShutdown$' -fuzztime 30s .
echo "--- quality: staticcheck"
sc_rc=0
wait "$sc_pid" || sc_rc=$?
cat "$sc_log"
if [ "$sc_rc" -ne 0 ]; then
	echo "staticcheck failed"
	exit 1
fi
