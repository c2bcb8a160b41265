"""Strict JSON: duplicate members and non-finite numbers are errors."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["strict_json"]


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate member {duplicate!r}")
    return out


def _constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


# One decoder, built once: json.loads with hooks would build a new one on every call.
_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant)


def strict_json(data: bytes | str) -> Any:
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return _DECODER.decode(text)
