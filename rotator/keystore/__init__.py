"""Keystores hold the state document (with sealed private keys) and write it with compare-and-swap."""

from __future__ import annotations

from typing import Protocol

from .._aws import S3Options
from ..errors import ConfigError
from ..state import State
from .file import FileKeystore

__all__ = ["Keystore", "FileKeystore", "open_keystore"]


class Keystore(Protocol):
    location: str

    def load(self) -> State | None:
        """The stored state, or None when the key set does not exist yet."""

    def save(self, state: State, expected_generation: int) -> State:
        """Store ``state`` if the stored generation is still ``expected_generation`` (0: none).

        Returns the state as stored (generation bumped); raises ConflictError otherwise.
        """

    def load_if_changed(self, token: object) -> tuple[object, State | None] | None:
        """(new token, state) when the stored document differs from the one ``token`` names;
        None when it is unchanged. A cheap check: a stat, or a conditional GET."""

    def storage_time(self) -> float | None:
        """The store's own clock now, where it tells one (None otherwise)."""


def open_keystore(url: str, s3: S3Options | None = None) -> Keystore:
    if url.startswith("file://") or "://" not in url:
        return FileKeystore.from_url(url)
    if url.startswith("s3://"):
        from .s3 import S3Keystore

        return S3Keystore.from_url(url, s3 or S3Options())
    scheme = url.split("://", 1)[0]
    raise ConfigError(f"unsupported keystore URL scheme {scheme!r} in {url!r} (supported: file://, s3://)")
