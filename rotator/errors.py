"""The exception tree. Every error rotator raises on purpose is a RotatorError.

(A token's own faults, what verifiers answer 401 or 503 for, are the other tree:
``rotator.jose.errors``, re-exported by ``rotator.verifier``.)

Each class carries a short stable ``code`` that the CLI prints and that logs
and metrics can key on; messages are one line and name what is wrong.
"""

from __future__ import annotations

__all__ = [
    "RotatorError",
    "ConfigError",
    "KeystoreError",
    "WrongPassphrase",
    "ConflictError",
    "ClockSkewError",
    "PublishError",
    "PublicationGuardError",
    "PublishTargetAhead",
    "LifecycleError",
    "UnknownKey",
    "NoActiveKey",
    "RevocationError",
    "RevocationInputError",
    "RefreshRefused",
    "SubjectRevoked",
]


class RotatorError(Exception):
    """Root of every error rotator raises deliberately."""

    code = "rotator_error"
    exit_code = 1


class ConfigError(RotatorError):
    """Settings that are malformed or that cannot work together."""

    code = "config"
    exit_code = 2


class KeystoreError(RotatorError):
    """The keystore cannot be read or written safely."""

    code = "keystore"
    exit_code = 3


class WrongPassphrase(KeystoreError):
    code = "wrong_passphrase"


class ConflictError(KeystoreError):
    """A compare-and-swap write lost the race; re-read and re-plan."""

    code = "conflict"


class ClockSkewError(KeystoreError):
    """This host's clock disagrees with the store's, or with the stored state, beyond the tolerance."""

    code = "clock_skew"

    def __init__(self, message: str, skew: float = 0.0) -> None:
        super().__init__(message)
        self.skew = skew  # seconds; positive: stored times or this host ahead


class PublishError(RotatorError):
    """The JWKS could not be written or confirmed."""

    code = "publish"
    exit_code = 4


class PublicationGuardError(PublishError):
    """A JWKS that breaks an invariant was about to be published."""

    code = "publication_guard"


class PublishTargetAhead(PublishError):
    """The publish target holds the JWKS of a newer state than the keystore's: a restored
    or recreated keystore. ``rotator recover`` adopts what is published."""

    code = "publish_target_ahead"


class LifecycleError(RotatorError):
    """An operation the key lifecycle does not allow."""

    code = "lifecycle"
    exit_code = 5


class UnknownKey(LifecycleError):
    code = "unknown_kid"


class NoActiveKey(LifecycleError):
    code = "no_active_key"


class RevocationError(RotatorError):
    """Bad input to the store, or a store that cannot be reached; one line, naming what is wrong.

    Raised before anything is written."""

    code = "revocation"
    exit_code = 7


class RevocationInputError(RevocationError):
    """Bad input (a jti, a subject, a time, a token, a URL): a usage error, exit 2 like the
    CLI's others; the store was not asked. Exit 7 stays for a store that cannot be reached."""

    exit_code = 2


class RefreshRefused(RotatorError):
    """A token that cannot be refreshed: invalid, expired past the grace, past the chain's
    absolute bound, or revoked."""

    code = "refresh_refused"
    exit_code = 1


class SubjectRevoked(RotatorError):
    """A token the revocation records would void at every verifier: its subject is banned,
    or the session it continues (orig_iat) or the version it carries was revoked."""

    code = "subject_revoked"
    exit_code = 1
