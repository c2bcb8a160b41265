"""Token errors: InvalidToken (reject the token, a 401), KeysUnavailable and
RevocationUnavailable (a 503). The issuer, the verifier and the revocation replica
raise them; ``rotator.verifier`` re-exports them. Errors of rotator's own operations
(``RotatorError``) live in ``rotator.errors``.
"""

from __future__ import annotations

__all__ = [
    "VerifierError",
    "InvalidToken",
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
    "InvalidLifetime",
    "Revoked",
    "KeysUnavailable",
    "RevocationUnavailable",
]


class VerifierError(Exception):
    code = "verifier_error"


class InvalidToken(VerifierError):
    """The token must be rejected."""

    code = "invalid_token"


class MalformedToken(InvalidToken):
    code = "malformed"


class UnsupportedAlgorithm(InvalidToken):
    code = "unsupported_alg"


class ForbiddenHeader(InvalidToken):
    code = "forbidden_header"


class UnknownKey(InvalidToken):
    code = "unknown_kid"


class BadSignature(InvalidToken):
    code = "bad_signature"


class Expired(InvalidToken):
    code = "expired"


class NotYetValid(InvalidToken):
    code = "not_yet_valid"


class WrongAudience(InvalidToken):
    code = "wrong_audience"


class WrongIssuer(InvalidToken):
    code = "wrong_issuer"


class MissingClaim(InvalidToken):
    code = "missing_claim"


class InvalidLifetime(InvalidToken):
    code = "lifetime"


class Revoked(InvalidToken):
    """A revocation hook (jti denylist, subject cutoff, session version) rejected the token."""

    code = "revoked"


class KeysUnavailable(VerifierError):
    """No usable key set could be had; the caller should answer 503, not 401."""

    code = "keys_unavailable"


class RevocationUnavailable(VerifierError):
    """The revocation replica has not confirmed it is current within its bound; answer 503."""

    code = "revocation_unavailable"
