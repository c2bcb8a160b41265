"""Key generation, JWK export and RFC 7638 thumbprints, for every algorithm rotator signs
with: ES256 (the default), ES384, RS256, PS256 and EdDSA (Ed25519).

A key set has one algorithm; each key records it. Public keys travel as JWKs with exactly
the members RFC 7518 and RFC 8037 define for their type; private keys as PKCS#8 DER,
sealed at rest (``sealing``).
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Mapping, Union

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ._b64 import b64url_decode, b64url_encode

__all__ = [
    "PublicJWK",
    "PrivateKey",
    "PublicKey",
    "ALG",
    "ALGORITHMS",
    "RSA_BITS",
    "PRIVATE_MEMBERS",
    "key_type",
    "generate_private_key",
    "public_jwk",
    "thumbprint",
    "private_to_bytes",
    "private_from_bytes",
    "public_key_from_jwk",
    "public_jwk_problem",
    "fits",
    "public_members",
]

ALG = "ES256"  # the default
ALGORITHMS = ("ES256", "ES384", "RS256", "PS256", "EdDSA")
RSA_BITS = (2048, 3072, 4096)  # sizes rotator generates; 2048 unless asked
# JWK members that carry private key material, for any key type (RFC 7518 section 6).
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})

# RFC 7638 section 3.2: the required members for each key type.
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "oct": ("k", "kty"),
    "OKP": ("crv", "kty", "x"),
}
# The EC algorithms: curve name, curve, coordinate size in bytes.
_CURVES: dict[str, tuple[str, ec.EllipticCurve, int]] = {
    "ES256": ("P-256", ec.SECP256R1(), 32),
    "ES384": ("P-384", ec.SECP384R1(), 48),
}
_KTY = {"ES256": "EC", "ES384": "EC", "RS256": "RSA", "PS256": "RSA", "EdDSA": "OKP"}
# A verifier's floor for RSA (RFC 7518 section 3.3) and the only exponent rotator makes.
_RSA_MIN_BITS = 2048
_RSA_EXPONENT = 65537

PublicJWK = dict[str, str]
PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey]
PublicKey = Union[ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey]


def _check_alg(alg: str) -> None:
    if alg not in _KTY:
        raise ValueError(f"algorithm {alg!r} is not one rotator signs with ({', '.join(ALGORITHMS)})")


def key_type(alg: str) -> str:
    """The JWK key type of ``alg``: EC, RSA or OKP."""
    _check_alg(alg)
    return _KTY[alg]


def generate_private_key(alg: str = ALG, rsa_bits: int = 2048) -> PrivateKey:
    _check_alg(alg)
    if alg in _CURVES:
        return ec.generate_private_key(_CURVES[alg][1])
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if rsa_bits not in RSA_BITS:
        raise ValueError(f"RSA keys are {', '.join(map(str, RSA_BITS))} bits, not {rsa_bits}")
    return rsa.generate_private_key(public_exponent=_RSA_EXPONENT, key_size=rsa_bits)


def _int_b64(value: int) -> str:
    return b64url_encode(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def public_jwk(key: PrivateKey | PublicKey) -> PublicJWK:
    """The public JWK of ``key``: exactly the members its type defines, no more."""
    pub = key.public_key() if isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)) else key
    if isinstance(pub, ec.EllipticCurvePublicKey):
        name, _, size = next(c for c in _CURVES.values() if c[1].name == pub.curve.name)
        numbers = pub.public_numbers()
        return {
            "kty": "EC",
            "crv": name,
            "x": b64url_encode(numbers.x.to_bytes(size, "big")),
            "y": b64url_encode(numbers.y.to_bytes(size, "big")),
        }
    if isinstance(pub, rsa.RSAPublicKey):
        rsa_numbers = pub.public_numbers()
        return {"kty": "RSA", "n": _int_b64(rsa_numbers.n), "e": _int_b64(rsa_numbers.e)}
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}


def thumbprint(jwk: Mapping[str, object]) -> str:
    """RFC 7638 JWK thumbprint with SHA-256, base64url: the kid of every rotator key."""
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in _THUMBPRINT_MEMBERS:
        raise ValueError(f"cannot compute a thumbprint for key type {kty!r}")
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[kty]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def private_to_bytes(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def fits(alg: str, key: PrivateKey | PublicKey) -> bool:
    """Whether ``key`` is a key of ``alg``: its type, its curve, and for RSA at least 2048
    bits. (The exponent is checked where a key is read, ``public_key_from_jwk``: reading it
    costs a microsecond, too much for every signature.)"""
    if alg in _CURVES:
        return isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and key.curve.name == _CURVES[alg][1].name
    if alg in ("RS256", "PS256"):
        return isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)) and key.key_size >= _RSA_MIN_BITS
    if alg == "EdDSA":
        return isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey))
    return False


def private_from_bytes(data: bytes, alg: str = ALG) -> PrivateKey:
    """A stored private key; ValueError when it is not a key of ``alg``."""
    key = serialization.load_der_private_key(data, password=None)
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)) or not fits(alg, key):
        raise ValueError(f"stored private key is not a {alg} key")
    if isinstance(key, rsa.RSAPrivateKey) and key.private_numbers().public_numbers.e != _RSA_EXPONENT:
        raise ValueError(f"stored private key is not a {alg} key (exponent other than {_RSA_EXPONENT})")
    return key


def _coordinate(jwk: Mapping[str, object], name: str, size: int | None = None) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{jwk.get('kty')} key without {name}")
    raw = b64url_decode(value)
    if size is not None and len(raw) != size:
        raise ValueError(f"{jwk.get('kty')} {jwk.get('crv', '')} member {name} must be {size} bytes".replace("  ", " "))
    return raw


def public_key_from_jwk(jwk: Mapping[str, object], alg: str = ALG) -> PublicKey:
    """The public key a JWK holds, for ``alg``; ValueError when it is not one (another type
    or curve, a point off the curve, an RSA key under 2048 bits or with another exponent)."""
    _check_alg(alg)
    if alg in _CURVES:
        name, curve, size = _CURVES[alg]
        if jwk.get("kty") != "EC" or jwk.get("crv") != name:
            raise ValueError(f"not an EC {name} key")
        x, y = _coordinate(jwk, "x", size), _coordinate(jwk, "y", size)
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
    if alg == "EdDSA":
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise ValueError("not an OKP Ed25519 key")
        return ed25519.Ed25519PublicKey.from_public_bytes(_coordinate(jwk, "x", 32))
    if jwk.get("kty") != "RSA":
        raise ValueError("not an RSA key")
    n, e = _coordinate(jwk, "n"), _coordinate(jwk, "e")
    if n[:1] == b"\x00" or e[:1] == b"\x00":
        raise ValueError("RSA n and e must be unsigned big-endian integers without leading zero octets")
    exponent = int.from_bytes(e, "big")
    key = rsa.RSAPublicNumbers(exponent, int.from_bytes(n, "big")).public_key()
    if not fits(alg, key) or exponent != _RSA_EXPONENT:
        raise ValueError(f"RSA keys must be at least {_RSA_MIN_BITS} bits with exponent {_RSA_EXPONENT}")
    return key


# What a key of each algorithm is, for messages.
_WHAT = {
    "ES256": "a P-256 point",
    "ES384": "a P-384 point",
    "RS256": "an RSA key of 2048 bits or more",
    "PS256": "an RSA key of 2048 bits or more",
    "EdDSA": "an Ed25519 key",
}
# The public members of each key type, as rotator stores and publishes them.
_PUBLIC_MEMBERS = {"EC": ("kty", "crv", "x", "y"), "RSA": ("kty", "n", "e"), "OKP": ("kty", "crv", "x")}


def public_members(jwk: Mapping[str, object]) -> PublicJWK | None:
    """The public members of a JWK of a known type (None: not one, or not strings)."""
    kty = jwk.get("kty")
    names = _PUBLIC_MEMBERS.get(kty) if isinstance(kty, str) else None
    if names is None or not all(isinstance(jwk.get(n), str) for n in names):
        return None
    return {n: jwk[n] for n in names}  # type: ignore[misc]


@functools.lru_cache(maxsize=4096)
def _problem(members: tuple[tuple[str, object], ...], kid: object, alg: str) -> str | None:
    jwk = dict(members)
    try:
        public_key_from_jwk(jwk, alg)
    except ValueError as e:
        return f"has a public key that is not {_WHAT[alg]} ({e})"
    if not isinstance(kid, str) or thumbprint(jwk) != kid:
        return f"is not its public key's RFC 7638 thumbprint ({thumbprint(jwk)})"
    return None


def public_jwk_problem(jwk: Mapping[str, object], kid: object, alg: str = ALG) -> str | None:
    """Why ``jwk`` cannot be rotator's ``alg`` key ``kid`` (None: it can): not a key of that
    algorithm, other members than its type's, or a kid that is not its RFC 7638 thumbprint.
    Cached: the same keys are checked on every read of a state."""
    if alg not in _KTY:
        return f"has algorithm {alg!r}, not one of {', '.join(ALGORITHMS)}"
    expected = _PUBLIC_MEMBERS[_KTY[alg]]
    if set(jwk) != set(expected):
        return f"has a malformed public JWK (a {alg} key has exactly {', '.join(expected)})"
    try:
        return _problem(tuple((n, jwk[n]) for n in expected), kid, alg)
    except TypeError:  # a member that is not hashable (a list or an object): not a key
        return "has a malformed public JWK"
