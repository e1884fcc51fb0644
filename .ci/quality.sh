#!/usr/bin/env bash
# Quality gates: coverage of the root package, the real-signal tests again
# under -race, and a short fuzzing run (staticcheck is .ci/staticcheck.sh). Run from the
# repository root, as .ci/run does; each step prints its time.
set -euo pipefail
cd "$(dirname "$0")/.."

MIN_COVERAGE=${MIN_COVERAGE:-90}

step() { # step NAME COMMAND...
	local s=$(date +%s)
	echo "--- quality: $1"
	shift
	"$@"
	echo "--- quality: $(( $(date +%s) - s ))s"
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

step "fuzz FuzzShutdown 30s" go test -run '^$' -fuzz '^FuzzShutdown$' -fuzztime 30s .
