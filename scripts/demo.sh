#!/bin/sh
# The quickstart's main job on the embedded default: file keystore and a local
# JWKS file, no server. The passphrase below is for this demo only; real
# deployments set ROTATOR_KEYSTORE_PASSPHRASE (or passphrase_file) from a secret.
set -eu
ROTATOR="${ROTATOR_BIN:-.venv/bin/rotator}"
DEMO_DIR="${DEMO_DIR:-$PWD/demo}"
export ROTATOR_KEYSTORE="file://$DEMO_DIR/keystore"
export ROTATOR_PUBLISH="file://$DEMO_DIR/public"
export ROTATOR_ISSUER="https://auth.demo.invalid"
export ROTATOR_KEYSTORE_PASSPHRASE="${ROTATOR_KEYSTORE_PASSPHRASE:-demo-only-passphrase}"
mkdir -p "$DEMO_DIR"

echo "== rotator rotate (one reconcile step)"
$ROTATOR rotate
echo
echo "== rotator status"
$ROTATOR status
echo
echo "== published JWKS: $DEMO_DIR/public/jwks.json"
$ROTATOR jwks
echo
echo "== a token signed with the active key"
TOKEN=$($ROTATOR sign --sub alice --aud demo-api --ttl 10m --claim role=reader)
echo "$TOKEN"
echo
echo "== verified against the published JWKS"
$ROTATOR verify "$TOKEN" --jwks-url "file://$DEMO_DIR/public/jwks.json" --aud demo-api --iss "$ROTATOR_ISSUER"
