#!/usr/bin/env bash
# What the restart tests need before `go test -race`: systemd-socket-activate
# (package systemd), with which TestSocketActivationUpgradeKeepsSystemdSocket
# starts the service as a socket unit would. Installs it only if missing.
set -euo pipefail
T0=$(date +%s)
if ! command -v systemd-socket-activate >/dev/null; then
	SUDO=
	[ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	$SUDO apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
command -v systemd-socket-activate >/dev/null || { echo "restarts.sh: systemd-socket-activate still missing" >&2; exit 1; }
echo "restarts.sh took $(( $(date +%s) - T0 ))s"
