#!/bin/sh
# Tools the test suite needs beyond Python packages, from Debian's archive:
# systemd-analyze (package systemd) to verify and score the systemd units;
# faketime (package faketime) to run a rotator process with a wrong clock;
# wrk (package wrk), the load generator of bench/service_bench.py;
# redis-server (package redis-server), the revocation store's server in tests;
# nginx (package nginx), in front of `rotator authz` in its tests (auth_request);
# valgrind (package valgrind), whose callgrind counts instructions in `make bench`;
# promtool (package prometheus), which checks and unit-tests the shipped alert rules;
# node and npm (packages nodejs, npm), which run Node's jose, an interop oracle, installed
# from the npm registry into tests/node (pinned by its package-lock.json).
# Installs only what is missing; needs root or sudo for Debian packages.
set -eu

node_jose() {
    [ -d tests/node/node_modules/jose ] && return 0
    command -v npm >/dev/null 2>&1 || { echo "test-deps: no npm; the Node jose interop tests will fail" >&2; return 0; }
    echo "test-deps: installing Node's jose into tests/node" >&2
    (cd tests/node && npm ci --no-audit --no-fund --silent)
}

missing=""
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
command -v faketime >/dev/null 2>&1 || missing="$missing faketime"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v valgrind >/dev/null 2>&1 || missing="$missing valgrind"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"

if [ -z "$missing" ]; then
    node_jose
    exit 0
fi

if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "test-deps: missing Debian packages:$missing (no root or sudo to install them); their tests will fail" >&2
    node_jose
    exit 0
fi
echo "test-deps: installing Debian packages:$missing" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
node_jose
