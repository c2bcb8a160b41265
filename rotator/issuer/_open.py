"""A Signer for a key set as rotator's settings describe it."""

from __future__ import annotations

from typing import Any

from ..config import Settings
from ._signer import Signer

__all__ = ["signer_for", "open_signer"]


def signer_for(settings: Settings, **options: Any) -> Signer:
    """A Signer for the key set ``settings`` describe (``rotator.keysets``): its keystore,
    policy, passphrase or KMS key, issuer and publish target, and its revocation store when
    revocation_url is set; ``options`` override (``watch=False``, a ``clock``)."""
    revocations = None
    if settings.revocation_url:
        from ..revocation import store_for

        revocations = store_for(settings)
    arguments: dict[str, Any] = dict(
        passphrase=settings.resolved_passphrase(),
        allow_plaintext=settings.insecure_plaintext_keys,
        issuer=settings.issuer,
        kms_key_id=settings.kms_key_id,
        publisher=settings.open_publisher(),
        passphrase_source=settings.passphrase_source(),
        revocations=revocations,
    )
    arguments.update(options)
    return Signer(settings.open_keystore(), settings.policy, **arguments)


def open_signer(key_set: str | None = None, *, config_file: str | None = None, **options: Any) -> Signer:
    """A Signer for the key set ``key_set`` of the settings (a file, ``ROTATOR_*``
    environment), read as ``rotator`` reads them; no name: the only one."""
    from ..keysets import load_key_sets, select

    return signer_for(select(load_key_sets(config_file=config_file), key_set), **options)
