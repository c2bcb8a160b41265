"""The exception tree. Every error rotator raises on purpose is a RotatorError.

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
