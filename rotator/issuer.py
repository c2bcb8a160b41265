"""Token issuers sign with the key the keystore says is active now, and with no other.

The hot path does no I/O and takes no lock: ``sign`` reads one immutable
snapshot of the key schedule and signs. A background watcher refreshes that
snapshot every ``refresh_interval`` seconds with a cheap check (a stat of the
file keystore, a conditional GET on S3), decrypting the active key and its
published, confirmed successor ahead of time. The successor takes over at its
activation instant, which the snapshot already tells, so a storage or KMS
outage across a rotation changes nothing for signing. Past what the cached
schedule covers, with no successful read since, ``sign`` refuses with the cause.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ._b64 import b64url_encode
from ._fork import on_fork
from .clocks import host_clock_error
from .config import Policy
from .durations import format_duration, format_time
from .errors import KeystoreError, NoActiveKey, RotatorError
from .jose import es256_signature, header_segment
from .keys import private_from_bytes, public_key_from_jwk
from .keystore import Keystore
from .publish import Publisher, jwks_kids
from .sealing import Sealer, open_sealer
from .state import KeyRecord, State
from .revocation._records import revoked_reason
from .verifier._revocation import replica_of

__all__ = ["Signer", "RefreshRefused", "SubjectRevoked", "SIGNER_CLAIMS"]

# Claims the signer sets itself; a caller passing one is refused, never silently overridden.
SIGNER_CLAIMS = ("iat", "exp", "nbf", "jti", "orig_iat")


class RefreshRefused(RotatorError):
    """A token that cannot be refreshed: invalid, expired past the grace, past the chain's
    absolute bound, or revoked."""

    code = "refresh_refused"
    exit_code = 1


class SubjectRevoked(RotatorError):
    """A token the revocation records would void at every verifier: its subject is banned,
    or the session it continues (orig_iat) or the version it carries was revoked."""

    code = "subject_revoked"
    exit_code = 1


def _check_claims(claims: Mapping[str, Any], set_elsewhere: Mapping[str, object]) -> None:
    """Refuse, never drop: claims the signer sets, and claims also given by argument or by
    the signer's issuer. (Values that are not finite JSON are refused when serialised.)"""
    for name in SIGNER_CLAIMS:
        if name in claims:
            raise ValueError(f"claim {name!r} is set by the signer")
    for name, value in set_elsewhere.items():
        if name in claims and value is not None:
            raise ValueError(f"claim {name!r} is given twice: as a claim and by the signer's {name} setting")


# Built once: json.dumps with non-default options would build an encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_RESERVED = frozenset((*SIGNER_CLAIMS, "iss", "sub", "aud"))


def _payload(claims: Mapping[str, Any]) -> bytes:
    try:
        return _ENCODER.encode(claims).encode("utf-8")
    except ValueError as e:
        raise ValueError(f"claims hold a number that is not finite ({e})") from e
    except TypeError as e:
        raise ValueError(f"claims hold a value that is not JSON ({e})") from e


def _iso(ts: float | None) -> str:
    return "never" if ts is None else format_time(ts)


@dataclass(frozen=True)
class _Key:
    record: KeyRecord
    private: ec.EllipticCurvePrivateKey
    header: str  # the encoded JWS header segment plus its trailing "."

    @classmethod
    def of(cls, record: KeyRecord, private: ec.EllipticCurvePrivateKey) -> "_Key":
        return cls(record, private, header_segment(record.kid) + ".")


@dataclass(frozen=True)
class _Snapshot:
    """One read of the state, prepared for signing. Immutable: swapped whole."""

    state: State | None
    read_at: float
    active: _Key | None = None
    successor: _Key | None = None
    switch_at: float | None = None  # when the successor takes over
    refusal: RotatorError | None = None  # why nothing may sign, by this state
    retry: bool = False  # the refusal may pass (a decryption failed): read the state again next time
    public: Mapping[str, ec.EllipticCurvePublicKey] = field(default_factory=dict)  # every published key


