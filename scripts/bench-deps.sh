#!/bin/sh
# What bench/authz_bench.py needs beyond the test tools: Go and the Debian-packaged Go
# libraries the peer sidecar (../shared/peers/go-sidecar) builds from, so no module proxy
# is needed. Installs only what is missing; needs root or sudo.
set -eu
missing=""
command -v go >/dev/null 2>&1 || missing="$missing golang-go"
[ -d /usr/share/gocode/src/github.com/coreos/go-oidc ] || missing="$missing golang-github-coreos-go-oidc-dev"
[ -d /usr/share/gocode/src/gopkg.in/square/go-jose.v2 ] || missing="$missing golang-gopkg-square-go-jose.v2-dev"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "bench-deps: missing Debian packages:$missing (no root or sudo); the Go rows are left out" >&2
    exit 0
fi
echo "bench-deps: installing Debian packages:$missing" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
