"""ES256 JWT checks against a set of keys: strict, and in a fixed order (cheap checks first)."""

from __future__ import annotations

import re
from typing import Any, Collection, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .._b64 import b64url_decode
from ._errors import (
    BadSignature,
    Expired,
    ForbiddenHeader,
    InvalidLifetime,
    MalformedToken,
    MissingClaim,
    NotYetValid,
    UnknownKey,
    UnsupportedAlgorithm,
    WrongAudience,
    WrongIssuer,
)
from .._strict import strict_json

__all__ = [
    "split_token",
    "parse_header",
    "decode_header",
    "decode_segment",
    "parse_claims",
    "verified_claims",
    "verify_signature",
    "check_claims",
    "verify_token",
    "MAX_TOKEN_BYTES",
]

MAX_TOKEN_BYTES = 16 * 1024
MAX_HEADER_BYTES = 1024
# P-256 group order.
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_FORBIDDEN = ("jwk", "jku", "x5u", "x5c", "crit", "b64")
# kids are looked up, never used as paths or in queries; anything else is refused outright.
_KID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_ECDSA = ec.ECDSA(hashes.SHA256())


def _json_segment(segment: str, what: str) -> Any:
    try:
        return strict_json(b64url_decode(segment))
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedToken(f"{what} is not strict base64url JSON: {e}") from e


def parse_header(segment: str, algorithms: Collection[str]) -> dict[str, Any]:
    """Decode and check a header segment: alg allowlisted, no key-carrying or critical members, a plain kid."""
    if len(segment) > MAX_HEADER_BYTES:
        raise MalformedToken("token header is too large")
    header = _json_segment(segment, "header")
    if not isinstance(header, dict):
        raise MalformedToken("header is not a JSON object")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise UnsupportedAlgorithm(f"alg {alg!r} is not allowed (allowed: {', '.join(algorithms)})")
    for name in _FORBIDDEN:
        if name in header:
            raise ForbiddenHeader(f"header member {name!r} is not accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise MalformedToken("header has no kid")
    if not _KID.fullmatch(kid):
        raise MalformedToken("kid must be 1 to 128 characters from A-Z a-z 0-9 _ -")
    return header


def split_token(token: str) -> list[str]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        raise MalformedToken(f"token is not a string of at most {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedToken(f"token has {len(parts)} parts, expected 3")
    return parts


def decode_header(token: str, algorithms: Collection[str]) -> tuple[dict[str, Any], list[str]]:
    """Split and check the header; returns (header, parts)."""
    parts = split_token(token)
    return parse_header(parts[0], algorithms), parts


def decode_segment(segment: str, what: str) -> bytes:
    try:
        return b64url_decode(segment)
    except ValueError as e:
        raise MalformedToken(f"{what} is not strict base64url") from e


def parse_claims(payload: bytes) -> dict[str, Any]:
    try:
        claims = strict_json(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedToken(f"payload is not strict JSON: {e}") from e
    if not isinstance(claims, dict):
        raise MalformedToken("payload is not a JSON object")
    return claims


def verify_signature(key: ec.EllipticCurvePublicKey, signing_input: bytes, signature: bytes) -> None:
    """ES256 raw r||s check; high-S signatures are accepted, as ECDSA and RFC 7518 allow."""
    if len(signature) != 64:
        raise BadSignature(f"ES256 signature must be 64 bytes, got {len(signature)}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < _N and 0 < s < _N):
        raise BadSignature("ES256 signature r or s out of range")
    try:
        key.verify(encode_dss_signature(r, s), signing_input, _ECDSA)
    except InvalidSignature as e:
        raise BadSignature("signature does not verify") from e


# NumericDate claims must be real instants: from the epoch to the end of year 9999. This
# refuses a float that overflowed to infinity (1e999), NaN and absurd magnitudes alike.
_MAX_TIME = 253_402_300_799


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value: Any = claims.get(name)
    kind = type(value)
    if kind is int or kind is float:  # bool is not a number here (type, not isinstance)
        if 0 <= value <= _MAX_TIME:
            return value  # type: ignore[no-any-return]
        raise MalformedToken(f"claim {name!r} is not a time between 1970 and 9999")
    if value is None:
        return None
    raise MalformedToken(f"claim {name!r} is not a number")


def check_claims(
    claims: Mapping[str, Any],
    *,
    now: float,
    leeway: float,
    audience: str | Collection[str] | None,
    issuer: str | None,
    max_lifetime: float | None = None,
) -> None:
    """exp required; nbf/iat with leeway; exact iss; aud must name one of ``audience``.

    A token that names an audience is refused by a verifier configured without one.
    """
    exp = _number(claims, "exp")
    if exp is None:
        raise MissingClaim("token has no exp")
    if now > exp + leeway:
        raise Expired("token has expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and now + leeway < nbf:
        raise NotYetValid("token is not valid yet (nbf)")
    iat = _number(claims, "iat")
    if iat is not None and now + leeway < iat:
        raise NotYetValid("token was issued in the future (iat)")
    if "orig_iat" in claims:
        orig_iat = _number(claims, "orig_iat")
        if orig_iat is not None and now + leeway < orig_iat:
            raise NotYetValid("token's session began in the future (orig_iat)")
    if max_lifetime is not None:
        start = iat if iat is not None else nbf
        if start is None or exp - start > max_lifetime:
            raise InvalidLifetime("token lifetime exceeds the allowed maximum")
    if issuer is not None and claims.get("iss") != issuer:
        raise WrongIssuer("token issuer does not match")
    aud = claims.get("aud")
    if audience is None:
        if aud is not None:
            raise WrongAudience("token names an audience but no audience is configured to accept")
    elif type(aud) is str:
        if aud != audience if type(audience) is str else aud not in audience:
            raise WrongAudience("token audience does not match")
    else:
        wanted = (audience,) if type(audience) is str else audience
        auds = aud if type(aud) is list else ()
        if not any(type(a) is str and a in wanted for a in auds):
            raise WrongAudience("token audience does not match")


def verified_claims(key: ec.EllipticCurvePublicKey, parts: list[str]) -> tuple[dict[str, Any], bytes]:
    """Check the signature of a split token, then decode its payload: (claims, signing input)."""
    header, payload_segment, signature_segment = parts
    signature = decode_segment(signature_segment, "signature")
    payload = decode_segment(payload_segment, "payload")  # also proves the signing input is ASCII
    signing_input = f"{header}.{payload_segment}".encode("ascii")
    verify_signature(key, signing_input, signature)
    return parse_claims(payload), signing_input


def verify_token(
    token: str,
    keys: Mapping[str, ec.EllipticCurvePublicKey],
    *,
    now: float,
    leeway: float = 60.0,
    audience: str | Collection[str] | None = None,
    issuer: str | None = None,
    algorithms: Collection[str] = ("ES256",),
    max_lifetime: float | None = None,
) -> dict[str, Any]:
    """Verify ``token`` against ``keys`` (kid -> key) and return its claims."""
    header, parts = decode_header(token, algorithms)
    key = keys.get(header["kid"])
    if key is None:
        raise UnknownKey("token kid is not in the key set")
    claims, _ = verified_claims(key, parts)
    check_claims(claims, now=now, leeway=leeway, audience=audience, issuer=issuer, max_lifetime=max_lifetime)
    return claims
