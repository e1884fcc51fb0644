#!/usr/bin/env bash
# sizes.sh prints the size of the minimal HTTP service (cmd/*) built with
# each library, stripped (-trimpath -ldflags='-s -w') and not, with the
# difference to the standard-library baseline, and the modules each pulls in.
# Run it from anywhere: bash bench/sizes.sh
set -euo pipefail
cd "$(dirname "$0")"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
variants=(stdlib handrolled oklog fx shutdown)

for v in "${variants[@]}"; do
	go build -trimpath -ldflags='-s -w' -o "$out/$v.stripped" "./cmd/$v"
	go build -o "$out/$v.full" "./cmd/$v"
done

size() { stat -c %s "$1"; }
delta() { # bytes, and KiB with a sign
	local d=$(($1 - $2))
	awk -v d="$d" 'BEGIN { printf "%+d (%+.1f KiB)", d, d / 1024 }'
}
base_s=$(size "$out/stdlib.stripped")
base_f=$(size "$out/stdlib.full")

echo "$(go version), GOOS=$(go env GOOS) GOARCH=$(go env GOARCH)"
echo
printf '| %-10s | %16s | %-26s | %16s | %-26s |\n' variant "stripped (bytes)" "vs stdlib" "full (bytes)" "vs stdlib"
printf '|%s|%s|%s|%s|%s|\n' ------------ ------------------ ---------------------------- ------------------ ----------------------------
for v in "${variants[@]}"; do
	s=$(size "$out/$v.stripped")
	f=$(size "$out/$v.full")
	printf '| %-10s | %16d | %-26s | %16d | %-26s |\n' "$v" "$s" "$(delta "$s" "$base_s")" "$f" "$(delta "$f" "$base_f")"
done

echo
echo "Modules in each build (go list -deps), besides the standard library:"
for v in "${variants[@]}"; do
	mods=$(go list -deps -f '{{with .Module}}{{.Path}}{{end}}' "./cmd/$v" | sort -u | grep -v '^github.com/gracefulgo/shutdown/bench$' || true)
	printf '  %-10s %s\n' "$v:" "$(echo $mods)"
done
