"""The state document: one JSON object per key set.

A key's lifecycle state is derived from the timestamps recorded on it, never
stored separately, so the document cannot contradict itself.
"""

from __future__ import annotations

import enum
import json
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from ._instants import is_instant
from ._strict import strict_json
from .errors import KeystoreError
from .keys import ALG, PublicJWK, public_jwk_problem

__all__ = ["SCHEMA_VERSION", "LINEAGE", "KeyState", "KeyRecord", "State", "new_lineage", "parse_state", "dump_state"]

SCHEMA_VERSION = 1
LINEAGE = re.compile(r"[A-Za-z0-9_-]{16,64}")


def new_lineage() -> str:
    """A fresh key set's identity: 128 random bits, base64url."""
    return secrets.token_urlsafe(16)


class KeyState(str, enum.Enum):
    PENDING = "pending"
    ACTIVE = "active"
    RETIRED = "retired"
    REMOVED = "removed"
    REVOKED = "revoked"


@dataclass(frozen=True)
class KeyRecord:
    kid: str
    public: PublicJWK
    created_at: float
    private: str | None = field(default=None, repr=False)  # sealed private key
    alg: str = ALG
    published_at: float | None = None  # publication confirmed (read back) at
    activated_at: float | None = None
    activation: str | None = None  # rotation | bootstrap | promotion
    retired_at: float | None = None
    retirement: str | None = None  # rotation | manual
    private_destroyed_at: float | None = None
    removed_at: float | None = None
    revoked_at: float | None = None
    revocation: str | None = None  # manual | damaged | recovery (None: an operator's, before 'manual' was recorded)

    @property
    def state(self) -> KeyState:
        if self.revoked_at is not None:
            return KeyState.REVOKED
        if self.removed_at is not None:
            return KeyState.REMOVED
        if self.retired_at is not None:
            return KeyState.RETIRED
        if self.activated_at is not None:
            return KeyState.ACTIVE
        return KeyState.PENDING

    @property
    def published(self) -> bool:
        """Whether this key belongs in the JWKS."""
        return self.state in (KeyState.PENDING, KeyState.ACTIVE, KeyState.RETIRED)

    def with_(self, **changes: Any) -> "KeyRecord":
        return replace(self, **changes)


@dataclass(frozen=True)
class State:
    encryption: Mapping[str, Any]
    keys: tuple[KeyRecord, ...] = ()
    generation: int = 0
    updated_at: float = 0.0
    keyset: str = "default"
    published_digest: str | None = None  # sha256 of the last JWKS confirmed
    published_confirmed_at: float | None = None
    published_etag: str | None = None  # the publish target's version tag for that JWKS, if it has one
    schema_version: int = SCHEMA_VERSION
    # This key set's identity, made at bootstrap and stored beside every JWKS it publishes,
    # so a publish target tells its own key set from a recreated or foreign one (None:
    # written before lineages existed; the next step gives it one).
    lineage: str | None = None
    # When the keystore itself recorded the stored document (file mtime, S3
    # Last-Modified): the storage's clock, not the writer's. Not part of the document.
    stored_at: float | None = field(default=None, compare=False)

    def in_state(self, *states: KeyState) -> list[KeyRecord]:
        return [k for k in self.keys if k.state in states]

    @property
    def active(self) -> KeyRecord | None:
        active = self.in_state(KeyState.ACTIVE)
        return active[0] if active else None

    @property
    def pending(self) -> list[KeyRecord]:
        return sorted(self.in_state(KeyState.PENDING), key=lambda k: (k.created_at, k.kid))

    def get(self, kid: str) -> KeyRecord | None:
        for key in self.keys:
            if key.kid == kid:
                return key
        return None

    @property
    def alg(self) -> str | None:
        """The key set's algorithm: its keys' (None while it has none)."""
        return self.keys[0].alg if self.keys else None

    def with_keys(self, keys: Iterable[KeyRecord], **changes: Any) -> "State":
        return replace(self, keys=tuple(keys), **changes)


_KEY_FIELDS = {
    "kid": str,
    "public": dict,
    "created_at": float,
    "private": (str, type(None)),
    "alg": str,
    "published_at": (float, type(None)),
    "activated_at": (float, type(None)),
    "activation": (str, type(None)),
    "retired_at": (float, type(None)),
    "retirement": (str, type(None)),
    "private_destroyed_at": (float, type(None)),
    "removed_at": (float, type(None)),
    "revoked_at": (float, type(None)),
    "revocation": (str, type(None)),
}
_TIME_FIELDS = tuple(name for name in _KEY_FIELDS if name.endswith("_at"))
# Stored times must be real instants, and none before 2001-09-09 (rotator did not exist).
_EARLIEST = 1_000_000_000.0


def _number(value: Any) -> Any:
    return float(value) if type(value) is int else value


_KEY_FIELD_NAMES = frozenset(_KEY_FIELDS)


