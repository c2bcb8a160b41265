"""Rows per algorithm for sign_bench and verify_bench: ES384, RS256, PS256 and EdDSA, each
against PyJWT and the raw ``cryptography`` operation in the same interleaved run.

For each algorithm, a key set of it is made in a temporary directory (a real rotation);
then, signing the same claims:

  ceiling   cryptography's raw sign (verify) of the token's signing input, nothing else
  rotator   rotator.issuer.Signer.sign (rotator.verifier.Verifier allowing that algorithm,
            warm: the published JWKS fetched from a local HTTP server; iss, aud, exp checked)
  pyjwt     jwt.encode (jwt.decode with iss, aud and exp checks)
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from rotator.config import Policy
from rotator.issuer import Signer
from rotator.keys import PrivateKey, private_from_bytes, public_key_from_jwk
from rotator.keystore import FileKeystore
from rotator.publish import FilePublisher
from rotator.reconcile import Rotator
from rotator.sealing import open_sealer
from rotator.verifier import Verifier
from tests.jwks_server import JwksServer

from bench.interleaved import median_ops, report

OTHER_ALGORITHMS = ("ES384", "RS256", "PS256", "EdDSA")
ISS = "https://issuer.example"
AUD = "orders-api"
PASSPHRASE = "bench passphrase"


def _raw(alg: str, private: PrivateKey) -> tuple[Callable[[bytes], bytes], Callable[[bytes, bytes], None]]:
    """The bare cryptography sign and verify for ``alg`` (DER for ECDSA, as the library takes it)."""
    if isinstance(private, ec.EllipticCurvePrivateKey):
        ecdsa = ec.ECDSA(hashes.SHA384() if alg == "ES384" else hashes.SHA256())
        # Verifying in its fastest form: the digest by hashlib, verified as prehashed.
        prehashed = ec.ECDSA(Prehashed(hashes.SHA384() if alg == "ES384" else hashes.SHA256()))
        digest = hashlib.sha384 if alg == "ES384" else hashlib.sha256
        pub = private.public_key()
        return (lambda data: private.sign(data, ecdsa)), (lambda data, sig: pub.verify(sig, digest(data).digest(), prehashed))
    if isinstance(private, rsa.RSAPrivateKey):
        pad = padding.PKCS1v15() if alg == "RS256" else padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        rpub = private.public_key()
        return (
            (lambda data: private.sign(data, pad, hashes.SHA256())),
            (lambda data, sig: rpub.verify(sig, data, pad, hashes.SHA256())),
        )
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    epub = private.public_key()
    return (lambda data: private.sign(data)), (lambda data, sig: epub.verify(sig, data))


def key_set(alg: str, directory: Path) -> dict[str, Any]:
    """A rotated key set of ``alg``: its Signer, active key, public key and a token."""
    import jwt as pyjwt

    policy = Policy()
    rotator = Rotator(FileKeystore(directory / alg / "ks"), FilePublisher(directory / alg / "pub"), policy,
                      passphrase=PASSPHRASE, scrypt_n=2**10, algorithm=alg)
    state = rotator.step().state
    active = state.active
    assert active is not None and active.private is not None
    private = private_from_bytes(open_sealer(state.encryption, PASSPHRASE, False).unseal(active.private, state.keyset, active.kid), alg)
    signer = Signer(rotator.keystore, policy, passphrase=PASSPHRASE, issuer=ISS)
    token = signer.sign({"scope": "orders:read"}, subject="user-1", audience=AUD, ttl=3600)
    return {
        "signer": signer, "kid": active.kid, "private": private, "public": public_key_from_jwk(active.public, alg),
        "token": token, "pyjwt_key": pyjwt.PyJWK({**active.public, "alg": alg}).key,
        "jwks": rotator.publisher.document(),
    }


def sign_contenders(alg: str, ks: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    import jwt as pyjwt

    raw_sign, _ = _raw(alg, ks["private"])
    data = ks["token"].rpartition(".")[0].encode()

    def claims() -> dict[str, Any]:
        now = int(time.time())
        return {"iss": ISS, "sub": "user-1", "aud": AUD, "iat": now, "exp": now + 3600, "jti": str(now), "scope": "orders:read"}

    return {
        "ceiling": lambda: raw_sign(data),
        "rotator": lambda: ks["signer"].sign({"scope": "orders:read"}, subject="user-1", audience=AUD, ttl=3600),
        "pyjwt": lambda: pyjwt.encode(claims(), ks["private"], algorithm=alg, headers={"kid": ks["kid"]}),
    }


def verify_contenders(alg: str, ks: dict[str, Any], jwks_url: str) -> dict[str, Callable[[], Any]]:
    import jwt as pyjwt

    raw_sign, raw_verify = _raw(alg, ks["private"])
    data = ks["token"].rpartition(".")[0].encode()
    signature = raw_sign(data)
    token = ks["token"]
    verifier = Verifier(jwks_url, issuer=ISS, audience=AUD, algorithms=(alg,), allow_http=True)
    verifier.refresh()
    return {
        "ceiling": lambda: raw_verify(data, signature),
        "rotator": lambda: verifier.verify(token),
        "pyjwt": lambda: pyjwt.decode(token, ks["pyjwt_key"], algorithms=[alg], audience=AUD, issuer=ISS),
    }


def run(kind: str, directory: Path, rounds: int, seconds: float) -> dict[str, dict[str, float]]:
    """Print a table per algorithm for ``kind`` (sign or verify); returns the medians."""
    out: dict[str, dict[str, float]] = {}
    for alg in OTHER_ALGORITHMS:
        ks = key_set(alg, directory)
        server = JwksServer([])
        server.body_override = ks["jwks"]
        try:
            if kind == "sign":
                fns = sign_contenders(alg, ks)
            else:
                fns = verify_contenders(alg, ks, server.start().url)
            median = median_ops(fns, rounds, seconds)
        finally:
            server.stop()
            ks["signer"].close()
        print()
        report(f"{kind} {alg}: {rounds} interleaved rounds x {seconds}s, median round", median, {})
        out[alg] = median
    return out
