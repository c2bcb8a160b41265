"""What a publish target keeps beside the JWKS, and the one rule for what it accepts.

Beside the document sits a marker: the generation and lineage of the state that
published it, and the document's digest. A restore or a recreated keystore
cannot erase it, so the target alone can refuse a state that went back in time,
one of another key set, or one that claims the served generation with other keys.
A list of every kid ever revoked sits there too: a restored backup never brings
a revoked key back, even when the JWKS itself was lost since.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable

from .._strict import strict_json
from ..errors import PublishError
from ..state import LINEAGE

__all__ = ["Marker", "refusal", "parse_marker", "dump_marker", "parse_revoked", "dump_revoked"]

_KID = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True)
class Marker:
    generation: int
    lineage: str | None = None  # None: written before lineages existed
    digest: str | None = None  # sha256 of the JWKS it marks (None: not recorded)


def refusal(marker: Marker | None, generation: int, lineage: str | None, digest: str) -> str | None:
    """Why a target marked ``marker`` must not take the JWKS (``digest``) of a state at
    ``generation`` of ``lineage``: "lineage" (another key set's), "ahead" (a later
    generation's), "diverged" (this generation's, with other keys); None when it may."""
    if marker is None:
        return None
    if marker.lineage is not None and lineage is not None and marker.lineage != lineage:
        return "lineage"
    if marker.generation > generation:
        return "ahead"
    if marker.generation == generation and marker.digest is not None and marker.digest != digest:
        return "diverged"
    return None


def parse_marker(data: bytes | str, where: str) -> Marker:
    """A marker as stored (JSON; a bare generation number from before markers had more)."""
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    if text.strip().isdigit():
        return Marker(int(text.strip()))
    try:
        doc = strict_json(text.encode())
        generation, lineage, digest = doc["generation"], doc.get("lineage"), doc.get("digest")
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
        raise PublishError(f"{where} is damaged (not a publication marker): {e}") from e
    if (
        type(generation) is not int
        or generation < 0
        or not (lineage is None or (isinstance(lineage, str) and LINEAGE.fullmatch(lineage)))
        or not (digest is None or (isinstance(digest, str) and len(digest) == 64))
    ):
        raise PublishError(f"{where} is damaged (a publication marker field has the wrong type)")
    return Marker(generation, lineage, digest)


def dump_marker(marker: Marker) -> bytes:
    doc = {"generation": marker.generation, "lineage": marker.lineage, "digest": marker.digest}
    return (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode("ascii")


def parse_revoked(data: bytes, where: str) -> frozenset[str]:
    try:
        doc = strict_json(data)
        kids = doc["revoked"]
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
        raise PublishError(f"{where} is damaged (not a revoked-key list): {e}; it must be repaired by hand") from e
    if not isinstance(kids, list) or not all(isinstance(k, str) and _KID.fullmatch(k) for k in kids):
        raise PublishError(f"{where} is damaged (revoked kids must be a list of kids); it must be repaired by hand")
    return frozenset(kids)


def dump_revoked(kids: Iterable[str]) -> bytes:
    return (json.dumps({"revoked": sorted(set(kids))}, separators=(",", ":")) + "\n").encode("ascii")
