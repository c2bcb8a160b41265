"""The three revocation records, their validation and their encoding in Redis.

Each record is one Redis key under the store's prefix, with a value that carries
everything a replica needs (its own expiry included), so a full load is SCAN + MGET:

    {prefix}jti:{jti}   "<exp> <expires_at>"                  a denied token id
    {prefix}sub:{sub}   "<revoked_at> <not_before> <expires_at>"  a subject cutoff
    {prefix}sv:{sub}    "<version> <bumped_at> <expires_at>"   a session version

All times are whole seconds since the epoch; Redis expires the key at
``expires_at`` (EXAT), the moment the record can no longer affect a live token.
Each change is appended to the log ``{prefix}log`` (a Redis stream) as
"<suffix>\\n<value>", the key without its prefix and the record's whole new value, so
applying them in order on top of any load converges.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .._instants import is_instant
from ..durations import format_time
from ..errors import RevocationError, RevocationInputError

__all__ = [
    "RevocationError",
    "RevocationInputError",
    "Cutoff",
    "SessionVersion",
    "Tables",
    "check_jti",
    "check_subject",
    "check_time",
    "check_prefix",
    "MAX_ID_LENGTH",
    "MAX_AHEAD",
]

MAX_ID_LENGTH = 256  # characters, for a jti and a subject
MAX_AHEAD = 366 * 86400.0  # a ban or an exp further ahead than this is refused
_PREFIX = re.compile(r"[A-Za-z0-9._-]{1,64}:")


@dataclass(frozen=True)
class Cutoff:
    """Every token of ``subject`` whose session started before ``not_before`` is void."""

    subject: str
    revoked_at: int
    not_before: int
    expires_at: int


@dataclass(frozen=True)
class SessionVersion:
    subject: str
    version: int
    bumped_at: int
    expires_at: int


def _check_id(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RevocationInputError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise RevocationInputError(f"{what} is empty")
    if len(value) > MAX_ID_LENGTH:
        raise RevocationInputError(f"{what} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise RevocationInputError(f"{what} {value[:40]!r} contains a control character")
    return value


def check_jti(jti: Any) -> str:
    return _check_id(jti, "jti")


def check_subject(sub: Any) -> str:
    return _check_id(sub, "subject")


def check_time(value: Any, what: str, now: float) -> int:
    """A time (seconds since the epoch) that must not be more than MAX_AHEAD ahead of now."""
    if type(value) is not int and type(value) is not float or not math.isfinite(value):
        raise RevocationInputError(f"{what} must be a number of seconds since the epoch, got {value!r}")
    if value < 0:
        raise RevocationInputError(f"{what} {value!r} is before 1970")
    if not is_instant(value) or value > now + MAX_AHEAD:
        shown = format_time(value) if is_instant(value) else repr(value)
        raise RevocationInputError(
            f"{what} {shown} is more than 366 days ahead: a ban that long belongs in the account, "
            "not in token revocation"
        )
    return math.ceil(value)


def check_log_retention(seconds: Any) -> int:
    """The change log's retention in whole seconds (Redis trims by its clock's seconds)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 1:
        raise RevocationInputError(f"revocation log retention must be at least 1s, got {seconds!r}")
    return math.ceil(seconds)


def check_prefix(prefix: Any) -> str:
    """A prefix is a name and one colon (``rotator:``, ``prod-auth:``): no prefix can then be
    the start of another, so two key sets' records and SCANs never overlap."""
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise RevocationInputError(
            f"revocation prefix {prefix!r} must be letters, digits, '.', '_' or '-' followed by one ':' "
            "(like rotator:), so that no prefix is the start of another"
        )
    return prefix


# Keys under a prefix that are not records: the session-version high-water mark, the
# marker that tells a Redis that lost its dataset from one that restarted with it, and the
# change log (a stream) replicas follow and resume from.
HIGH_WATER_KEY = "sv-last"
DATASET_MARKER_KEY = "dataset"
LOG_KEY = "log"
NOT_RECORDS = frozenset({HIGH_WATER_KEY, DATASET_MARKER_KEY, LOG_KEY})
_FIELDS = {"jti": 2, "sub": 3, "sv": 3}


def parse_record(kind: str, ident: str, value: str) -> list[int] | str:
    """The fields of ``{kind}:{ident}`` = ``value``, or what keeps it from being a record
    this version reads (a string)."""
    if kind not in _FIELDS:
        return f"unknown record kind {kind!r}"
    if not ident:
        return "no id after the kind"
    parts = value.split()
    if len(parts) != _FIELDS[kind] or not all(p.isascii() and p.isdigit() for p in parts):
        return f"value is not {_FIELDS[kind]} non-negative integers"
    fields = [int(p) for p in parts]
    if any(f == 0 for f in fields):
        return "a time or version of 0"
    if kind == "jti" and fields[1] < fields[0]:
        return "expires before the token's exp"
    if kind == "sub" and not fields[0] <= fields[1] <= fields[2]:
        return "times out of order (revoked_at <= not_before <= expires_at)"
    if kind == "sv" and fields[2] < fields[1]:
        return "expires before it was bumped"
    return fields


