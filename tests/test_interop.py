"""Interop matrix with independent JOSE implementations as oracles: jwcrypto, joserfc, PyJWT
and Node's jose (panva/jose, from the npm registry), for every algorithm rotator signs with.

rotator's tokens verify in each of them; tokens each of them signs with a rotator key verify
in rotator's token layer; rotator's kid is jwcrypto's RFC 7638 thumbprint; the published
JWKS loads as a jwcrypto JWKSet."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import joserfc.jwk
import joserfc.jwt
import jwcrypto.jwk
import jwcrypto.jwt
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization

from rotator.issuer import Signer
from rotator.jose import verify_token
from rotator.keys import ALGORITHMS, PublicKey, key_type, private_from_bytes, public_key_from_jwk
from rotator.reconcile import Rotator
from rotator.sealing import open_sealer

from .helpers import PASSPHRASE

ISS, AUD = "https://issuer.test", "api"


NODE = Path(__file__).parent / "node"


def node_jose(request: dict[str, Any]) -> dict[str, Any]:
    """One request to Node's jose (tests/node/oracle.mjs): verify a token or sign claims."""
    result = subprocess.run(
        ["node", "oracle.mjs"], input=json.dumps(request), cwd=NODE, capture_output=True, text=True, timeout=60
    )
    answer: dict[str, Any] = json.loads(result.stdout or "{}")
    assert result.returncode == 0 and "error" not in answer, (answer, result.stderr)
    return answer


def published(jwks: bytes) -> dict[str, PublicKey]:
    """kid -> public key of every key a rotator JWKS lists, each for its own alg."""
    return {k["kid"]: public_key_from_jwk(k, k["alg"]) for k in json.loads(jwks)["keys"]}


@pytest.fixture(params=ALGORITHMS)
def keyset(request: pytest.FixtureRequest, make_rotator: Callable[..., Rotator], dirs: tuple[Path, Path]) -> dict[str, Any]:
    """A key set of one algorithm after its first step: the active key's kid, PEM and
    private key, the published JWKS, and a Signer on it."""
    from .helpers import Clock

    alg = request.param
    rotator = make_rotator(clock=Clock(time.time()), algorithm=alg)
    state = rotator.step().state
    assert state.active is not None and state.active.private is not None
    private = private_from_bytes(
        open_sealer(state.encryption, PASSPHRASE, False).unseal(state.active.private, state.keyset, state.active.kid), alg
    )
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _, public = dirs
    body = (public / "jwks.json").read_bytes()
    signer = Signer(rotator.keystore, rotator.policy, passphrase=PASSPHRASE, issuer=ISS, watch=False)
    return {"kid": state.active.kid, "pem": pem, "jwks": body, "signer": signer, "private": private, "alg": alg}


def test_rotator_tokens_verify_in_every_peer(keyset: dict[str, Any]) -> None:
    """rotator's tokens verify in PyJWT, joserfc, Node's jose and jwcrypto."""
    alg = keyset["alg"]
    token = keyset["signer"].sign({"scope": "read", "n": 3}, subject="alice", audience=AUD)
    assert pyjwt.get_unverified_header(token)["alg"] == alg
    jwks = json.loads(keyset["jwks"])
    key = next(k for k in jwks["keys"] if k["kid"] == keyset["kid"])
    assert key["alg"] == alg

    decoded = pyjwt.decode(token, pyjwt.PyJWK(key).key, algorithms=[alg], audience=AUD, issuer=ISS)
    assert decoded["sub"] == "alice" and decoded["n"] == 3

    rfc = joserfc.jwt.decode(token, joserfc.jwk.KeySet.import_key_set(jwks), algorithms=[alg])
    joserfc.jwt.JWTClaimsRegistry(iss={"essential": True, "value": ISS}, aud={"essential": True, "value": AUD}).validate(rfc.claims)
    assert rfc.header["kid"] == keyset["kid"] and rfc.claims["scope"] == "read"

    node = node_jose({"op": "verify", "token": token, "jwks": jwks, "alg": alg, "issuer": ISS, "audience": AUD})
    assert node["payload"]["sub"] == "alice" and node["header"] == {"alg": alg, "kid": keyset["kid"], "typ": "JWT"}

    jwc = jwcrypto.jwt.JWT(jwt=token, key=jwcrypto.jwk.JWKSet.from_json(keyset["jwks"]), algs=[alg],
                           check_claims={"iss": ISS, "aud": AUD, "exp": None})
    assert json.loads(jwc.claims)["sub"] == "alice"


def _peer_tokens(keyset: dict[str, Any]) -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": ISS, "aud": AUD, "sub": "bob", "iat": now, "exp": now + 600, "jti": "j1"}
    alg = keyset["alg"]
    header = {"alg": alg, "kid": keyset["kid"], "typ": "JWT"}
    jwc = jwcrypto.jwt.JWT(header=header, claims=claims)
    jwc.make_signed_token(jwcrypto.jwk.JWK.from_pem(keyset["pem"]))
    key_classes: dict[str, Any] = {"EC": joserfc.jwk.ECKey, "RSA": joserfc.jwk.RSAKey, "OKP": joserfc.jwk.OKPKey}
    joserfc_key = key_classes[key_type(alg)].import_key(keyset["pem"])
    return {
        "pyjwt": pyjwt.encode(claims, keyset["private"], algorithm=alg, headers={"kid": keyset["kid"]}),
        "joserfc": joserfc.jwt.encode(header, claims, joserfc_key, algorithms=[alg]),
        "jwcrypto": jwc.serialize(),
        "node-jose": node_jose(
            {"op": "sign", "pkcs8_pem": keyset["pem"].decode(), "alg": alg, "kid": keyset["kid"], "claims": claims}
        )["token"],
    }


@pytest.mark.parametrize("peer", ["pyjwt", "joserfc", "jwcrypto", "node-jose"])
def test_peer_tokens_signed_with_a_rotator_key_verify_in_rotator(keyset: dict[str, Any], peer: str) -> None:
    """Tokens the peers sign with a rotator key verify in rotator."""
    token = _peer_tokens(keyset)[peer]
    claims = verify_token(
        token, published(keyset["jwks"]), now=time.time(), audience=AUD, issuer=ISS, algorithms=(keyset["alg"],)
    )
    assert claims["sub"] == "bob"


def test_kid_is_jwcryptos_thumbprint_and_the_jwks_loads_as_a_jwkset(keyset: dict[str, Any]) -> None:
    """Each kid is the RFC 7638 thumbprint jwcrypto computes, and the JWKS loads as a JWK set."""
    jwkset = jwcrypto.jwk.JWKSet.from_json(keyset["jwks"])
    kids = [k["kid"] for k in json.loads(keyset["jwks"])["keys"]]
    assert len(kids) == 2
    for kid in kids:
        key = jwkset.get_key(kid)
        assert key is not None and not key.has_private
        assert key.thumbprint() == kid  # RFC 7638, SHA-256
