"""S3 publisher: the JWKS as one object, never replaced by an older generation.

The generation of the state that produced a document rides in its metadata.
A put replaces only the version this state last confirmed (If-Match on the
ETag recorded in the state); when that fails, the publisher looks at what is
there and steps aside for a newer generation. Confirmation reads the object
back, or, with a public URL configured, fetches it the way verifiers do
(through a CDN in front), waiting a bounded time for caches to catch up.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any, Callable

from .._aws import S3Options, error_code, get_object, http_status, s3_client, split_s3_url
from ..errors import PublishError
from .jwks import jwks_digest
from .target import Marker, dump_revoked, parse_revoked, refusal

__all__ = ["S3Publisher"]

CONTENT_TYPE = "application/jwk-set+json"


class S3Publisher:
    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        *,
        max_age: float,
        public_url: str | None = None,
        confirm_wait: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._s3 = client
        self.bucket = bucket
        self.key = key if key.endswith(".json") else (f"{key}/jwks.json" if key else "jwks.json")
        self.location = public_url or f"s3://{bucket}/{self.key}"
        self.cache_control = f"public, max-age={int(max_age)}"
        self.public_url = public_url
        self.confirm_wait = confirm_wait
        self._sleep = sleep
        self.etag: str | None = None
        self._last_written: bytes | None = None

    @classmethod
    def from_url(cls, url: str, options: S3Options, *, max_age: float, public_url: str | None = None) -> "S3Publisher":
        bucket, key = split_s3_url(url, "publish")
        return cls(s3_client(options), bucket, key, max_age=max_age, public_url=public_url)

    def _fail(self, action: str, e: Exception) -> PublishError:
        return PublishError(f"cannot {action} s3://{self.bucket}/{self.key}: {error_code(e)}")

    def _marker(self) -> tuple[Marker, str] | None:
        """The marker riding in the object's metadata, and the object's ETag."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=self.key)
        except ClientError as e:
            if http_status(e) == 404:
                return None
            raise self._fail("check", e) from e
        except BotoCoreError as e:
            raise self._fail("check", e) from e
        meta = head.get("Metadata", {})
        try:
            generation = int(meta.get("generation", "0"))
        except ValueError:
            generation = 0
        return Marker(generation, meta.get("lineage") or None, meta.get("digest") or None), str(head["ETag"])

    def marker(self) -> Marker | None:
        """Generation, lineage and digest of what is published here (None: nothing there)."""
        found = self._marker()
        return None if found is None else found[0]

    def write(self, body: bytes, generation: int, lineage: str | None, previous_etag: str | None = None) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        digest = jwks_digest(body)
        metadata = {"generation": str(generation), "digest": digest, **({"lineage": lineage} if lineage else {})}
        condition: dict[str, str] = {"IfMatch": previous_etag} if previous_etag else {"IfNoneMatch": "*"}
        for _ in range(3):
            try:
                response = self._s3.put_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    Body=body,
                    ContentType=CONTENT_TYPE,
                    CacheControl=self.cache_control,
                    Metadata=metadata,
                    **condition,
                )
            except ClientError as e:
                if "IfMatch" in condition and http_status(e) == 404 and error_code(e) == "NoSuchKey":
                    # The object this state last confirmed is gone (deleted by hand, a
                    # lifecycle rule): nothing is there to protect, so write it anew.
                    condition = {"IfNoneMatch": "*"}
                    continue
                if http_status(e) not in (412, 409):
                    raise self._fail("write", e) from e
                current = self._marker()
                if current is None:
                    condition = {"IfNoneMatch": "*"}
                    continue
                if refusal(current[0], generation, lineage, digest) is not None:
                    return False  # a newer state's JWKS, or another key set's: never replace it
                condition = {"IfMatch": current[1]}
                continue
            except BotoCoreError as e:
                raise self._fail("write", e) from e
            self.etag = str(response["ETag"])
            self._last_written = body
            return True
        raise PublishError(f"s3://{self.bucket}/{self.key} kept changing while publishing; retry")

    @property
    def _revoked_key(self) -> str:
        return f"{self.key}.revoked"

    def _read_revoked(self) -> tuple[frozenset[str], str | None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            found = get_object(self._s3, self.bucket, self._revoked_key)
        except (ClientError, BotoCoreError) as e:
            raise PublishError(f"cannot read s3://{self.bucket}/{self._revoked_key}: {error_code(e)}") from e
        if found is None:
            return frozenset(), None
        return parse_revoked(found.body, f"s3://{self.bucket}/{self._revoked_key}"), found.etag

    def revoked(self) -> frozenset[str]:
        """Every kid recorded here as revoked."""
        return self._read_revoked()[0]

    def record_revoked(self, kids: frozenset[str]) -> None:
        """Add ``kids`` to the revoked list (never removes one; concurrent adds merge)."""
        from botocore.exceptions import BotoCoreError, ClientError

        for _ in range(5):
            known, etag = self._read_revoked()
            if kids <= known:
                return
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                self._s3.put_object(
                    Bucket=self.bucket, Key=self._revoked_key, Body=dump_revoked(known | kids),
                    ContentType="application/json", **condition,
                )
                return
            except ClientError as e:
                if http_status(e) not in (412, 409, 404):
                    raise PublishError(f"cannot write s3://{self.bucket}/{self._revoked_key}: {error_code(e)}") from e
            except BotoCoreError as e:
                raise PublishError(f"cannot write s3://{self.bucket}/{self._revoked_key}: {error_code(e)}") from e
        raise PublishError(f"s3://{self.bucket}/{self._revoked_key} kept changing while recording revocations; retry")

    def write_discovery(self, body: bytes) -> None:
        """OpenID discovery document beside the JWKS (``<prefix>/openid-configuration``)."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.key.rsplit("/", 1)[0] + "/openid-configuration" if "/" in self.key else "openid-configuration"
        try:
            self._s3.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", CacheControl=self.cache_control
            )
        except (ClientError, BotoCoreError) as e:
            raise self._fail("write discovery document beside", e) from e

    def _read_s3(self) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            found = get_object(self._s3, self.bucket, self.key)
        except (ClientError, BotoCoreError) as e:
            raise self._fail("read back", e) from e
        if found is None:
            return None
        self.etag = found.etag
        return found.body

    def _read_public(self) -> bytes | None:
        assert self.public_url is not None
        request = urllib.request.Request(self.public_url, headers={"Cache-Control": "no-cache"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (operator-set URL)
                return bytes(response.read(1 << 20))
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise PublishError(f"cannot fetch {self.public_url}: HTTP {e.code}") from e
        except (urllib.error.URLError, OSError) as e:
            raise PublishError(f"cannot fetch {self.public_url}: {getattr(e, 'reason', e)}") from e

    def document(self) -> bytes | None:
        return self.read_back()

    def read_back(self) -> bytes | None:
        if self.public_url is None:
            return self._read_s3()
        # Through a CDN, a fresh write may take a while to show: wait, bounded.
        deadline = time.monotonic() + self.confirm_wait
        while True:
            data = self._read_public()
            if self._last_written is None or data == self._last_written or time.monotonic() >= deadline:
                return data
            self._sleep(1.0)

