"""Publishers write the JWKS somewhere verifiers can fetch it, behind the publication guard."""

from __future__ import annotations

from typing import Protocol

from ..errors import ConfigError
from ..state import State
from .file import FilePublisher
from .jwks import build_jwks, check_jwks, jwks_digest, jwks_kids, required_kids

__all__ = [
    "Publisher",
    "FilePublisher",
    "open_publisher",
    "publish",
    "build_jwks",
    "check_jwks",
    "jwks_digest",
    "jwks_kids",
]


class Publisher(Protocol):
    location: str

    def write(self, body: bytes, generation: int) -> bool:
        """Store ``body`` unless a newer generation is there; True when written."""

    def read_back(self) -> bytes | None:
        """The document as a verifier would now fetch it (None: nothing published)."""


def publish(publisher: Publisher, state: State, body: bytes) -> bool:
    """Guard, then write. The only way rotator publishes a JWKS."""
    active, pending = required_kids(state)
    check_jwks(body, active, pending)
    return publisher.write(body, state.generation)


def open_publisher(url: str) -> Publisher:
    if url.startswith("file://") or "://" not in url:
        return FilePublisher.from_url(url)
    scheme = url.split("://", 1)[0]
    raise ConfigError(f"unsupported publish URL scheme {scheme!r} in {url!r} (supported: file://)")
