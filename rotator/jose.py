"""Compact JWS encoding for ES256, shared by the issuer and the verifier."""

from __future__ import annotations

import json
from typing import Any, Mapping

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ._b64 import b64url_encode

__all__ = ["sign_es256", "header_segment", "es256_signature"]

_ECDSA = ec.ECDSA(hashes.SHA256())


def _segment(obj: Mapping[str, Any]) -> str:
    return b64url_encode(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8"))


def header_segment(kid: str) -> str:
    """The encoded JWS header {alg: ES256, kid, typ: JWT}: the same for every token of a key."""
    return _segment({"alg": "ES256", "kid": kid, "typ": "JWT"})


def es256_signature(private: ec.EllipticCurvePrivateKey, signing_input: bytes) -> str:
    """The encoded JWS signature: ECDSA P-256 with SHA-256 as the raw 64-byte r||s."""
    r, s = decode_dss_signature(private.sign(signing_input, _ECDSA))
    return b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def sign_es256(private: ec.EllipticCurvePrivateKey, kid: str, claims: Mapping[str, Any]) -> str:
    """A compact JWT: header {alg, kid, typ}, the claims, and the raw 64-byte r||s signature."""
    signing_input = f"{header_segment(kid)}.{_segment(claims)}"
    return f"{signing_input}.{es256_signature(private, signing_input.encode('ascii'))}"
