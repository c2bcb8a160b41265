"""The Verifier with algorithms beyond ES256, against a real local HTTPS JWKS server: an
explicit allowlist (ES256 by default), strict key/algorithm pairing (the token's alg must
be allowed, match the JWK's alg where it names one, and fit the key's type, curve and
size), RSA keys under 2048 bits or with another exponent skipped, none and HMAC refused."""

from __future__ import annotations

import json
import ssl
import time
from typing import Any, Iterator

import pytest
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rotator._b64 import b64url_encode
from rotator.jose import UnknownKey, UnsupportedAlgorithm, header_segment, sign
from rotator.keys import ALGORITHMS, PrivateKey, generate_private_key, public_jwk, thumbprint
from rotator.verifier import Verifier

from .helpers import AUD, ISS, claims_at, self_signed_cert
from .jwks_server import JwksServer


class Key:
    """A key of one algorithm and its JWK entry (with or without an alg member)."""

    def __init__(self, alg: str, *, named: bool = True, private: PrivateKey | None = None) -> None:
        self.alg = alg
        self.private = private if private is not None else generate_private_key(alg)
        jwk = public_jwk(self.private)
        self.kid = thumbprint(jwk)
        self.jwk: dict[str, Any] = {**jwk, "kid": self.kid, "use": "sig", **({"alg": alg} if named else {})}

    def token(self, alg: str | None = None, claims: dict[str, Any] | None = None) -> str:
        alg = alg or self.alg
        signing_input = f"{header_segment(self.kid, alg)}.{b64url_encode(json.dumps(claims or claims_at(time.time())).encode())}"
        return f"{signing_input}.{b64url_encode(sign(alg, self.private, signing_input.encode()))}"


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    out = {alg: Key(alg) for alg in ALGORITHMS}
    out["rsa-unnamed"] = Key("RS256", named=False)
    out["rsa-1024"] = Key("RS256", private=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    out["rsa-e3"] = Key("RS256", private=rsa.generate_private_key(public_exponent=3, key_size=2048))
    return out


@pytest.fixture(scope="module")
def https(keys: dict[str, Key], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[JwksServer, ssl.SSLContext]]:
    cert, private = self_signed_cert(tmp_path_factory.mktemp("tls"))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, private)
    with JwksServer([], tls=server_ctx) as server:
        server.body_override = json.dumps({"keys": [k.jwk for k in keys.values()]}).encode()
        yield server, ssl.create_default_context(cafile=cert)


def verifier(https: tuple[JwksServer, ssl.SSLContext], algorithms: tuple[str, ...]) -> Verifier:
    server, context = https
    return Verifier(server.url, issuer=ISS, audience=AUD, algorithms=algorithms, ssl_context=context, unknown_kid_cooldown=0.0)


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_a_token_of_each_allowed_algorithm_verifies(keys: dict[str, Key], https: Any, alg: str) -> None:
    """A token of each algorithm verifies with a verifier that allows it, sync and async."""
    import asyncio

    v = verifier(https, (alg,))
    assert v.verify(keys[alg].token())["sub"] == "user-1"
    assert asyncio.run(v.averify(keys[alg].token()))["sub"] == "user-1"


def test_es256_stays_the_default(keys: dict[str, Key], https: Any) -> None:
    """Without an allowlist, only ES256 is accepted, whatever keys the JWKS holds."""
    server, context = https
    v = Verifier(server.url, issuer=ISS, audience=AUD, ssl_context=context)
    assert v.verify(keys["ES256"].token())
    for alg in ("RS256", "PS256", "ES384", "EdDSA"):
        with pytest.raises(UnsupportedAlgorithm, match="not allowed"):
            v.verify(keys[alg].token())


def test_algorithm_confusion_is_refused(keys: dict[str, Key], https: Any) -> None:
    """With every algorithm allowed: an RS256 token under an EC key's kid, ES256 under an RSA
    key's, PS256 under a key published for RS256, and HS256 keyed with an RSA public key
    (or none) are refused; a key whose JWK names no alg verifies each allowed one it fits."""
    v = verifier(https, ALGORITHMS)
    ec_key, rsa_key = keys["ES256"], keys["RS256"]
    with pytest.raises(UnsupportedAlgorithm):  # an RSA signature under the EC key's kid
        v.verify(f"{header_segment(ec_key.kid, 'RS256')}.{rsa_key.token().split('.', 1)[1]}")
    with pytest.raises(UnsupportedAlgorithm):
        v.verify(f"{header_segment(rsa_key.kid, 'ES256')}.{ec_key.token().split('.', 1)[1]}")
    with pytest.raises(UnsupportedAlgorithm, match="not one key .* is published for"):
        v.verify(rsa_key.token("PS256"))  # the right private key, but its JWK says RS256
    unnamed = keys["rsa-unnamed"]
    assert v.verify(unnamed.token("RS256")) and v.verify(unnamed.token("PS256"))
    pem = rsa_key.private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    payload = b64url_encode(json.dumps(claims_at(time.time())).encode())
    signing_input = b64url_encode(json.dumps({"alg": "HS256", "kid": rsa_key.kid}).encode()) + "." + payload
    mac = hmac.HMAC(pem, hashes.SHA256())
    mac.update(signing_input.encode())
    for forged in (
        f"{signing_input}.{b64url_encode(mac.finalize())}",
        b64url_encode(json.dumps({"alg": "none", "kid": rsa_key.kid}).encode()) + "." + payload + ".",
    ):
        with pytest.raises(UnsupportedAlgorithm):
            v.verify(forged)


@pytest.mark.parametrize("weak", ["rsa-1024", "rsa-e3"])
def test_small_or_odd_rsa_keys_are_skipped(keys: dict[str, Key], https: Any, weak: str) -> None:
    """An RSA key under 2048 bits, or with exponent 3, is not in the verifier's key set: its
    tokens are refused as signed by an unknown key."""
    v = verifier(https, ("RS256",))
    assert v.verify(keys["RS256"].token())
    with pytest.raises(UnknownKey):
        v.verify(keys[weak].token())
    assert v.stats().keys == 2  # RS256 and the unnamed RSA key; neither weak one


def test_the_cached_header_keeps_its_alg(keys: dict[str, Key], https: Any) -> None:
    """A header seen before (cached) still carries its alg into the pairing check."""
    v = verifier(https, ALGORITHMS)
    first = keys["rsa-unnamed"].token("PS256")
    assert v.verify(first) and v.verify(keys["rsa-unnamed"].token("PS256"))
    with pytest.raises(UnsupportedAlgorithm):
        v.verify(keys["RS256"].token("PS256"))
