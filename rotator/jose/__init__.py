"""The compact JWS/JWT format, in one home: what the issuer encodes and what the verifier
and the revocation store decode, the claims checks, and the token errors.

Imports only the standard library and ``cryptography``. ``rotator.verifier`` re-exports
the errors and ``verify_token``.
"""

from __future__ import annotations

from ._claims import MAX_TIME, check_claims
from ._decode import (
    MAX_TOKEN_BYTES,
    decode_header,
    decode_segment,
    parse_claims,
    parse_header,
    split_token,
    verified_claims,
    verify_token,
)
from ._encode import header_segment, payload_segment
from ._signatures import es256_signature, sign, signature, signing_function, verify_signature
from . import errors
from .errors import *  # noqa: F403 (the token errors, listed in errors.__all__)

__all__ = [
    "MAX_TIME",
    "MAX_TOKEN_BYTES",
    "check_claims",
    "decode_header",
    "decode_segment",
    "parse_claims",
    "parse_header",
    "split_token",
    "verified_claims",
    "verify_token",
    "header_segment",
    "payload_segment",
    "es256_signature",
    "sign",
    "signature",
    "signing_function",
    "verify_signature",
    *errors.__all__,
]
