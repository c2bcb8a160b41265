"""Revocation checks that run on every accepted token (result-cache hits included)."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Container, Mapping

from ..jose import Revoked

__all__ = ["JtiDenylist", "Revocation", "revocation_check"]


class JtiDenylist:
    """A jti denylist whose entries expire with the tokens they deny.

    ``add(jti, exp)`` keeps the entry until ``exp + grace``; after that the token is
    rejected as expired anyway, so the entry is dropped. ``grace`` must cover the
    verifier's leeway (the Verifier checks this).
    """

    def __init__(self, *, grace: float = 300.0, clock: Callable[[], float] = time.time) -> None:
        self.grace = grace
        self._clock = clock
        self._entries: dict[str, float] = {}
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def add(self, jti: str, exp: float) -> None:
        with self._lock:
            self._entries[jti] = max(exp, self._entries.get(jti, exp))
            self._prune_locked()

    def __contains__(self, jti: object) -> bool:
        exp = self._entries.get(jti) if isinstance(jti, str) else None
        return exp is not None and self._clock() <= exp + self.grace

    def __len__(self) -> int:
        with self._lock:
            self._next_prune = 0.0
            self._prune_locked()
            return len(self._entries)

    def _prune_locked(self) -> None:
        now = self._clock()
        if now < self._next_prune:
            return
        self._entries = {j: e for j, e in self._entries.items() if now <= e + self.grace}
        self._next_prune = now + 60.0


class Revocation:
    """The configured hooks; ``check`` raises Revoked for a token that must no longer be accepted."""

    def __init__(
        self,
        *,
        subject_not_before: Callable[[str], float | None] | None,
        session_version: Callable[[Mapping[str, Any]], Any] | None,
        session_claim: str,
        jti_denylist: Container[str] | None,
    ) -> None:
        self.subject_not_before = subject_not_before
        self.session_version = session_version
        self.session_claim = session_claim
        self.jti_denylist = jti_denylist

    @property
    def active(self) -> bool:
        return any(h is not None for h in (self.subject_not_before, self.session_version, self.jti_denylist))

    def check(self, claims: Mapping[str, Any]) -> None:
        if self.jti_denylist is not None:
            jti = claims.get("jti")
            if isinstance(jti, str) and jti in self.jti_denylist:
                raise Revoked("token id (jti) is on the denylist")
        if self.subject_not_before is not None:
            sub = claims.get("sub")
            cutoff = self.subject_not_before(sub) if isinstance(sub, str) else None
            if cutoff is not None:
                # A refreshed token's session began at orig_iat: the cutoff applies to that,
                # so refreshing never launders a revoked session.
                start = claims.get("orig_iat", claims.get("iat"))
                if isinstance(start, bool) or not isinstance(start, (int, float)) or start < cutoff:
                    raise Revoked("token was issued before the subject's not-before cutoff")
        if self.session_version is not None:
            current = self.session_version(claims)
            if current is not None and claims.get(self.session_claim) != current:
                raise Revoked(f"token's session version ({self.session_claim}) is no longer current")


def revocation_check(
    *,
    subject_not_before: Callable[[str], float | None] | None,
    session_version: Callable[[Mapping[str, Any]], Any] | None,
    session_claim: str,
    jti_denylist: Container[str] | None,
    revocations: Any,
    max_staleness: float,
    fail_open: bool,
    leeway: float,
) -> tuple[Callable[[Mapping[str, Any]], None] | None, Any]:
    """The one check a Verifier runs on every accepted token (None: nothing to check), from
    its hooks and its ``revocations`` store or replica; and that replica (or None)."""
    hooks = Revocation(
        subject_not_before=subject_not_before,
        session_version=session_version,
        session_claim=session_claim,
        jti_denylist=jti_denylist,
    )
    checks: list[Callable[[Mapping[str, Any]], None]] = [hooks.check] if hooks.active else []
    replica: Any = None
    if revocations is not None:
        # Loaded only here: a verifier without revocation imports none of it.
        from ..revocation import replica_of

        grace = getattr(revocations, "grace", None)  # a store, or its replica
        if grace is not None and grace < leeway:
            raise ValueError(
                f"revocation store grace ({grace}s) must cover the leeway ({leeway}s): a record would "
                "be dropped while this verifier still accepts the token it voids"
            )
        replica = replica_of(revocations)
        checks.append(replica.guard(session_claim=session_claim, max_staleness=max_staleness, fail_open=fail_open))
    if len(checks) == 2:
        first, guard = checks

        def both(claims: Mapping[str, Any]) -> None:
            first(claims)
            guard(claims)

        return both, replica
    return (checks[0] if checks else None), replica
