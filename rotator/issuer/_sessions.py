"""What signing asks of the revocation records: the subject's session version to stamp,
a cutoff written just now, and whether the records would void the token anyway.

Reads the in-memory replica only: no I/O per token.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from ..errors import SubjectRevoked
from ..revocation import Hooks, revoked_reason
from ._schedule import iso

__all__ = ["Sessions"]


class Sessions:
    """The replica's rules for a signer (see the module docstring). ``hooks``: more checks a
    refresh must pass, beside the replica's records."""

    def __init__(
        self, replica: Any, *, session_claim: str, max_staleness: float, leeway: float, hooks: Hooks | None = None
    ) -> None:
        self.replica = replica
        self._session_claim = session_claim
        self._max_staleness = max_staleness
        self._leeway = leeway
        self._refresh_checks: list[Callable[[Mapping[str, Any]], None]] = [
            source.check for source in (hooks, replica) if source is not None
        ]

    def check_refresh(self, claims: Mapping[str, Any]) -> None:
        """Raise InvalidToken (Revoked) when a chain with these claims (``iat`` its start) is revoked."""
        for check in self._refresh_checks:
            check(claims)

    def check_current(self) -> None:
        """Refuse to sign (and so to refresh) past the staleness bound the verifiers use, by
        the replica's own rule: a signer that cannot confirm it holds every revocation must
        not mint what they would refuse."""
        stale = self.replica.staleness(self._max_staleness)
        if stale is not None:
            raise type(stale)(f"signing refused: the revocation replica has not confirmed it is current: {stale}")

    def stamp(self, body: dict[str, Any], sub: str, iat: int, now: float, orig_iat: int | None) -> int:
        """Stamp the subject's session version; move iat onto a cutoff written just now (cutoffs
        are whole seconds of Redis's clock, rounded up), so a token signed right after a
        revocation lives.
        Refuse a token the records would void anyway (a ban in force, a revoked chain)."""
        tables = self.replica.tables
        version = tables.versions.get(sub)
        if version is not None and self._session_claim not in body:
            body[self._session_claim] = version.version
        cutoff = tables.cutoffs.get(sub)
        # Cutoffs carry the Redis server's time, rounded up: a sign-in right after one, on a
        # host whose clock is behind Redis's by up to the leeway verifiers allow an iat, is
        # stamped at the cutoff instead of void on arrival.
        if cutoff is not None and orig_iat is None and iat < cutoff.not_before <= now + max(1.0, self._leeway):
            iat = int(cutoff.not_before)
        start = iat if orig_iat is None else orig_iat
        reason = revoked_reason(tables, {"sub": sub, "iat": start, self._session_claim: body.get(self._session_claim)},
                                self._session_claim)
        if reason is None:
            return iat
        void = "a token signed now would be rejected by every verifier"
        if cutoff is not None and orig_iat is None and start < cutoff.not_before:  # a new session, yet void
            if cutoff.not_before > cutoff.revoked_at:
                raise SubjectRevoked(f"subject {sub!r} is banned until {iso(cutoff.not_before)}: {void}")
            raise SubjectRevoked(
                f"subject {sub!r} has a revocation cutoff at {iso(cutoff.not_before)}, ahead of this "
                f"host's clock ({iso(now)}): {void}; check the clocks"
            )
        raise SubjectRevoked(f"subject {sub!r}: {reason}, so {void}")
