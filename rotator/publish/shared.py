"""Several key sets publishing into one JWKS document (an OpenID provider serves one
``jwks_uri`` with keys of several algorithms).

Each key set publishes its own part beside the document, with its own marker and revoked
list (a ``FilePublisher`` or ``S3Publisher`` of the part: every per-set rule holds as for a
document of its own), then rebuilds the document as the union of every part there: parts
in the order of their key sets' names, each part's keys in its order. The rebuild reads
the parts and writes the document as one exclusive step (the directory's lock; on S3, a
conditional put of the version read, retried), so two daemons publishing at once never
drop each other's keys. The set's confirmation reads the document as verifiers fetch it
and projects it onto its own part: it confirms only when the served document holds every
key of its part, unchanged.

A key set taken out of the configuration leaves its part, and its keys stay published
(tokens they signed may still be live): delete the part to drop them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from .._fs import atomic_write, locked, remove_stale_temp_files
from .._strict import strict_json
from ..errors import PublicationGuardError, PublishError
from ..keys import PRIVATE_MEMBERS
from .file import FilePublisher
from .target import Marker

__all__ = ["SharedPublisher", "FileUnion", "S3Union", "union_document"]

Parts = list[tuple[str, bytes]]


def _keys(body: bytes, where: str) -> list[dict[str, Any]]:
    try:
        doc = strict_json(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise PublicationGuardError(f"{where} is not valid JSON: {e}") from e
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise PublicationGuardError(f'{where} is not an object with a "keys" list of objects')
    return keys


def _serialise(keys: Iterable[dict[str, Any]]) -> bytes:
    # build_jwks's serialisation: sorted members, no spaces, one trailing newline.
    return (json.dumps({"keys": list(keys)}, sort_keys=True, separators=(",", ":")) + "\n").encode("ascii")


def union_document(parts: Parts) -> bytes:
    """The document of several parts (each a JWKS rotator's guard passed): parts in the order
    of their names, each one's keys in its order. Refuses a private member or a kid two
    parts share (the guard for the document as a whole)."""
    keys: list[dict[str, Any]] = []
    owner: dict[str, str] = {}
    for name, body in sorted(parts):
        for key in _keys(body, f"the part of key set {name}"):
            leaked = PRIVATE_MEMBERS.intersection(key)
            if leaked:
                raise PublicationGuardError(f"the part of key set {name} carries private members {sorted(leaked)}")
            kid = str(key.get("kid"))
            if kid in owner:
                raise PublicationGuardError(f"key sets {owner[kid]} and {name} both publish kid {kid}")
            owner[kid] = name
            keys.append(key)
    return _serialise(keys)


def project(document: bytes | None, part: bytes | None) -> bytes | None:
    """The entries of ``document`` that ``part`` lists, in the part's order, serialised as the
    part is: equal to the part exactly when the document holds every key of it, unchanged."""
    if document is None or part is None:
        return None
    served = {str(k.get("kid")): k for k in _keys(document, "the served JWKS")}
    return _serialise(served.get(str(k.get("kid")), {"missing": True}) for k in _keys(part, "this key set's part"))


class Union(Protocol):
    location: str

    def part(self, name: str) -> Any: ...

    def rebuild(self, build: Callable[[Parts], bytes]) -> None: ...

    def read(self) -> bytes | None: ...

    def write_discovery(self, body: bytes) -> None: ...


class SharedPublisher:
    """One key set's publisher into a shared document (see the module docstring); the
    ``Publisher`` protocol, with the document's location."""

    def __init__(self, union: Union, name: str) -> None:
        self.union = union
        self.name = name
        self._part = union.part(name)
        self.location = union.location

    @property
    def etag(self) -> str | None:
        return self._part.etag  # type: ignore[no-any-return]

    @etag.setter
    def etag(self, value: str | None) -> None:
        self._part.etag = value

    def write(self, body: bytes, generation: int, lineage: str | None, previous_etag: str | None = None) -> bool:
        if not self._part.write(body, generation, lineage, previous_etag):
            return False
        self.union.rebuild(union_document)
        return True

    def marker(self) -> Marker | None:
        return self._part.marker()  # type: ignore[no-any-return]

    def revoked(self) -> frozenset[str]:
        return self._part.revoked()  # type: ignore[no-any-return]

    def record_revoked(self, kids: frozenset[str]) -> None:
        self._part.record_revoked(kids)

    def read_back(self) -> bytes | None:
        """This key set's keys as the served document holds them (see ``project``)."""
        return project(self.union.read(), self._part.read_back())

    def document(self) -> bytes | None:
        """The whole served document, every key set's keys."""
        return self.union.read()

    def write_discovery(self, body: bytes) -> None:
        self.union.write_discovery(body)


class FileUnion:
    """A shared document on files: ``jwks.json``, parts in ``.jwks.json.sets/NAME/``."""

    def __init__(self, path: Path) -> None:
        self.document = FilePublisher(path)  # for its path, lock and directory checks
        self.location = self.document.location
        self._parts = self.document.path.with_name(f".{self.document.path.name}.sets")

    def part(self, name: str) -> FilePublisher:
        return FilePublisher(self._parts / name / "jwks.json")

    def rebuild(self, build: Callable[[Parts], bytes]) -> None:
        path = self.document.path
        try:
            self.document._prepare_directory()
            with locked(self.document._lock_path):
                parts = [(p.parent.name, p.read_bytes()) for p in sorted(self._parts.glob("*/jwks.json"))]
                remove_stale_temp_files(path)
                atomic_write(path, build(parts), 0o644)
        except OSError as e:
            raise PublishError(f"cannot write {path}: {e.strerror}") from e

    def read(self) -> bytes | None:
        return self.document.read_back()

    def write_discovery(self, body: bytes) -> None:
        self.document.write_discovery(body)


class S3Union:
    """A shared document on S3: the object, parts at ``<key>.sets/NAME/jwks.json``."""

    def __init__(self, client: Any, bucket: str, key: str, *, max_age: float, public_url: str | None = None) -> None:
        from .s3 import S3Publisher

        self._s3 = client
        self.document = S3Publisher(client, bucket, key, max_age=max_age, public_url=public_url)
        self.bucket, self.key = bucket, self.document.key
        self.location = self.document.location
        self._max_age = max_age
        self._prefix = f"{self.key}.sets/"

    def part(self, name: str) -> Any:
        from .s3 import S3Publisher

        return S3Publisher(self._s3, self.bucket, f"{self._prefix}{name}/jwks.json", max_age=self._max_age)

    def rebuild(self, build: Callable[[Parts], bytes]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        from .._aws import error_code, get_object, http_status
        from .s3 import CONTENT_TYPE

        for _ in range(5):
            try:
                current = get_object(self._s3, self.bucket, self.key)
                listing = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=self._prefix)
                parts: Parts = []
                for item in sorted(listing.get("Contents", []), key=lambda i: str(i["Key"])):
                    name, _, leaf = str(item["Key"])[len(self._prefix):].partition("/")
                    found = get_object(self._s3, self.bucket, str(item["Key"])) if leaf == "jwks.json" else None
                    if found is not None:
                        parts.append((name, found.body))
                condition = {"IfMatch": current.etag} if current is not None else {"IfNoneMatch": "*"}
                body = build(parts)
                response = self._s3.put_object(
                    Bucket=self.bucket, Key=self.key, Body=body, ContentType=CONTENT_TYPE,
                    CacheControl=self.document.cache_control, **condition,
                )
            except ClientError as e:
                if http_status(e) in (412, 409):
                    continue  # another key set rebuilt it meanwhile: read its parts again
                raise PublishError(f"cannot write s3://{self.bucket}/{self.key}: {error_code(e)}") from e
            except BotoCoreError as e:
                raise PublishError(f"cannot write s3://{self.bucket}/{self.key}: {error_code(e)}") from e
            self.document.etag = str(response["ETag"])
            self.document._last_written = body
            return
        raise PublishError(f"s3://{self.bucket}/{self.key} kept changing while publishing; retry")

    def read(self) -> bytes | None:
        return self.document.read_back()

    def write_discovery(self, body: bytes) -> None:
        self.document.write_discovery(body)