class Tables:
    """What a replica holds: jti -> expires_at, sub -> Cutoff, sub -> SessionVersion.

    Writers (the replica's thread, and a store applying its own write) hold the replica's
    lock; readers take single dict lookups without it."""

    __slots__ = ("denied", "cutoffs", "versions", "malformed")

    def __init__(self) -> None:
        self.denied: dict[str, int] = {}
        self.cutoffs: dict[str, Cutoff] = {}
        self.versions: dict[str, SessionVersion] = {}
        # Keys under the prefix that hold no record this version can read (written by hand, or
        # by an older or newer writer), with what is wrong: skipped, never guessed at.
        self.malformed: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.denied) + len(self.cutoffs) + len(self.versions)

    def apply(self, suffix: str, value: str | None) -> str | None:
        """Merge the record stored under ``{prefix}{suffix}`` by the writers' own rule, the
        later of each time (the higher version) wins, so changes heard out of order, twice,
        or from a writer's own apply never undo a newer one; ``value`` None drops it.

        Returns what is wrong with a record that cannot be read (and keeps it in
        ``malformed``), else None."""
        kind, _, ident = suffix.partition(":")
        if suffix in NOT_RECORDS:
            return None
        fields: list[int] | None = None
        if value is not None:
            parsed = parse_record(kind, ident, value)
            if isinstance(parsed, str):
                self.malformed[suffix] = parsed
                return parsed
            fields = parsed
        self.malformed.pop(suffix, None)
        if kind not in _FIELDS:
            return None  # a key of no kind this version reads, dropped: nothing to drop here
        if kind == "jti":
            if fields is None:
                self.denied.pop(ident, None)
            else:
                self.denied[ident] = max(fields[1], self.denied.get(ident, fields[1]))
        elif kind == "sub":
            if fields is None:
                self.cutoffs.pop(ident, None)
            else:
                old = self.cutoffs.get(ident)
                if old is not None:
                    fields = [max(a, b) for a, b in zip(fields, (old.revoked_at, old.not_before, old.expires_at))]
                self.cutoffs[ident] = Cutoff(ident, *fields)
        elif fields is None:
            self.versions.pop(ident, None)
        else:
            current = self.versions.get(ident)
            if current is None or fields[0] >= current.version:
                self.versions[ident] = SessionVersion(ident, *fields)
        return None

    def pruned(self, now: float) -> "Tables":
        """A copy without the records that expired (Redis drops the keys at the same time)."""
        fresh = Tables()
        fresh.malformed = dict(self.malformed)
        fresh.denied = {j: x for j, x in self.denied.items() if x > now}
        fresh.cutoffs = {s: c for s, c in self.cutoffs.items() if c.expires_at > now}
        fresh.versions = {s: v for s, v in self.versions.items() if v.expires_at > now}
        return fresh

    def as_json(self) -> dict[str, Any]:
        return {
            "denied_jtis": [{"jti": j, "expires_at": x} for j, x in sorted(self.denied.items())],
            "subject_cutoffs": [
                {"subject": c.subject, "revoked_at": c.revoked_at, "not_before": c.not_before, "expires_at": c.expires_at}
                for c in sorted(self.cutoffs.values(), key=lambda c: c.subject)
            ],
            "session_versions": [
                {"subject": v.subject, "version": v.version, "bumped_at": v.bumped_at, "expires_at": v.expires_at}
                for v in sorted(self.versions.values(), key=lambda v: v.subject)
            ],
            "malformed": [{"key": k, "problem": p} for k, p in sorted(self.malformed.items())],
        }


def revoked_reason(tables: Tables, claims: Mapping[str, Any], session_claim: str) -> str | None:
    """Why the records void this token, or None (the hot path: three dict lookups at most)."""
    jti = claims.get("jti")
    if jti.__class__ is str:
        if jti in tables.denied:
            return "token id (jti) is revoked"
    elif jti is not None:
        return "token is malformed: jti is not a string (RFC 7519), so it could escape a denial"
    sub = claims.get("sub")
    if sub.__class__ is not str:
        if sub is None:
            return None
        return "token is malformed: sub is not a string (RFC 7519), so it could escape a revocation"
    cutoff = tables.cutoffs.get(sub)
    if cutoff is not None:
        # The session started at the earlier of orig_iat and iat: a later orig_iat never
        # lifts a token over a cutoff it was issued before.
        start, orig = claims.get("iat"), claims.get("orig_iat")
        if orig is not None and not (start.__class__ in (int, float) and orig.__class__ in (int, float) and start < orig):
            start = orig
        if start.__class__ not in (int, float) or start < cutoff.not_before:
            return "every token of the subject issued before its cutoff is revoked"
    version = tables.versions.get(sub)
    if version is not None:
        # Versions only grow, so a token newer than this replica's record comes from a bump
        # it has not heard yet (it is current, not void). An integer only: true is not 1.
        carried = claims.get(session_claim)
        if carried.__class__ is not int or carried < version.version:
            return f"token's session version ({session_claim}) is no longer current"
    return None
