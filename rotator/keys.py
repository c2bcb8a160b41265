"""ES256 key generation, JWK export and RFC 7638 thumbprints."""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Mapping, TypedDict

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ._b64 import b64url_decode, b64url_encode

__all__ = [
    "PublicJWK",
    "ALG",
    "PRIVATE_MEMBERS",
    "generate_private_key",
    "public_jwk",
    "thumbprint",
    "private_to_bytes",
    "private_from_bytes",
    "public_key_from_jwk",
    "public_jwk_problem",
]

ALG = "ES256"
# JWK members that carry private key material, for any key type (RFC 7518 section 6).
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})

# RFC 7638 section 3.2: the required members for each key type.
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "oct": ("k", "kty"),
    "OKP": ("crv", "kty", "x"),
}


class PublicJWK(TypedDict):
    kty: str
    crv: str
    x: str
    y: str


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> PublicJWK:
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    numbers = pub.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url_encode(numbers.x.to_bytes(32, "big")),
        "y": b64url_encode(numbers.y.to_bytes(32, "big")),
    }


def thumbprint(jwk: Mapping[str, object]) -> str:
    """RFC 7638 JWK thumbprint with SHA-256, base64url: the kid of every rotator key."""
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in _THUMBPRINT_MEMBERS:
        raise ValueError(f"cannot compute a thumbprint for key type {kty!r}")
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[kty]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def private_to_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_from_bytes(data: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_der_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("stored private key is not an EC P-256 key")
    return key


def public_key_from_jwk(jwk: Mapping[str, object]) -> ec.EllipticCurvePublicKey:
    """Build a P-256 public key from a JWK; ValueError when it is not one (or not on the curve)."""
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ValueError("not an EC P-256 key")
    x, y = jwk.get("x"), jwk.get("y")
    if not isinstance(x, str) or not isinstance(y, str):
        raise ValueError("EC key without x and y")
    xb, yb = b64url_decode(x), b64url_decode(y)
    if len(xb) != 32 or len(yb) != 32:
        raise ValueError("EC P-256 coordinates must be 32 bytes")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + xb + yb)


@functools.lru_cache(maxsize=4096)
def _problem(kty: object, crv: object, x: object, y: object, kid: object) -> str | None:
    jwk = {"kty": kty, "crv": crv, "x": x, "y": y}
    try:
        public_key_from_jwk(jwk)
    except ValueError as e:
        return f"has a public key that is not a P-256 point ({e})"
    if not isinstance(kid, str) or thumbprint(jwk) != kid:
        return f"is not its public key's RFC 7638 thumbprint ({thumbprint(jwk)})"
    return None


def public_jwk_problem(jwk: Mapping[str, object], kid: object) -> str | None:
    """Why ``jwk`` cannot be rotator's key ``kid`` (None: it can): not an EC P-256 point, or
    a kid that is not its RFC 7638 thumbprint. Cached: the same keys are checked on every
    read of a state."""
    try:
        return _problem(jwk.get("kty"), jwk.get("crv"), jwk.get("x"), jwk.get("y"), kid)
    except TypeError:  # a member that is not hashable (a list or an object): not a key
        return "has a malformed public JWK"
