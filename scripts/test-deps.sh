#!/bin/sh
# Tools the test suite needs beyond Python packages, from Debian's archive:
# systemd-analyze (package systemd) to verify and score the systemd units;
# faketime (package faketime) to run a rotator process with a wrong clock;
# wrk (package wrk), the load generator of bench/service_bench.py;
# redis-server (package redis-server), the revocation store's server in tests;
# valgrind (package valgrind), whose callgrind counts instructions in `make bench`;
# promtool (package prometheus), which checks and unit-tests the shipped alert rules.
# Installs only what is missing; needs root or sudo when something is.
set -eu

missing=""
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
command -v faketime >/dev/null 2>&1 || missing="$missing faketime"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v valgrind >/dev/null 2>&1 || missing="$missing valgrind"
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"

[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "test-deps: missing Debian packages:$missing (no root or sudo to install them); their tests will fail" >&2
    exit 0
fi
echo "test-deps: installing Debian packages:$missing" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
