"""S3 keystore: the state document as one object, written with compare-and-swap.

Creates use ``If-None-Match: *`` and updates ``If-Match: <etag>``; a 412 or
409 means another writer got there first (ConflictError: re-read, re-plan).
Before its first write, the keystore checks that the store really enforces
conditional writes, and refuses to run on one that ignores them unless told
there is a single writer.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .._aws import S3Options, ServerClock, error_code, get_object, http_status, s3_client, split_s3_url
from ..errors import ConflictError, KeystoreError
from ..state import State, dump_state, parse_state

__all__ = ["S3Keystore"]

_CONFLICT = {412, 409}


class S3Keystore:
    def __init__(self, client: Any, bucket: str, prefix: str, options: S3Options = S3Options()) -> None:
        self._s3 = client
        self.bucket = bucket
        self.key = f"{prefix}/state.json" if prefix else "state.json"
        self._probe_key = f"{prefix}/.rotator-cas-probe" if prefix else ".rotator-cas-probe"
        self.location = f"s3://{bucket}/{self.key}"
        self.options = options
        self._etags: dict[int, str] = {}
        self._probed = options.single_writer
        self._server_clock = ServerClock()

    @classmethod
    def from_url(cls, url: str, options: S3Options) -> "S3Keystore":
        bucket, prefix = split_s3_url(url, "keystore")
        return cls(s3_client(options), bucket, prefix, options)

    def _fail(self, action: str, e: Exception) -> KeystoreError:
        return KeystoreError(f"cannot {action} {self.location}: {error_code(e)} ({e})".split("\n")[0])

    def load(self) -> State | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            found = get_object(self._s3, self.bucket, self.key, self._server_clock)
        except (ClientError, BotoCoreError) as e:
            raise self._fail("read", e) from e
        if found is None:
            return None
        state = replace(parse_state(found.body, self.location), stored_at=found.last_modified)
        self._etags = {state.generation: found.etag}
        return state

    def load_if_changed(self, token: object) -> tuple[object, State | None] | None:
        """A conditional GET (If-None-Match on the ETag last seen): 304 means unchanged."""
        from botocore.exceptions import BotoCoreError, ClientError

        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key}
        if isinstance(token, str):
            args["IfNoneMatch"] = token
        try:
            response = self._s3.get_object(**args)
        except ClientError as e:
            self._server_clock.observe(getattr(e, "response", None) or {})  # a signer compares clocks too
            if http_status(e) == 304:
                return None
            if error_code(e) in ("NoSuchKey", "404"):
                return (None, None) if token is not None else None
            raise self._fail("read", e) from e
        except BotoCoreError as e:
            raise self._fail("read", e) from e
        self._server_clock.observe(response)
        etag = str(response["ETag"])
        state = parse_state(response["Body"].read(), self.location)
        self._etags = {state.generation: etag}
        return etag, state

    def storage_time(self) -> float | None:
        """The store's clock, from the Date header of the last read (None: it sent none)."""
        return self._server_clock.now()

    def _probe(self) -> None:
        """A conditional create of an existing object must fail; if it does not, CAS is not enforced."""
        from botocore.exceptions import ClientError

        for attempt in range(2):
            try:
                self._s3.put_object(Bucket=self.bucket, Key=self._probe_key, Body=b"", IfNoneMatch="*")
            except ClientError as e:
                if http_status(e) in _CONFLICT:
                    self._probed = True
                    return
                if error_code(e) in ("NotImplemented", "InvalidArgument") or http_status(e) == 501:
                    break
                raise self._fail("probe conditional writes on", e) from e
            if attempt == 1:
                break
        raise KeystoreError(
            f"s3://{self.bucket} does not enforce conditional writes (If-None-Match), so two "
            "rotators could overwrite each other's keys; run exactly one writer and set "
            "--s3-single-writer (ROTATOR_S3_SINGLE_WRITER=1) to proceed"
        )

    def _etag_for(self, generation: int) -> str:
        from botocore.exceptions import ClientError

        if generation in self._etags:
            return self._etags[generation]
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=self.key)
        except ClientError as e:
            raise self._fail("check", e) from e
        if head.get("Metadata", {}).get("generation") != str(generation):
            raise ConflictError(f"{self.location} changed underneath (expected generation {generation})")
        return str(head["ETag"])

    def save(self, state: State, expected_generation: int) -> State:
        from botocore.exceptions import BotoCoreError, ClientError

        if not self._probed:
            self._probe()
        stored = replace(state, generation=max(expected_generation, state.generation) + 1)
        args: dict[str, Any] = dict(
            Bucket=self.bucket,
            Key=self.key,
            Body=dump_state(stored),
            ContentType="application/json",
            Metadata={"generation": str(stored.generation)},
        )
        if not self.options.single_writer:
            if expected_generation == 0:
                args["IfNoneMatch"] = "*"
            else:
                args["IfMatch"] = self._etag_for(expected_generation)
        try:
            response = self._s3.put_object(**args)
        except ClientError as e:
            if http_status(e) in _CONFLICT:
                raise ConflictError(f"{self.location} changed underneath ({error_code(e)})") from e
            raise self._fail("write", e) from e
        except BotoCoreError as e:
            raise self._fail("write", e) from e
        self._etags = {stored.generation: response["ETag"]}
        return stored
