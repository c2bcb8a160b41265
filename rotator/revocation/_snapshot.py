"""A snapshot of the records in force with the change log's position: what a replica that
starts cold (or fell further behind than the log holds) loads instead of every record from
Redis. It is published like the JWKS, to a file or S3 (behind any CDN), so the cost of a
fleet starting at once falls on the file server, and Redis serves each replica only the
changes since.

The body is gzip-compressed JSON::

    {"format": "rotator-revocations/1", "prefix": "rotator:", "db": 0,
     "marker": "<the prefix's dataset marker>", "position": "<log entry id>",
     "taken_at": <redis time, seconds>, "records": [["jti:abc", "<value>"], ...]}

The position is read before the records, so the log's entries after it, applied on top
by the writers' merge rule, bring a replica current whatever changed during the scan. A
replica uses a snapshot only when Redis still holds its dataset (the marker), its log still
holds the snapshot's position, and Redis vouches for the body (its SHA-256 is in
``{prefix}snapshot:{position}``, a set the publisher writes before the file, kept as long as
the log); otherwise it loads from Redis as before.

The records name subjects and token ids: serve the snapshot to verifiers only, as the
README says, not publicly like the JWKS.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._aws import S3Options, error_code, get_object, s3_client, split_s3_url
from .._fs import atomic_write, path_from_url
from ..errors import ConfigError, RevocationError
from ._records import NOT_RECORDS

if TYPE_CHECKING:
    import redis

    from ._redis import Link

__all__ = ["Snapshot", "take", "dump", "parse", "SnapshotTarget", "snapshot_target", "FORMAT", "vouch_key", "digest_of"]

FORMAT = "rotator-revocations/1"
_MAX_BODY = 512 * 1024 * 1024  # a snapshot larger than this (uncompressed) is refused, not loaded


@dataclass(frozen=True)
class Snapshot:
    prefix: str
    db: int
    marker: str
    position: str
    taken_at: float  # by the Redis server's clock
    records: list[tuple[str, str]]
    digest: str = ""  # SHA-256 of the published body, as read


def vouch_key(prefix: str, position: str) -> str:
    """The Redis set of the digests of the snapshots published at ``position``: a replica uses a
    snapshot only when Redis vouches for it, so whoever can write the file or the bucket (or a
    CDN in front) cannot drop revocations from the replicas that start from it."""
    return f"{prefix}snapshot:{position}"


def digest_of(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def take(link: "Link", client: "redis.Redis | None" = None) -> Snapshot:
    """Every record in force, with the log position to resume from (read first)."""
    client = client or link.client
    marker = link.ensure_marker(client)
    position = link.log_end(client)
    seconds, micros = client.time()
    records = [(k, v) for k, v in link.records(client) if k not in NOT_RECORDS]
    return Snapshot(link.prefix, link.db, marker, position, float(seconds) + float(micros) / 1e6, records)


def dump(snapshot: Snapshot) -> bytes:
    doc = {
        "format": FORMAT,
        "prefix": snapshot.prefix,
        "db": snapshot.db,
        "marker": snapshot.marker,
        "position": snapshot.position,
        "taken_at": snapshot.taken_at,
        "records": snapshot.records,
    }
    return gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), compresslevel=6, mtime=0)


def parse(body: bytes, where: str) -> Snapshot:
    """A snapshot as published; RevocationError (one line, naming ``where``) when it is not one."""
    try:
        decompressor = zlib.decompressobj(wbits=31)
        text = decompressor.decompress(body, _MAX_BODY)
        if decompressor.unconsumed_tail:
            raise ValueError(f"larger than {_MAX_BODY // (1024 * 1024)} MiB uncompressed")
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
        records = doc["records"]
        if not isinstance(records, list) or not all(
            isinstance(r, list) and len(r) == 2 and isinstance(r[0], str) and isinstance(r[1], str) for r in records
        ):
            raise ValueError("records are not [key, value] pairs of strings")
        position, marker, taken_at, db, prefix = doc["position"], doc["marker"], doc["taken_at"], doc["db"], doc["prefix"]
        if not (isinstance(position, str) and isinstance(marker, str) and isinstance(prefix, str) and type(db) is int):
            raise ValueError("position, marker, prefix or db has the wrong type")
        if type(taken_at) not in (int, float):
            raise ValueError("taken_at is not a number")
        from ._redis import position_key

        position_key(position)
    except (ValueError, KeyError, TypeError, zlib.error, EOFError) as e:
        raise RevocationError(f"revocation snapshot at {where} is not usable: {e}") from e
    return Snapshot(prefix, db, marker, position, float(taken_at), [(k, v) for k, v in records], digest_of(body))


class SnapshotTarget:
    """Where a snapshot is published and read: a file (a path or file:// URL), S3
    (``s3://bucket/key``), or, for reading only, an http(s) URL (a CDN in front of either)."""

    def __init__(self, location: str, s3: S3Options | None = None, *, timeout: float = 10.0) -> None:
        self.location = location
        self.timeout = timeout
        self._s3: Any = None
        if location.startswith("s3://"):
            self.bucket, self.key = split_s3_url(location, "revocation snapshot")
            if not self.key:
                raise ConfigError(f"revocation snapshot {location!r} names no object key (s3://bucket/key)")
            self._s3_options = s3 or S3Options()
        elif location.startswith(("http://", "https://")):
            pass
        else:
            self.path = path_from_url(location, "revocation snapshot")

    def _client(self) -> Any:
        if self._s3 is None:
            self._s3 = s3_client(self._s3_options)
        return self._s3

    def read(self) -> bytes | None:
        """The published body, or None when nothing is published there yet."""
        try:
            if self.location.startswith("s3://"):
                found = get_object(self._client(), self.bucket, self.key)
                return found.body if found is not None else None
            if self.location.startswith(("http://", "https://")):
                import urllib.error
                import urllib.request  # here: the issuer loads this module and no HTTP client

                try:
                    with urllib.request.urlopen(self.location, timeout=self.timeout) as response:  # noqa: S310 (configured URL)
                        return bytes(response.read(_MAX_BODY + 1))
                except urllib.error.HTTPError as e:
                    if e.code == 404:
                        return None
                    raise
            try:
                return self.path.read_bytes()
            except FileNotFoundError:
                return None
        except Exception as e:  # noqa: BLE001 (any failure to read is one line; the replica loads from Redis)
            raise RevocationError(f"cannot read the revocation snapshot at {self.location}: {_reason(e)}") from e

    def write(self, body: bytes) -> None:
        try:
            if self.location.startswith("s3://"):
                self._client().put_object(
                    Bucket=self.bucket, Key=self.key, Body=body, CacheControl="private, max-age=0",
                    # gzip as the body, not as a Content-Encoding a CDN or client might undo
                    ContentType="application/gzip",
                )
            elif self.location.startswith(("http://", "https://")):
                raise RevocationError(f"revocation snapshot {self.location} is read-only here: publish to a file or s3:// URL")
            else:
                atomic_write(self.path, body, 0o640)
        except RevocationError:
            raise
        except Exception as e:  # noqa: BLE001
            raise RevocationError(f"cannot publish the revocation snapshot to {self.location}: {_reason(e)}") from e


def snapshot_target(location: str | None, s3_endpoint_url: str | None) -> SnapshotTarget | None:
    """The target the settings name (``revocation_snapshot``, read with ``s3_endpoint_url``),
    or None when they name none: what the daemon, the CLI and the sidecar's workers all use."""
    return SnapshotTarget(location, S3Options(endpoint_url=s3_endpoint_url)) if location else None


def _reason(e: Exception) -> str:
    code = error_code(e)
    if code != type(e).__name__:
        return code
    return " ".join(str(e).split()) or type(e).__name__
