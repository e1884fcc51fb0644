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

staticcheck_all() {
	local bin
	bin=$(mktemp -d)
	GOBIN="$bin" go install "$STATICCHECK"
	"$bin/staticcheck" -version
	"$bin/staticcheck" -checks "$CHECKS" ./...
	# Examples and other sub-modules, each in its own module.
	local mod
	for mod in $(find . -mindepth 2 -name go.mod -not -path './.git/*' | sort); do
		echo "staticcheck in $(dirname "$mod")"
		(cd "$(dirname "$mod")" && "$bin/staticcheck" -checks "$CHECKS" ./...)
	done
	rm -rf "$bin"
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

step "staticcheck" staticcheck_all
step "coverage (root package, at least ${MIN_COVERAGE}%)" coverage
step "real-signal tests, -race -count=3" go test -race -count=3 -run 'TestReal' .
step "fuzz FuzzShutdown 30s" go test -run '^$' -fuzz '^FuzzShutdown$' -fuzztime 30s .
