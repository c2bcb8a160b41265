"""Token issuers sign with the key the keystore says is active now, and with no other.

The hot path does no I/O and takes no lock: ``sign`` asks the ``KeySchedule`` (one
immutable snapshot, refreshed in the background) for the key of this instant, stamps
the claims and signs. ``refresh`` continues a session (a refresh chain), refused once
the chain reaches its absolute bound or a revocation voids it.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, Callable, Mapping

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .._b64 import b64url_encode
from .._fork import on_fork
from ..config import Policy
from ..durations import format_duration
from ..errors import RefreshRefused
from ..jose import InvalidToken, decode_header, payload_segment, verified_claims
from ..keys import ALGORITHMS
from ..keystore import Keystore
from ..publish import Publisher
from ..revocation import Hooks, replica_of
from ._schedule import KeySchedule, iso
from ._sessions import Sessions

__all__ = ["Signer", "SIGNER_CLAIMS"]

# Claims the signer sets itself; a caller passing one is refused, never silently overridden.
SIGNER_CLAIMS = ("iat", "exp", "nbf", "jti", "orig_iat")


def _check_claims(claims: Mapping[str, Any], set_elsewhere: Mapping[str, object]) -> None:
    """Refuse, never drop: claims the signer sets, and claims also given by argument or by
    the signer's issuer. (Values that are not finite JSON are refused when serialised.)"""
    for name in SIGNER_CLAIMS:
        if name in claims:
            raise ValueError(f"claim {name!r} is set by the signer")
    for name, value in set_elsewhere.items():
        if name in claims and value is not None:
            raise ValueError(f"claim {name!r} is given twice: as a claim and by the signer's {name} setting")


_RESERVED = frozenset((*SIGNER_CLAIMS, "iss", "sub", "aud"))


