"""The key schedule a signer follows: which key signs now, and which takes over when.

``KeySchedule`` holds one immutable snapshot of the keystore's state, prepared for
signing: the active key and its published, confirmed successor, both decrypted ahead
of time, and the successor's activation instant (``lifecycle.activation_at``, the
planner's own rule). A background watcher refreshes the snapshot every
``refresh_interval`` seconds with a cheap check (a stat of the file keystore, a
conditional GET on S3), so a storage or KMS outage across a rotation changes nothing
for signing. Past what the cached schedule covers, with no successful read since,
``key`` refuses with the cause.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Callable, Mapping


from .._fork import on_fork
from ..clocks import host_clock_error
from ..config import Policy
from ..durations import format_time
from ..errors import KeystoreError, NoActiveKey, RotatorError
from ..jose import header_segment, signing_function
from ..keys import PrivateKey, PublicKey, private_from_bytes, public_key_from_jwk
from ..keystore import Keystore
from ..lifecycle import activation_at
from ..publish import Publisher, jwks_kids
from ..sealing import SealerOptions
from ..state import KeyRecord, State

__all__ = ["KeySchedule", "SigningKey", "iso"]


def iso(ts: float | None) -> str:
    return "never" if ts is None else format_time(ts)


@dataclass(frozen=True)
class SigningKey:
    record: KeyRecord
    private: PrivateKey
    header: str  # the encoded JWS header segment plus its trailing "."
    sign: Callable[[bytes], str]  # the encoded signature of a signing input, by this key

    @classmethod
    def of(cls, record: KeyRecord, private: PrivateKey) -> "SigningKey":
        return cls(record, private, header_segment(record.kid, record.alg) + ".", signing_function(record.alg, private))


@dataclass(frozen=True)
class Snapshot:
    """One read of the state, prepared for signing. Immutable: swapped whole."""

    state: State | None
    read_at: float
    active: SigningKey | None = None
    successor: SigningKey | None = None
    switch_at: float | None = None  # when the successor takes over
    refusal: RotatorError | None = None  # why nothing may sign, by this state
    retry: bool = False  # the refusal may pass (a decryption failed): read the state again next time
    public: Mapping[str, PublicKey] = field(default_factory=dict)  # every published key

    @property
    def incomplete(self) -> bool:
        """A successor the state names but that could not be decrypted yet (KMS outage)."""
        state = self.state
        if state is None or self.refusal is not None or self.successor is not None:
            return False
        return any(k.published_at is not None and k.private is not None for k in state.pending)


class KeySchedule:
    """The snapshot, its reload, the decryption and publication checks, and the watcher
    (see the module docstring). ``publisher``: each new state's active key is also looked
    up in the JWKS the publish target serves, and a key it lacks (a keystore restored
    from an old backup) never signs."""

    def __init__(
        self,
        keystore: Keystore,
        policy: Policy,
        *,
        passphrase: str | None,
        allow_plaintext: bool,
        clock: Callable[[], float],
        kms_key_id: str | None,
        publisher: Publisher | None,
        passphrase_source: str,
        refresh_interval: float,
        watch: bool,
        storage_clock: bool,
    ) -> None:
        self._keystore = keystore
        self._policy = policy
        self._sealer_options = SealerOptions(passphrase, allow_plaintext, kms_key_id, passphrase_source)
        self._clock = clock
        self._publisher = publisher
        self.refresh_interval = refresh_interval
        # A read this recent means the cached state is current, even past its schedule.
        self.stale_after = max(3 * refresh_interval, 10.0)
        self._watch = watch
        # Compare this host's clock with the store's at every read, by the rule writers use:
        # tokens signed by a clock off the fleet's are refused by verifiers (or die early).
        # Only a test driving simulated time, which no store shares, turns this off.
        self._storage_clock = storage_clock
        self._clock_error: RotatorError | None = None
        self._ever_loaded = False
        self._snapshot: Snapshot | None = None
        self._token: object = object()
        self.last_good_read: float | None = None
        self._last_error: str | None = None
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._new_locks()
        on_fork(self)

    def _new_locks(self) -> None:
        self._refresh_lock = threading.Lock()  # serialises reloads; signing never takes it
        self._start_lock = threading.Lock()  # first use only

    def _after_fork(self) -> None:
        """In a forked child (gunicorn --preload, uWSGI, Celery prefork): its own locks and,
        for a schedule already in use, a watcher of its own (the parent's thread does not
        exist here). A closed schedule stays closed."""
        self._new_locks()
        running = self._watcher is not None and not self._stop.is_set()
        self._watcher = None
        self._stop = threading.Event()
        if running:
            self._start_watcher()

    @property
    def location(self) -> str:
        return self._keystore.location

    # -- the background refresh ----------------------------------------------------------

    def reload(self) -> None:
        """Re-read the state if it changed and prepare its keys (the watcher calls this every
        ``refresh_interval``). Storage and KMS errors keep the previous snapshot (and are
        reported by ``key`` once it runs out)."""
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
                    if previous is not None and previous.state is not None and previous.incomplete:
                        self._snapshot = self._prepare(previous.state, now, previous)
                    self.last_good_read, self._last_error = now, None
                    return
                token, state = changed
                self._snapshot = self._prepare(state, now, previous)
                self.last_good_read, self._last_error = now, None
                if not self._snapshot.retry:
                    self._token = token
            except RotatorError as e:
                self._last_error = str(e)
                if self._snapshot is None:
                    raise

    def _decrypt(self, state: State, record: KeyRecord, previous: Snapshot | None) -> SigningKey:
        for known in (previous.active, previous.successor) if previous is not None else ():
            if known is not None and known.record.kid == record.kid:
                return SigningKey.of(record, known.private)  # already decrypted: no KMS call
        assert record.private is not None
        return SigningKey.of(record, private_from_bytes(self._sealer_options.open(state).unseal(record.private, state.keyset, record.kid), record.alg))

    def _prepare(self, state: State | None, now: float, previous: Snapshot | None) -> Snapshot:
        where = self._keystore.location
        active = state.active if state else None
        if state is None and self._ever_loaded:
            return Snapshot(state, now, refusal=NoActiveKey(
                f"the key set in {where} is gone (deleted, moved or its storage lost): restore it from a "
                "backup and run `rotator recover`; a new key set signs only after `rotator recover --other-lineage`"
            ))
        if state is not None:
            self._ever_loaded = True
        if state is None or active is None:
            return Snapshot(state, now, refusal=NoActiveKey(f"no active signing key in {where}: run `rotator rotate` first"))
        public = {k.kid: public_key_from_jwk(k.public, k.alg) for k in state.keys if k.published}
        if active.published_at is None or active.private is None:
            return Snapshot(
                state, now, refusal=NoActiveKey(f"active key {active.kid} in {where} is unconfirmed or has no private half")
            )
        refusal = self._unpublished(active)
        if refusal:
            return Snapshot(state, now, refusal=NoActiveKey(refusal), public=public)
        try:
            key = self._decrypt(state, active, previous)
        except RotatorError as e:
            return Snapshot(state, now, refusal=e, retry=True, public=public)
        except ValueError as e:
            return Snapshot(state, now, refusal=KeystoreError(f"private key of {active.kid} is not a {active.alg} key: {e}"), public=public)
        successor, switch_at = None, None
        candidate = next((k for k in state.pending if k.published_at is not None and k.private is not None), None)
        if candidate is not None:
            switch_at = activation_at(active, candidate, self._policy)
        if candidate is not None and switch_at is not None:
            try:
                successor = self._decrypt(state, candidate, previous)
            except (RotatorError, ValueError):
                successor, switch_at = None, None  # retried at the next refresh (the snapshot is incomplete)
        return Snapshot(state, now, key, successor, switch_at, public=public)

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

    def snapshot(self) -> Snapshot:
        """The current snapshot; at first use, one synchronous read, then the watcher (if
        enabled) takes over."""
        snap = self._snapshot
        if snap is not None:
            return snap
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

    # -- the key to sign with ----------------------------------------------------------------

    def key(self, now: float) -> SigningKey:
        """The key that signs at ``now``, or the refusal (NoActiveKey, a clock or keystore
        error) that says why none may."""
        snap = self._snapshot or self.snapshot()
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
            last = self.last_good_read
            if last is None or now - last > self.stale_after:
                raise NoActiveKey(
                    f"signing refused: the key schedule read at {iso(snap.read_at)} covered until "
                    f"{iso(covered_until)}, and the keystore {self._keystore.location} has not been read "
                    f"since {iso(last)}" + (f": {self._last_error}" if self._last_error else "")
                )
        return key


def _watch(schedule_ref: "weakref.ref[KeySchedule]", stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        schedule = schedule_ref()
        if schedule is None:
            return
        try:
            schedule.reload()
        except Exception:  # noqa: BLE001 (kept in the schedule's last error; key() reports it)
            pass
        del schedule
