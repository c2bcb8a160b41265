#!/bin/sh
# The quickstart's main job on the embedded default: file keystore and a local
# JWKS file, no server. The passphrase below is for this demo only; real
# deployments set ROTATOR_KEYSTORE_PASSPHRASE (or passphrase_file) from a secret.
set -eu
ROTATOR=.venv/bin/rotator
export ROTATOR_KEYSTORE="file://$PWD/demo/keystore"
export ROTATOR_PUBLISH="file://$PWD/demo/public"
export ROTATOR_ISSUER="https://auth.demo.invalid"
export ROTATOR_KEYSTORE_PASSPHRASE="${ROTATOR_KEYSTORE_PASSPHRASE:-demo-only-passphrase}"
mkdir -p demo

echo "== rotator rotate (one reconcile step)"
$ROTATOR rotate
echo
echo "== rotator status"
$ROTATOR status
echo
echo "== published JWKS: $PWD/demo/public/jwks.json"
$ROTATOR jwks
echo
echo "== a token signed with the active key"
TOKEN=$($ROTATOR sign --sub alice --aud demo-api --ttl 10m --claim role=reader)
echo "$TOKEN"
echo
echo "== verified against the published JWKS"
$ROTATOR verify "$TOKEN" --jwks-url "file://$PWD/demo/public/jwks.json" --aud demo-api --iss "$ROTATOR_ISSUER"
