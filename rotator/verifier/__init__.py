"""Verify JWTs against a published JWKS: ES256 by default, or the algorithms allowed
(ES384, RS256, PS256, EdDSA), each key verifying only what its JWK is for.

Imports only the standard library and ``cryptography``::

    from rotator.verifier import Verifier, InvalidToken, KeysUnavailable

    verifier = Verifier("https://issuer.example/jwks.json", issuer="https://issuer.example", audience="api")
    try:
        claims = verifier.verify(token)
    except InvalidToken:      # 401
        ...
    except KeysUnavailable:   # 503
        ...
"""

from __future__ import annotations

from ..jose import errors as _token_errors
from ..jose import verify_token
from ..jose.errors import *  # noqa: F403 (the token errors, listed in their __all__)
from ._jwks import MAX_JWKS_BYTES, MAX_KEYS, load_jwks_file, parse_jwks
from ._keycache import CacheStats
from ._revocation import JtiDenylist
from ._issuers import Issuers, discover
from ._verifier import Verifier

__all__ = [
    "Verifier",
    "Issuers",
    "discover",
    "JtiDenylist",
    "CacheStats",
    "verify_token",
    "parse_jwks",
    "load_jwks_file",
    "MAX_JWKS_BYTES",
    "MAX_KEYS",
    *_token_errors.__all__,
]
