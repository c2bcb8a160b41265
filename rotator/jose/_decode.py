"""The verifying half of the compact format: split, header rules, segments, then the
signature and the claims, strict and in a fixed order (cheap checks first)."""

from __future__ import annotations

import re
from typing import Any, Collection, Mapping

from ..keys import PublicKey
from .._b64 import b64url_decode
from .._strict import strict_json
from ._claims import check_claims
from ._signatures import verify_signature
from .errors import ForbiddenHeader, MalformedToken, UnknownKey, UnsupportedAlgorithm

__all__ = [
    "split_token",
    "parse_header",
    "decode_header",
    "decode_segment",
    "parse_claims",
    "verified_claims",
    "verify_token",
    "MAX_TOKEN_BYTES",
]

MAX_TOKEN_BYTES = 16 * 1024
MAX_HEADER_BYTES = 1024
_FORBIDDEN = ("jwk", "jku", "x5u", "x5c", "crit", "b64")
# kids are looked up, never used as paths or in queries; anything else is refused outright.
_KID = re.compile(r"[A-Za-z0-9_-]{1,128}")


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


def verified_claims(
    key: PublicKey, parts: list[str], alg: str = "ES256", fitted: bool = False
) -> tuple[dict[str, Any], bytes]:
    """Check the ``alg`` signature of a split token, then decode its payload: (claims, signing input)."""
    header, payload_segment, signature_segment = parts
    signature = decode_segment(signature_segment, "signature")
    payload = decode_segment(payload_segment, "payload")  # also proves the signing input is ASCII
    signing_input = f"{header}.{payload_segment}".encode("ascii")
    verify_signature(key, signing_input, signature, alg, fitted)
    return parse_claims(payload), signing_input


def verify_token(
    token: str,
    keys: Mapping[str, PublicKey],
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
    kid, alg = header["kid"], header["alg"]
    key = keys.get(kid)
    if key is None:
        raise UnknownKey("token kid is not in the key set")
    # A key set that says what each key is for (the verifier's KeySet): a key verifies only
    # the algorithms its JWK names (strict pairing).
    algs = getattr(keys, "algs", None)
    if algs is not None and alg not in algs.get(kid, ()):
        raise UnsupportedAlgorithm(f"alg {alg} is not one key {kid} is published for")
    claims, _ = verified_claims(key, parts, alg)
    check_claims(claims, now=now, leeway=leeway, audience=audience, issuer=issuer, max_lifetime=max_lifetime)
    return claims
