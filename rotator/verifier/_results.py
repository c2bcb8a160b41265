"""The result cache: accepted tokens, by the SHA-256 of their signing input, with the
signature each was verified with. The Verifier reads ``entries`` on its hot path without
a lock (single dict operations); writers take ``lock``."""

from __future__ import annotations

import hashlib
import hmac
import threading
from typing import Any

from ..keys import PublicKey

__all__ = ["CachedResult", "ResultCache", "copy_json"]

_SCALARS = (str, int, float, bool, type(None))


def copy_json(value: Any) -> Any:
    """A deep copy of decoded JSON (dicts, lists, scalars), faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


class CachedResult:
    __slots__ = ("signature", "kid", "key", "claims", "flat", "exp", "nbf", "drop_at", "digest")

    def __init__(self, signature: str, kid: str, key: PublicKey, claims: dict[str, Any], drop_at: float, digest: bytes):
        self.digest = digest  # its key in the cache
        self.signature = signature
        self.kid = kid
        self.key = key
        self.claims = claims
        self.flat = all(type(v) in _SCALARS for v in claims.values())
        self.exp = float(claims["exp"])
        nbf = claims.get("nbf")
        self.nbf = float(nbf) if isinstance(nbf, (int, float)) and not isinstance(nbf, bool) else None
        self.drop_at = drop_at


class ResultCache:
    """At most ``size`` results, each dropped ``ttl`` after it was verified or when its
    token expires (plus ``leeway``), whichever is first."""

    def __init__(self, size: int, ttl: float, leeway: float) -> None:
        self.entries: dict[bytes, CachedResult] = {}
        self.size = size
        self.ttl = ttl
        self.leeway = leeway
        self.lock = threading.Lock()

    def put(
        self, signing_input: bytes, signature: str, kid: str, key: PublicKey, claims: dict[str, Any], now: float
    ) -> None:
        digest = hashlib.sha256(signing_input).digest()
        entry = CachedResult(signature, kid, key, copy_json(claims), now + self.ttl, digest)
        entry.drop_at = min(entry.drop_at, entry.exp + self.leeway)
        entries = self.entries
        with self.lock:  # writers only; readers take single dict operations without it
            if len(entries) >= self.size:
                # Drop what has expired; if nothing has, the oldest entry (dicts keep insertion order).
                stale = [d for d, r in entries.items() if r.drop_at <= now] or [next(iter(entries))]
                for d in stale:
                    entries.pop(d, None)
            entries[digest] = entry

    def entry_for(self, token: str) -> CachedResult | None:
        """The entry of ``token``: its signing input's, holding its very signature (read
        without the lock, as the module docstring says)."""
        if not token.isascii():
            return None
        signing_input, _, signature_segment = token.rpartition(".")
        entry = self.entries.get(hashlib.sha256(signing_input.encode("ascii")).digest())
        if entry is None or not hmac.compare_digest(signature_segment, entry.signature):
            return None
        return entry

    def drop(self, digest: bytes) -> None:
        with self.lock:
            self.entries.pop(digest, None)
