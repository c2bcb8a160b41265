#!/bin/sh
# The quickstart's main job on the embedded default: file keystore and a local JWKS file,
# no server. It runs the daemon with a fast demo policy (a key every 6 s; the default is
# 15 minutes) so rotation can be watched: keys created, activated and retired, a token
# signed before a rotation verifying after it; then, when a redis-server is installed, a
# revocation taking effect. The passphrase below is for this demo only; real deployments
# take it from a secret (see README.md).
set -eu
ROTATOR="${ROTATOR_BIN:-.venv/bin/rotator}"
PY="$(dirname "$ROTATOR")/python"
DEMO_DIR="${DEMO_DIR:-$PWD/demo}"
export ROTATOR_KEYSTORE="file://$DEMO_DIR/keystore"
export ROTATOR_PUBLISH="file://$DEMO_DIR/public"
export ROTATOR_ISSUER="https://auth.demo.invalid"
export ROTATOR_KEYSTORE_PASSPHRASE="${ROTATOR_KEYSTORE_PASSPHRASE:-demo-only-passphrase}"
FAST="--rotation-period 6s --max-age 3s --token-lifetime 10s --leeway 1s --retirement-window 14s --private-key-grace 2s"
JWKS="file://$DEMO_DIR/public/jwks.json"
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"

DAEMON=""
REDIS=""
cleanup() {
    [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
    [ -n "$REDIS" ] && kill "$REDIS" 2>/dev/null && wait "$REDIS" 2>/dev/null
    return 0
}
trap cleanup EXIT INT TERM

active() {  # the active kid, or nothing
    # shellcheck disable=SC2086
    $ROTATOR status --json $FAST 2>/dev/null | "$PY" -c '
import json, sys
try:
    doc = json.load(sys.stdin)
except ValueError:  # no key set yet
    doc = {"keys": []}
print(next((k["kid"] for k in doc["keys"] if k["state"] == "active"), ""))' || true
}

wait_for_new_active() {  # $1: the kid active now; prints the next one
    for _ in $(seq 1 100); do
        now="$(active)"
        if [ -n "$now" ] && [ "$now" != "$1" ]; then echo "$now"; return 0; fi
        sleep 0.2
    done
    echo "demo: no rotation within 20 s; see $DEMO_DIR/daemon.log" >&2
    exit 1
}

START=$("$PY" -c 'import time; print(time.time())')
elapsed() { "$PY" -c "import time; print(f'{time.time() - $START:.1f}')"; }

echo "== rotator run: the daemon, with a demo policy (a new key every 6 s)"
# shellcheck disable=SC2086
$ROTATOR run $FAST --max-sleep 1s --log-format human > "$DEMO_DIR/daemon.log" 2>&1 &
DAEMON=$!
FIRST="$(wait_for_new_active "")"
echo "first key active after $(elapsed) s: $FIRST"
echo
echo "== a token signed now, with the active key"
TOKEN=$($ROTATOR sign --sub alice --aud demo-api --ttl 10s --claim role=reader)
echo "$TOKEN" | cut -c1-72
echo "..."
SECOND="$(wait_for_new_active "$FIRST")"
echo
echo "== first rotation after $(elapsed) s: $SECOND signs now; $FIRST is retired, still published"
echo "== the token signed before the rotation, verified against the JWKS published after it"
$ROTATOR verify "$TOKEN" --jwks-url "$JWKS" --aud demo-api --iss "$ROTATOR_ISSUER"
THIRD="$(wait_for_new_active "$SECOND")"
echo
echo "== second rotation after $(elapsed) s: $THIRD signs now"
# shellcheck disable=SC2086
$ROTATOR status $FAST
echo
echo "== published JWKS: $DEMO_DIR/public/jwks.json"
$ROTATOR jwks
kill "$DAEMON" && wait "$DAEMON" 2>/dev/null || true
DAEMON=""
echo
echo "== daemon log (events)"
grep -E "key_created|key_activated|key_retired|private_key_destroyed|key_removed" "$DEMO_DIR/daemon.log" | head -20 || true

echo
if ! command -v redis-server >/dev/null 2>&1; then
    echo "== revocation: skipped (no redis-server installed; Debian's package redis-server)"
    exit 0
fi
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$PORT" --save "" --appendonly no --daemonize no --dir "$DEMO_DIR" > "$DEMO_DIR/redis.log" 2>&1 &
REDIS=$!
export ROTATOR_REVOCATION_URL="redis://127.0.0.1:$PORT/0"
for _ in $(seq 1 50); do
    "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null && break
    sleep 0.1
done
echo "== revocation through redis at 127.0.0.1:$PORT"
BOB=$($ROTATOR sign --sub bob --aud demo-api --ttl 10s)
check() {
    "$PY" - "$1" "$DEMO_DIR/public/jwks.json" <<'EOF'
import sys, time
from rotator.revocation import RevocationStore
from rotator.verifier import InvalidToken, parse_jwks, verify_token

token, jwks = sys.argv[1], sys.argv[2]
with open(jwks) as fh:
    keys = parse_jwks(fh.read())
claims = verify_token(token, keys, now=time.time(), audience="demo-api", issuer="https://auth.demo.invalid")
store = RevocationStore.from_url(__import__("os").environ["ROTATOR_REVOCATION_URL"])
try:
    store.replica().check(claims)  # the rule every verifier with revocations= applies
    print(f"  {claims['sub']}'s token: accepted")
except InvalidToken as e:
    print(f"  {claims['sub']}'s token: rejected: {e}")
finally:
    store.close()
EOF
}
check "$BOB"
echo "$ rotator deny-token <bob's token>"
$ROTATOR deny-token "$BOB"
check "$BOB"