class Signer:
    """Signs claims with the active key (see the module docstring for the schedule).

    ``publisher``: each new state's active key is also looked up in the JWKS the
    publish target serves, and a key it lacks (a keystore restored from an old
    backup) never signs. ``revocation``: the verifier's hooks object
    (``rotator.verifier`` ``Revocation``) applied to refresh chains' ``orig_iat``.
    ``revocations``: a ``rotator.revocation`` store; its replica gives the subject's
    session version, stamped into new tokens as ``session_claim``, and its records
    refuse refreshes of revoked chains (no I/O per token).
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
        revocation: Any = None,
        revocations: Any = None,
        session_claim: str = "sv",
        revocation_max_staleness: float = 30.0,
        storage_clock: bool = True,
    ) -> None:
        self._keystore = keystore
        self._policy = policy
        self._passphrase = passphrase
        self._passphrase_source = passphrase_source
        self._allow_plaintext = allow_plaintext
        self._issuer = issuer
        self._clock = clock
        self._kms_key_id = kms_key_id
        self._publisher = publisher
        self.refresh_interval = refresh_interval
        # A read this recent means the cached state is current, even past its schedule.
        self.stale_after = max(3 * refresh_interval, 10.0)
        self._watch = watch
        # A rotator.revocation store: its replica gives each subject's session version (stamped
        # into new tokens) and cutoff, and refuses refreshes of revoked chains; no I/O per token.
        self._replica = replica_of(revocations) if revocations is not None else None
        self._session_claim = session_claim
        self._revocation_max_staleness = revocation_max_staleness
        # What a refresh must pass: the hooks' checks and the replica's records.
        self._refresh_checks: list[Callable[[Mapping[str, Any]], None]] = [
            source.check for source in (revocation, self._replica) if source is not None
        ]
        # Compare this host's clock with the store's at every read, by the rule writers use:
        # tokens signed by a clock off the fleet's are refused by verifiers (or die early).
        # Only a test driving simulated time, which no store shares, turns this off.
        self._storage_clock = storage_clock
        self._clock_error: RotatorError | None = None
        self._ever_loaded = False
        self._snapshot: _Snapshot | None = None
        self._token: object = object()
        self._last_good_read: float | None = None
        self._last_error: str | None = None
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._new_process_state()
        on_fork(self)

    def _new_process_state(self) -> None:
        """What a process must not share with its parent: the locks, and the jti key with its
        counter (unique and unpredictable, without a system call per token)."""
        self._refresh_lock = threading.Lock()  # serialises reloads; sign never takes it
        self._start_lock = threading.Lock()  # first use only
        # jti: the counter through AES under a random key: unique (a permutation of distinct
        # counters) and unpredictable, so one user's token does not reveal the next user's jti.
        self._jti_cipher = Cipher(algorithms.AES(os.urandom(16)), modes.ECB()).encryptor()
        self._jti_counter = itertools.count()

    def _after_fork(self) -> None:
        """In a forked child (gunicorn --preload, uWSGI, Celery prefork): its own jti key and
        locks, and, for a signer already in use, a watcher of its own (the parent's thread
        does not exist here). A closed signer stays closed."""
        self._new_process_state()
        running = self._watcher is not None and not self._stop.is_set()
        self._watcher = None
        self._stop = threading.Event()
        if running:
            self._start_watcher()

    # -- the background refresh ----------------------------------------------------------

    def reload(self) -> None:
        """Re-read the state if it changed and prepare its keys (the watcher calls this every
        ``refresh_interval``; call it to see a change at once). Storage and KMS errors
        keep the previous snapshot (and are reported by ``sign`` once it runs out)."""
        with self._refresh_lock:
            try:
                changed = self._keystore.load_if_changed(self._token)
                now = self._clock()
                if self._storage_clock:
                    self._clock_error = host_clock_error(
                        now, self._keystore.storage_time(), self._policy.max_clock_skew,
                        self._keystore.location, "signing refused: verifiers would reject or cut short what this host signs",
                    )
                previous = self._snapshot
                if changed is None:
                    if previous is not None and previous.state is not None and _incomplete(previous):
                        self._snapshot = self._prepare(previous.state, now, previous)
                    self._last_good_read, self._last_error = now, None
                    return
                token, state = changed
                self._snapshot = self._prepare(state, now, previous)
                self._last_good_read, self._last_error = now, None
                if not self._snapshot.retry:
                    self._token = token
            except RotatorError as e:
                self._last_error = str(e)
                if self._snapshot is None:
                    raise

    def _sealer(self, state: State) -> Sealer:
        return open_sealer(
            state.encryption,
            self._passphrase,
            self._allow_plaintext,
            kms_key_id=self._kms_key_id,
            passphrase_source=self._passphrase_source,
        )

    def _decrypt(self, state: State, record: KeyRecord, previous: _Snapshot | None) -> _Key:
        for known in (previous.active, previous.successor) if previous is not None else ():
            if known is not None and known.record.kid == record.kid:
                return _Key.of(record, known.private)  # already decrypted: no KMS call
        assert record.private is not None
        return _Key.of(record, private_from_bytes(self._sealer(state).unseal(record.private, state.keyset, record.kid)))

    def _prepare(self, state: State | None, now: float, previous: _Snapshot | None) -> _Snapshot:
        where = self._keystore.location
        active = state.active if state else None
        if state is None and self._ever_loaded:
            return _Snapshot(state, now, refusal=NoActiveKey(
                f"the key set in {where} is gone (deleted, moved or its storage lost): restore it from a "
                "backup and run `rotator recover`; a new key set signs only after `rotator recover --other-lineage`"
            ))
        if state is not None:
            self._ever_loaded = True
        if state is None or active is None:
            return _Snapshot(state, now, refusal=NoActiveKey(f"no active signing key in {where}: run `rotator rotate` first"))
        public = {k.kid: public_key_from_jwk(k.public) for k in state.keys if k.published}
        if active.published_at is None or active.private is None:
            return _Snapshot(
                state, now, refusal=NoActiveKey(f"active key {active.kid} in {where} is unconfirmed or has no private half")
            )
        refusal = self._unpublished(active)
        if refusal:
            return _Snapshot(state, now, refusal=NoActiveKey(refusal), public=public)
        try:
            key = self._decrypt(state, active, previous)
        except RotatorError as e:
            return _Snapshot(state, now, refusal=e, retry=True, public=public)
        except ValueError as e:
            return _Snapshot(state, now, refusal=KeystoreError(f"private key of {active.kid} is not a P-256 key: {e}"), public=public)
        successor, switch_at = None, None
        candidate = next((k for k in state.pending if k.published_at is not None and k.private is not None), None)
        if candidate is not None and active.activated_at is not None and candidate.published_at is not None:
            try:
                successor = self._decrypt(state, candidate, previous)
                switch_at = max(active.activated_at + self._policy.rotation_period, candidate.published_at + self._policy.max_age)
            except (RotatorError, ValueError):
                successor = None  # retried at the next refresh (the snapshot is incomplete)
        return _Snapshot(state, now, key, successor, switch_at, public=public)

    def _unpublished(self, active: KeyRecord) -> str | None:
        if self._publisher is None:
            return None
        try:
            body = self._publisher.read_back()
        except RotatorError:
            return None  # a publish outage: the state's own record of the confirmed publication stands
        try:
            served = jwks_kids(body) if body is not None else []
        except (ValueError, KeyError, TypeError):
            served = []
        if active.kid in served:
            return None
        return (
            f"active key {active.kid} is not in the JWKS served at {self._publisher.location}: the keystore "
            "may have been restored from a backup or recreated; run `rotator recover`"
        )

    def _start(self) -> _Snapshot:
        """First use: one synchronous read, then the watcher (if enabled) takes over."""
        with self._start_lock:
            if self._snapshot is None:
                self.reload()
        with self._start_lock:
            if self._watch and self._watcher is None:
                self._start_watcher()
        assert self._snapshot is not None
        return self._snapshot

    def _start_watcher(self) -> None:
        self._watcher = threading.Thread(
            target=_watch, args=(weakref.ref(self), self._stop, self.refresh_interval),
            name="rotator-signer-watch", daemon=True,
        )
        self._watcher.start()

    def close(self) -> None:
        """Stop the background watcher."""
        self._stop.set()

    def __enter__(self) -> "Signer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the hot path ----------------------------------------------------------------------

    def _key(self, now: float) -> _Key:
        snap = self._snapshot or self._start()
        if self._clock_error is not None:
            raise type(self._clock_error)(str(self._clock_error))
        if snap.refusal is not None:
            raise type(snap.refusal)(str(snap.refusal))
        assert snap.active is not None
        period = self._policy.rotation_period
        if snap.successor is not None and snap.switch_at is not None and now >= snap.switch_at:
            key, covered_until = snap.successor, snap.switch_at + period
        else:
            key = snap.active
            activated = key.record.activated_at or snap.read_at
            covered_until = snap.switch_at if snap.switch_at is not None else activated + period
        if now > covered_until:
            last = self._last_good_read
            if last is None or now - last > self.stale_after:
                raise NoActiveKey(
                    f"signing refused: the key schedule read at {_iso(snap.read_at)} covered until "
                    f"{_iso(covered_until)}, and the keystore {self._keystore.location} has not been read "
                    f"since {_iso(last)}" + (f": {self._last_error}" if self._last_error else "")
                )
        return key

    @property
    def kid(self) -> str:
        """The kid ``sign`` would use now."""
        return self._key(self._clock()).record.kid

    @property
    def last_good_read(self) -> float | None:
        return self._last_good_read

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
        key = self._key(now)
        iat = int(now)
        if orig_iat is not None and (orig_iat.__class__ is not int or orig_iat > iat):
            raise ValueError(f"orig_iat {orig_iat!r} must be an integer no later than iat ({iat}): a session cannot start after its token")
        if self._replica is not None:
            self._check_replica_current()
            if sub is not None:
                iat = self._stamp(body, sub, iat, now, orig_iat)
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
        signing_input = key.header + b64url_encode(_payload(body))
        return f"{signing_input}.{es256_signature(key.private, signing_input.encode('ascii'))}"

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

    def _check_replica_current(self) -> None:
        """Refuse to sign (and so to refresh) past the staleness bound the verifiers use, by
        the replica's own rule: a signer that cannot confirm it holds every revocation must
        not mint what they would refuse."""
        assert self._replica is not None
        stale = self._replica.staleness(self._revocation_max_staleness)
        if stale is not None:
            raise type(stale)(f"signing refused: the revocation replica has not confirmed it is current: {stale}")

    def _stamp(self, body: dict[str, Any], sub: str, iat: int, now: float, orig_iat: int | None) -> int:
        """Stamp the subject's session version; move iat onto a cutoff written just now (cutoffs
        are whole seconds of Redis's clock, rounded up), so a token signed right after a
        revocation lives.
        Refuse a token the records would void anyway (a ban in force, a revoked chain)."""
        assert self._replica is not None
        tables = self._replica.tables
        version = tables.versions.get(sub)
        if version is not None and self._session_claim not in body:
            body[self._session_claim] = version.version
        cutoff = tables.cutoffs.get(sub)
        # Cutoffs carry the Redis server's time, rounded up: a sign-in right after one, on a
        # host whose clock is behind Redis's by up to the leeway verifiers allow an iat, is
        # stamped at the cutoff instead of void on arrival.
        if cutoff is not None and orig_iat is None and iat < cutoff.not_before <= now + max(1.0, self._policy.leeway):
            iat = int(cutoff.not_before)
        start = iat if orig_iat is None else orig_iat
        reason = revoked_reason(tables, {"sub": sub, "iat": start, self._session_claim: body.get(self._session_claim)},
                                self._session_claim)
        if reason is None:
            return iat
        void = "a token signed now would be rejected by every verifier"
        if cutoff is not None and orig_iat is None and start < cutoff.not_before:  # a new session, yet void
            if cutoff.not_before > cutoff.revoked_at:
                raise SubjectRevoked(f"subject {sub!r} is banned until {_iso(cutoff.not_before)}: {void}")
            raise SubjectRevoked(
                f"subject {sub!r} has a revocation cutoff at {_iso(cutoff.not_before)}, ahead of this "
                f"host's clock ({_iso(now)}): {void}; check the clocks"
            )
        raise SubjectRevoked(f"subject {sub!r}: {reason}, so {void}")

    # -- refresh chains ----------------------------------------------------------------------

    def refresh(self, token: str, *, ttl: float | None = None) -> str:
        """A new token for ``token`` (one this issuer signed, still valid or expired within
        ``refresh_grace``), carrying the chain's ``orig_iat``, subject, audience and custom
        claims, with a new jti; refused once now >= orig_iat + refresh_max_age, and when a
        revocation cutoff or session bump applies to the chain's orig_iat."""
        from .verifier import InvalidToken
        from .verifier._token import decode_header, verified_claims

        now = self._clock()
        snap = self._snapshot or self._start()
        try:
            header, parts = decode_header(token, ("ES256",))
            public = snap.public.get(header["kid"])
            if public is None:
                raise RefreshRefused(f"token's key {header['kid']!r} is not one of this issuer's published keys")
            claims, _ = verified_claims(public, parts)
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
                f"session started at {_iso(orig)} reached refresh_max_age "
                f"({format_duration(self._policy.refresh_max_age)}) at {_iso(ends)}: sign in again"
            )
        if now > exp + self._policy.refresh_grace:
            raise RefreshRefused(
                f"token expired at {_iso(exp)}, more than refresh_grace "
                f"({format_duration(self._policy.refresh_grace)}) ago"
            )
        for check in self._refresh_checks:
            try:
                check({**claims, "iat": orig})
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


def _incomplete(snapshot: _Snapshot) -> bool:
    """A successor the state names but that could not be decrypted yet (KMS outage)."""
    state = snapshot.state
    if state is None or snapshot.refusal is not None or snapshot.successor is not None:
        return False
    return any(k.published_at is not None and k.private is not None for k in state.pending)


def _watch(signer_ref: "weakref.ref[Signer]", stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        signer = signer_ref()
        if signer is None:
            return
        try:
            signer.reload()
        except Exception:  # noqa: BLE001 (kept in the signer's last error; sign reports it)
            pass
        del signer