class Signer:
    """Signs claims with the active key (see the module docstring and ``KeySchedule``).

    ``publisher``: each new state's active key is also looked up in the JWKS the publish
    target serves, and a key it lacks (a keystore restored from an old backup) never
    signs. ``revocations``: a ``rotator.revocation`` store (or its replica); the replica
    gives the subject's session version, stamped into new tokens as ``session_claim``,
    and its records refuse refreshes of revoked chains (no I/O per token).
    ``revocation_hooks``: more checks a refresh must pass (an object with ``check(claims)``
    raising ``rotator.jose.Revoked``, such as the verifier's hooks), applied to the
    chain's ``orig_iat``.
    """

    def __init__(
        self,
        keystore: Keystore,
        policy: Policy,
        *,
        passphrase: str | None = None,
        allow_plaintext: bool = False,
        issuer: str | None = None,
        clock: Callable[[], float] = time.time,
        kms_key_id: str | None = None,
        publisher: Publisher | None = None,
        passphrase_source: str = "the passphrase argument",
        refresh_interval: float = 2.0,
        watch: bool = True,
        revocation_hooks: Hooks | None = None,
        revocations: Any = None,
        session_claim: str = "sv",
        revocation_max_staleness: float = 30.0,
        storage_clock: bool = True,
    ) -> None:
        self.schedule = KeySchedule(
            keystore, policy, passphrase=passphrase, allow_plaintext=allow_plaintext, clock=clock,
            kms_key_id=kms_key_id, publisher=publisher, passphrase_source=passphrase_source,
            refresh_interval=refresh_interval, watch=watch, storage_clock=storage_clock,
        )
        self._policy = policy
        self._issuer = issuer
        self._clock = clock
        # A rotator.revocation store: its replica gives each subject's session version (stamped
        # into new tokens) and cutoff, and refuses refreshes of revoked chains; no I/O per token.
        self.sessions = Sessions(
            replica_of(revocations) if revocations is not None else None,
            session_claim=session_claim, max_staleness=revocation_max_staleness, leeway=policy.leeway,
            hooks=revocation_hooks,
        )
        self._new_jti_key()
        on_fork(self)

    def _new_jti_key(self) -> None:
        """jti: the counter through AES under a random key: unique (a permutation of distinct
        counters) and unpredictable, so one user's token does not reveal the next user's jti,
        without a system call per token."""
        self._jti_cipher = Cipher(algorithms.AES(os.urandom(16)), modes.ECB()).encryptor()
        self._jti_counter = itertools.count()

    def _after_fork(self) -> None:
        """A forked child (gunicorn --preload, uWSGI, Celery prefork) must not share the jti
        key and counter with its parent (the schedule renews its own locks and watcher)."""
        self._new_jti_key()

    @property
    def refresh_interval(self) -> float:
        return self.schedule.refresh_interval

    @property
    def stale_after(self) -> float:
        return self.schedule.stale_after

    def reload(self) -> None:
        """Re-read the state if it changed and prepare its keys (the watcher does this every
        ``refresh_interval``; call it to see a change at once)."""
        self.schedule.reload()

    def close(self) -> None:
        """Stop the background watcher."""
        self.schedule.close()

    def __enter__(self) -> "Signer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def kid(self) -> str:
        """The kid ``sign`` would use now."""
        return self.schedule.key(self._clock()).record.kid

    @property
    def last_good_read(self) -> float | None:
        return self.schedule.last_good_read

    def sign(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        subject: str | None = None,
        audience: str | list[str] | None = None,
        ttl: float | None = None,
        orig_iat: int | None = None,
    ) -> str:
        """Sign ``claims`` plus iat, exp, jti (and iss, sub, aud when given; orig_iat for refreshes)."""
        lifetime = self._lifetime(ttl)
        body: dict[str, Any] = dict(claims) if claims else {}
        if body and not _RESERVED.isdisjoint(body):
            _check_claims(body, {"iss": self._issuer, "sub": subject, "aud": audience})
        sub = subject if subject is not None else body.get("sub")
        if sub is not None and sub.__class__ is not str:
            raise ValueError(f"subject must be a string (RFC 7519), got {type(sub).__name__}")
        now = self._clock()
        key = self.schedule.key(now)
        iat = int(now)
        if orig_iat is not None and (orig_iat.__class__ is not int or orig_iat > iat):
            raise ValueError(f"orig_iat {orig_iat!r} must be an integer no later than iat ({iat}): a session cannot start after its token")
        if self.sessions.replica is not None:
            self.sessions.check_current()
            if sub is not None:
                iat = self.sessions.stamp(body, sub, iat, now, orig_iat)
        body["iat"] = iat
        body["exp"] = iat + int(lifetime)
        body["jti"] = b64url_encode(self._jti_cipher.update(next(self._jti_counter).to_bytes(16, "big")))
        if orig_iat is not None:
            body["orig_iat"] = orig_iat
        if self._issuer is not None:
            body["iss"] = self._issuer
        if subject is not None:
            body["sub"] = subject
        if audience is not None:
            body["aud"] = audience
        signing_input = key.header + payload_segment(body)
        return f"{signing_input}.{key.sign(signing_input.encode('ascii'))}"

    def _lifetime(self, ttl: float | None) -> float:
        """A token's lifetime: ``ttl``, or token_lifetime when None; whole seconds, positive and
        at most token_lifetime (which the retirement window is sized for), else ValueError."""
        longest = self._policy.token_lifetime
        lifetime = longest if ttl is None else ttl
        if not 0 < lifetime <= longest:
            raise ValueError(
                f"ttl {format_duration(lifetime)} must be positive and at most token_lifetime "
                f"({format_duration(self._policy.token_lifetime)}), which the retirement window is sized for"
            )
        if lifetime != int(lifetime):
            raise ValueError(f"ttl {format_duration(lifetime)}: token lifetimes are whole seconds (exp is an integer)")
        return lifetime

    # -- refresh chains ----------------------------------------------------------------------

    def refresh(self, token: str, *, ttl: float | None = None) -> str:
        """A new token for ``token`` (one this issuer signed, still valid or expired within
        ``refresh_grace``), carrying the chain's ``orig_iat``, subject, audience and custom
        claims, with a new jti; refused once now >= orig_iat + refresh_max_age, and when a
        revocation cutoff or session bump applies to the chain's orig_iat."""
        now = self._clock()
        snap = self.schedule.snapshot()
        try:
            header, parts = decode_header(token, ALGORITHMS)
            public = snap.public.get(header["kid"])
            record = snap.state.get(header["kid"]) if snap.state is not None else None
            if public is None or record is None:
                raise RefreshRefused(f"token's key {header['kid']!r} is not one of this issuer's published keys")
            if header["alg"] != record.alg:  # strict pairing: a key verifies only its own algorithm
                raise RefreshRefused(f"token's alg {header['alg']} is not its key's ({record.alg})")
            claims, _ = verified_claims(public, parts, record.alg)
        except InvalidToken as e:
            raise RefreshRefused(f"token cannot be refreshed: {e}") from e
        exp, iat = claims.get("exp"), claims.get("iat")
        if type(exp) is not int or type(iat) is not int:
            raise RefreshRefused("token cannot be refreshed: exp and iat must be integers")
        if self._issuer is not None and claims.get("iss") != self._issuer:
            raise RefreshRefused("token cannot be refreshed: it names another issuer")
        orig = claims.get("orig_iat", iat)  # the chain's start, signed into every token of it
        if type(orig) is not int or orig > iat:
            raise RefreshRefused("token cannot be refreshed: orig_iat must be an integer no later than iat")
        ends = orig + self._policy.refresh_max_age
        if now >= ends:
            raise RefreshRefused(
                f"session started at {iso(orig)} reached refresh_max_age "
                f"({format_duration(self._policy.refresh_max_age)}) at {iso(ends)}: sign in again"
            )
        if now > exp + self._policy.refresh_grace:
            raise RefreshRefused(
                f"token expired at {iso(exp)}, more than refresh_grace "
                f"({format_duration(self._policy.refresh_grace)}) ago"
            )
        try:
            self.sessions.check_refresh({**claims, "iat": orig})
        except InvalidToken as e:
            raise RefreshRefused(f"session is revoked: {e}") from e
        # A ttl given is checked as sign checks it; only the chain's end shortens it.
        lifetime = float(exp - iat) if ttl is None else self._lifetime(ttl)
        lifetime = min(lifetime, self._policy.token_lifetime, float(int(ends - now)) or 1.0)
        custom = {k: v for k, v in claims.items() if k not in _RESERVED}
        subject = claims.get("sub")
        audience = claims.get("aud")
        return self.sign(
            custom,
            subject=subject if isinstance(subject, str) else None,
            audience=audience if isinstance(audience, (str, list)) else None,
            ttl=max(1.0, lifetime),
            orig_iat=orig,
        )
