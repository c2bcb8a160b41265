"""Publishers write the JWKS somewhere verifiers can fetch it, behind the publication guard."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Protocol

from .._aws import S3Options
from ..errors import ConfigError
from ..state import KeyState, State
from .file import FilePublisher
from .jwks import build_jwks, check_jwks, discovery_document, jwks_digest, jwks_kids, jwks_size, published_keys, required_kids
from .target import Marker, refusal

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "Publisher",
    "FilePublisher",
    "open_publisher",
    "publish",
    "build_jwks",
    "check_jwks",
    "jwks_digest",
    "jwks_kids",
    "discovery_document",
    "write_discovery",
    "published_keys",
    "jwks_size",
    "Marker",
    "refusal",
]


class Publisher(Protocol):
    location: str
    etag: str | None  # version tag of the document last written or read, where the target has one

    def write(self, body: bytes, generation: int, lineage: str | None, previous_etag: str | None = None) -> bool:
        """Store ``body`` and its marker unless the marker there refuses it (``refusal``);
        True when written.

        ``previous_etag`` is the tag of the JWKS this state last confirmed; a
        target that supports it replaces only that version (conditional put).
        """

    def marker(self) -> Marker | None:
        """Generation, lineage and digest of what is published (None: nothing recorded)."""

    def revoked(self) -> frozenset[str]:
        """Every kid recorded beside the JWKS as revoked."""

    def record_revoked(self, kids: frozenset[str]) -> None:
        """Add ``kids`` to the revoked list beside the JWKS; nothing ever leaves it."""

    def read_back(self) -> bytes | None:
        """This key set's JWKS as a verifier would now fetch it (None: nothing published)."""

    def document(self) -> bytes | None:
        """The whole served document: ``read_back`` unless several key sets share it."""

    def write_discovery(self, body: bytes) -> None:
        """Write the OpenID discovery document beside the JWKS."""


def publish(publisher: Publisher, state: State, body: bytes) -> bool:
    """Guard, record revocations, then write. The only way rotator publishes a JWKS.

    The state's revoked kids go beside the JWKS before the JWKS that drops them, so a
    restore of an older state, which still holds them live, meets them there."""
    active, pending = required_kids(state)
    check_jwks(body, active, pending)
    revoked = frozenset(k.kid for k in state.keys if k.state is KeyState.REVOKED)
    if revoked:
        publisher.record_revoked(revoked)
    return publisher.write(body, state.generation, state.lineage, state.published_etag)


def open_publisher(
    url: str, *, s3: S3Options | None = None, max_age: float = 300.0, public_url: str | None = None,
    key_set: str | None = None,
) -> Publisher:
    """The publisher of ``url``; with ``key_set``, that key set's publisher into a document
    several key sets share (``publish.shared``)."""
    if url.startswith("file://") or "://" not in url:
        if key_set is not None:
            from .._fs import path_from_url
            from .shared import FileUnion, SharedPublisher

            return SharedPublisher(FileUnion(path_from_url(url, "publish location")), key_set)
        return FilePublisher.from_url(url)
    if url.startswith("s3://"):
        from .s3 import S3Publisher

        if key_set is not None:
            from .._aws import s3_client, split_s3_url
            from .shared import S3Union, SharedPublisher

            bucket, key = split_s3_url(url, "publish")
            union = S3Union(s3_client(s3 or S3Options()), bucket, key, max_age=max_age, public_url=public_url)
            return SharedPublisher(union, key_set)
        return S3Publisher.from_url(url, s3 or S3Options(), max_age=max_age, public_url=public_url)
    scheme = url.split("://", 1)[0]
    raise ConfigError(f"unsupported publish URL scheme {scheme!r} in {url!r} (supported: file://, s3://)")


def write_discovery(publisher: Publisher, settings: "Settings") -> bool:
    """Write the OpenID discovery document beside the JWKS when the settings ask for one
    (discovery, with issuer and public_url); what every step that published calls."""
    if not (settings.discovery and settings.issuer and settings.public_url):
        return False
    body = publisher.document()  # every key set's keys, where several share the document
    algorithms = {settings.algorithm} | {str(k.get("alg")) for k in (json.loads(body).get("keys", []) if body else [])}
    publisher.write_discovery(discovery_document(settings.issuer, settings.public_url, algorithms))
    return True
