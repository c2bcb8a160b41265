"""JWS signatures (RFC 7518 section 3, RFC 8037): ES256 and ES384 as the raw r||s, RS256
(RSASSA-PKCS1-v1_5), PS256 (RSASSA-PSS, MGF1 with SHA-256, salt of 32 octets) and
EdDSA with Ed25519. One parameter object per algorithm, for signing and verifying."""

from __future__ import annotations

import hashlib
from typing import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature

from .._b64 import b64url_encode
from ..keys import PrivateKey, PublicKey, fits
from .errors import BadSignature, UnsupportedAlgorithm

__all__ = ["sign", "signature", "signing_function", "es256_signature", "verify_signature"]

# alg -> (ECDSA parameters, coordinate size, group order)
_EC = {
    "ES256": (ec.ECDSA(hashes.SHA256()), 32, 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551),
    "ES384": (
        ec.ECDSA(hashes.SHA384()),
        48,
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973,
    ),
}
# Verifying: the signing input hashed by hashlib and the digest handed to OpenSSL as
# prehashed, the same check with less set-up per call (83 us against 97 us for a P-256
# verify here; bench/verify_bench.py's ceiling is this form).
_EC_VERIFY = {
    alg: (ec.ECDSA(Prehashed(hashes.SHA256() if alg == "ES256" else hashes.SHA384())),
          hashlib.sha256 if alg == "ES256" else hashlib.sha384, size, order)
    for alg, (_, size, order) in _EC.items()
}
_SHA256 = hashes.SHA256()
_PKCS1 = padding.PKCS1v15()
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def sign(alg: str, private: PrivateKey, signing_input: bytes) -> bytes:
    """The raw JWS signature of ``signing_input`` with ``private`` under ``alg``."""
    if alg in _EC:
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        ecdsa, size, _ = _EC[alg]
        r, s = decode_dss_signature(private.sign(signing_input, ecdsa))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == "EdDSA":
        assert isinstance(private, ed25519.Ed25519PrivateKey)
        return private.sign(signing_input)
    assert isinstance(private, rsa.RSAPrivateKey)
    if alg == "RS256":
        return private.sign(signing_input, _PKCS1, _SHA256)
    if alg == "PS256":
        return private.sign(signing_input, _PSS, _SHA256)
    raise UnsupportedAlgorithm(f"alg {alg!r} is not supported")


def signature(alg: str, private: PrivateKey, signing_input: bytes) -> str:
    """The encoded JWS signature segment."""
    return b64url_encode(sign(alg, private, signing_input))


def signing_function(alg: str, private: PrivateKey) -> Callable[[bytes], str]:
    """``signature`` for one key, with the algorithm's dispatch done once: what a signer keeps
    beside each key, so signing a token costs the signature and its encoding only."""
    if alg in _EC:
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        ecdsa, size, _ = _EC[alg]
        raw_sign = private.sign

        def ecdsa_signature(signing_input: bytes) -> str:
            r, s = decode_dss_signature(raw_sign(signing_input, ecdsa))
            return b64url_encode(r.to_bytes(size, "big") + s.to_bytes(size, "big"))

        return ecdsa_signature
    return lambda signing_input: signature(alg, private, signing_input)


def es256_signature(private: ec.EllipticCurvePrivateKey, signing_input: bytes) -> str:
    """The encoded ES256 signature segment (the issuer's default)."""
    return signature("ES256", private, signing_input)


Verify = Callable[[PublicKey, bytes, bytes], None]  # key, signing input, raw signature


def _rsa_verifier(alg: str) -> Verify:
    pad = _PKCS1 if alg == "RS256" else _PSS

    def verify(key: PublicKey, signing_input: bytes, raw: bytes) -> None:
        assert isinstance(key, rsa.RSAPublicKey)
        if len(raw) != (key.key_size + 7) // 8:
            raise BadSignature(f"{alg} signature must be {(key.key_size + 7) // 8} bytes for this key, got {len(raw)}")
        key.verify(raw, signing_input, pad, _SHA256)

    return verify


def _verify_eddsa(key: PublicKey, signing_input: bytes, raw: bytes) -> None:
    assert isinstance(key, ed25519.Ed25519PublicKey)
    if len(raw) != 64:
        raise BadSignature(f"EdDSA signature must be 64 bytes, got {len(raw)}")
    key.verify(raw, signing_input)


# The other algorithms' checks; ECDSA's is written out in verify_signature, the hot path.
_VERIFY: dict[str, Verify] = {"RS256": _rsa_verifier("RS256"), "PS256": _rsa_verifier("PS256"), "EdDSA": _verify_eddsa}


def verify_signature(
    key: PublicKey, signing_input: bytes, signature: bytes, alg: str = "ES256", fitted: bool = False
) -> None:
    """Check a raw JWS signature; BadSignature when it does not verify, UnsupportedAlgorithm
    when ``alg`` is unknown or does not fit the key (its type, curve or size): no algorithm
    is ever tried on a key of another. High-S ECDSA signatures are accepted, as ECDSA and
    RFC 7518 allow. ``fitted``: the caller read ``key`` for ``alg`` already (the verifier's
    KeySet), so the fit is not checked again."""
    curve = _EC_VERIFY.get(alg)
    if curve is None and alg not in _VERIFY:
        raise UnsupportedAlgorithm(f"alg {alg!r} is not supported")
    if not fitted and not fits(alg, key):
        raise UnsupportedAlgorithm(f"alg {alg} does not fit the key ({type(key).__name__})")
    try:
        if curve is None:
            _VERIFY[alg](key, signing_input, signature)
            return
        # ES256 and ES384, inline: a call per verify costs more than the rest of this check.
        ecdsa, digest, size, order = curve
        if len(signature) != 2 * size:
            raise BadSignature(f"{alg} signature must be {2 * size} bytes, got {len(signature)}")
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        if not (0 < r < order and 0 < s < order):
            raise BadSignature(f"{alg} signature r or s out of range")
        key.verify(encode_dss_signature(r, s), digest(signing_input).digest(), ecdsa)  # type: ignore[call-arg,arg-type]
    except InvalidSignature as e:
        raise BadSignature("signature does not verify") from e
