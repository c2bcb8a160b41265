"""boto3 clients, imported lazily so that nothing outside the S3/KMS backends loads boto3."""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from .errors import ConfigError

__all__ = [
    "S3Options", "S3Object", "ServerClock", "s3_client", "kms_client", "split_s3_url", "get_object", "error_code", "http_status",
]


@dataclass(frozen=True)
class S3Options:
    endpoint_url: str | None = None  # MinIO, Ceph, R2, moto: anything S3-compatible
    single_writer: bool = False  # allow stores that ignore conditional writes
    max_attempts: int = 5


def _config(max_attempts: int) -> Any:
    from botocore.config import Config

    # Standard retry mode retries throttling and 5xx with backoff; timeouts keep a
    # hung endpoint from holding a reconcile step forever.
    return Config(retries={"mode": "standard", "max_attempts": max_attempts}, connect_timeout=5, read_timeout=15)


def s3_client(options: S3Options) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=options.endpoint_url, config=_config(options.max_attempts))


def kms_client() -> Any:
    """Region, credentials and endpoint (AWS_ENDPOINT_URL_KMS) from the standard AWS chain."""
    import boto3

    return boto3.client("kms", config=_config(5))


def split_s3_url(url: str, what: str) -> tuple[str, str]:
    """``s3://bucket/key/or/prefix`` -> (bucket, key-or-prefix)."""
    rest = url[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ConfigError(f"{what} URL {url!r} names no bucket (expected s3://bucket/prefix)")
    return bucket, key.strip("/")


class S3Object(NamedTuple):
    body: bytes
    etag: str
    last_modified: float | None  # when the store recorded the object, by the store's clock


class ServerClock:
    """The store's clock, as its responses' ``Date`` headers tell it (one-second resolution)."""

    def __init__(self) -> None:
        self._reading: tuple[float, float] | None = None  # (server time, local monotonic)

    def observe(self, response: Any) -> None:
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) if isinstance(response, dict) else {}
        date = headers.get("date")
        if not date:
            return
        try:
            self._reading = (email.utils.parsedate_to_datetime(date).timestamp(), time.monotonic())
        except (TypeError, ValueError):
            return

    def now(self) -> float | None:
        """The store's time now. ``Date`` gives whole seconds, so the server's time when it
        answered lay in [date, date + 1): its midpoint is off by at most half a second, which
        a tolerance of a second (the least max_clock_skew) absorbs."""
        if self._reading is None:
            return None
        server, seen = self._reading
        return server + 0.5 + (time.monotonic() - seen)


def get_object(s3: Any, bucket: str, key: str, clock: ServerClock | None = None) -> S3Object | None:
    """An object's body, ETag and time, or None when there is none; other S3 errors propagate."""
    from botocore.exceptions import ClientError

    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if clock is not None:
            clock.observe(getattr(e, "response", None) or {})
        if error_code(e) in ("NoSuchKey", "404"):
            return None
        raise
    if clock is not None:
        clock.observe(response)
    modified = response.get("LastModified")
    return S3Object(response["Body"].read(), str(response["ETag"]), modified.timestamp() if modified else None)


def error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", type(error).__name__))


def http_status(error: Exception) -> int | None:
    response = getattr(error, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None