def _parse_key(raw: Any, where: str) -> KeyRecord:
    if type(raw) is not dict:
        raise KeystoreError(f"{where}: key entry is not an object")
    if not raw.keys() <= _KEY_FIELD_NAMES:
        raise KeystoreError(f"{where}: key entry has unknown fields {sorted(raw.keys() - _KEY_FIELD_NAMES)}")
    values = {name: _number(raw.get(name)) for name in _KEY_FIELDS}
    for name, kind in _KEY_FIELDS.items():
        if not isinstance(values[name], kind):  # type: ignore[arg-type]
            raise KeystoreError(f"{where}: key field {name!r} is missing or has the wrong type")
    kid = values["kid"]
    for name in _TIME_FIELDS:
        _check_time(values[name], f"{where}: key {kid} field {name!r}")
    public = values["public"]
    if not all(type(v) is str for v in public.values()):
        raise KeystoreError(f"{where}: key {kid} has a malformed public JWK")
    problem = public_jwk_problem(public, kid, values["alg"])
    if problem:
        raise KeystoreError(f"{where}: key {kid} {problem}")
    return KeyRecord(**values)


def _check_time(value: float | None, what: str) -> None:
    if value is not None and not is_instant(value, _EARLIEST):
        raise KeystoreError(f"{what} is {value!r}: not a time between 2001 and 9999")


def parse_state(data: bytes, where: str) -> State:
    """Parse and check a state document; any problem is a one-line KeystoreError."""
    try:
        doc = strict_json(data)
    except UnicodeDecodeError as e:
        raise KeystoreError(f"{where} is not UTF-8 text (damaged or not a state file)") from e
    except json.JSONDecodeError as e:
        raise KeystoreError(
            f"{where} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}): "
            "truncated or damaged; restore it from a backup"
        ) from e
    except ValueError as e:
        raise KeystoreError(f"{where} is not strict JSON ({e}): damaged; restore it from a backup") from e
    if not isinstance(doc, dict):
        raise KeystoreError(f"{where} does not hold a JSON object")
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise KeystoreError(f"{where} has no schema_version: not a rotator state file")
    if version > SCHEMA_VERSION:
        raise KeystoreError(
            f"{where} has schema version {version}, newer than this rotator supports "
            f"({SCHEMA_VERSION}); upgrade rotator"
        )
    if version < 1:
        raise KeystoreError(f"{where} has invalid schema version {version}")
    try:
        generation = doc["generation"]
        keyset = doc["keyset"]
        encryption = doc["encryption"]
        updated_at = _number(doc["updated_at"])
        keys = doc["keys"]
        digest = doc.get("published_digest")
        confirmed_at = _number(doc.get("published_confirmed_at"))
        etag = doc.get("published_etag")
        lineage = doc.get("lineage")
    except KeyError as e:
        raise KeystoreError(f"{where} lacks the field {e.args[0]!r}") from e
    if (
        not isinstance(generation, int)
        or generation < 1
        or not isinstance(keyset, str)
        or not isinstance(encryption, dict)
        or not isinstance(updated_at, float)
        or not isinstance(keys, list)
        or not isinstance(digest, (str, type(None)))
        or not isinstance(confirmed_at, (float, type(None)))
        or not isinstance(etag, (str, type(None)))
        or not (lineage is None or (isinstance(lineage, str) and LINEAGE.fullmatch(lineage)))
    ):
        raise KeystoreError(f"{where} has a field of the wrong type")
    _check_time(updated_at, f"{where}: field 'updated_at'")
    _check_time(confirmed_at, f"{where}: field 'published_confirmed_at'")
    records = tuple(_parse_key(k, where) for k in keys)
    kids = [k.kid for k in records]
    if len(set(kids)) != len(kids):
        raise KeystoreError(f"{where} lists a kid twice")
    algs = sorted({k.alg for k in records})
    if len(algs) > 1:
        raise KeystoreError(f"{where} holds keys of several algorithms ({', '.join(algs)}): a key set has one")
    state = State(
        encryption=encryption,
        keys=records,
        generation=generation,
        updated_at=updated_at,
        keyset=keyset,
        published_digest=digest,
        published_confirmed_at=confirmed_at,
        published_etag=etag,
        schema_version=version,
        lineage=lineage,
    )
    if len(state.in_state(KeyState.ACTIVE)) > 1:
        raise KeystoreError(f"{where} has more than one active key")
    return state


def dump_state(state: State) -> bytes:
    doc = {
        "schema_version": state.schema_version,
        "keyset": state.keyset,
        "generation": state.generation,
        "updated_at": state.updated_at,
        "encryption": dict(state.encryption),
        "published_digest": state.published_digest,
        "published_confirmed_at": state.published_confirmed_at,
        "published_etag": state.published_etag,
        **({"lineage": state.lineage} if state.lineage is not None else {}),
        "keys": [{name: getattr(k, name) for name in _KEY_FIELDS} for k in state.keys],
    }
    # Compact: the document is rewritten on every change; `rotator status` is the human view.
    return (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")
