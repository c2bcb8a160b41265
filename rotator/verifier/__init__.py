"""Token verification against a published JWKS.

Imports only the standard library and ``cryptography``.
"""

from __future__ import annotations

from ._errors import (
    BadSignature,
    Expired,
    ForbiddenHeader,
    InvalidToken,
    KeysUnavailable,
    MalformedToken,
    MissingClaim,
    NotYetValid,
    UnknownKey,
    UnsupportedAlgorithm,
    VerifierError,
    WrongAudience,
    WrongIssuer,
)
from ._jwks import parse_jwks
from ._token import verify_token

__all__ = [
    "verify_token",
    "parse_jwks",
    "VerifierError",
    "InvalidToken",
    "KeysUnavailable",
    "MalformedToken",
    "UnsupportedAlgorithm",
    "ForbiddenHeader",
    "UnknownKey",
    "BadSignature",
    "Expired",
    "NotYetValid",
    "WrongAudience",
    "WrongIssuer",
    "MissingClaim",
]
