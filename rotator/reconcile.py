"""One reconcile step: load, plan, compare-and-swap write, publish, confirm, record.

Used by ``rotator rotate``, ``retire``, ``revoke`` and every tick of ``run``.
Each stage is safe to crash after: the next step sees what was stored and
finishes the work, so running it late, twice or from two hosts converges.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

from .clocks import host_clock_error
from .config import Policy
from .errors import ClockSkewError, ConflictError, KeystoreError, PublicationGuardError, PublishError, PublishTargetAhead
from .keys import generate_private_key, private_from_bytes, private_to_bytes, public_jwk, thumbprint
from .keystore import Keystore
from .lifecycle import (
    Event,
    Plan,
    adopt,
    clamp_future,
    future_skew,
    mark_damaged,
    plan,
    record_confirmation,
)
from .publish import Marker, Publisher, build_jwks, jwks_digest, jwks_kids, publish, published_keys, refusal
from .sealing import DEFAULT_SCRYPT_N, Sealer, new_sealer, open_sealer
from .state import KeyRecord, State, new_lineage

__all__ = ["Rotator", "StepResult", "Operation", "STAGES"]

Clock = Callable[[], float]
Operation = Callable[[State, float], Plan]
# Checkpoint names, in order; tests crash at each, the daemon labels failures with them.
STAGES = ("loaded", "planned", "state_written", "published", "confirmed", "recorded")


def _no_checkpoint(stage: str) -> None:
    return None


def _refusal_of(marker: Marker | None, state: State) -> str | None:
    """Why the publish target marked ``marker`` refuses the JWKS of ``state`` (None: it takes it)."""
    return refusal(marker, state.generation, state.lineage, jwks_digest(build_jwks(state)))


def _with_lineage(state: State, marker: Marker | None) -> State:
    """``state`` with a lineage: its own; for a state from before lineages, the publish
    target's, or a new one when the target has none."""
    if state.lineage is not None:
        return state
    return replace(state, lineage=marker.lineage if marker is not None and marker.lineage else new_lineage())


@dataclass(frozen=True)
class StepResult:
    state: State
    events: tuple[Event, ...]
    conflicts: int = 0
    published: bool = False
    clock_skew: float = 0.0  # how far stored times were ahead of this host's clock (repaired)

    @property
    def warnings(self) -> tuple[Event, ...]:
        return Plan(self.state, self.events).warnings


@dataclass
class Rotator:
    keystore: Keystore
    publisher: Publisher
    policy: Policy
    passphrase: str | None = field(default=None, repr=False)
    allow_plaintext: bool = False
    clock: Clock = time.time
    scrypt_n: int = DEFAULT_SCRYPT_N
    max_attempts: int = 10
    kms_key_id: str | None = None
    # Compare this host's clock with the store's own (file times, S3 Date and Last-Modified).
    # Only a test driving simulated time, which no store shares, turns this off.
    storage_clock: bool = True
    passphrase_source: str = "the passphrase argument"  # named in the wrong-passphrase error

    def sealer_for(self, state: State | None) -> Sealer:
        if state is None:
            return new_sealer(self.passphrase, self.allow_plaintext, scrypt_n=self.scrypt_n, kms_key_id=self.kms_key_id)
        return open_sealer(
            state.encryption,
            self.passphrase,
            self.allow_plaintext,
            kms_key_id=self.kms_key_id,
            passphrase_source=self.passphrase_source,
        )

    def load(self) -> State | None:
        """The stored state, after checking that this configuration can open it."""
        state = self.keystore.load()
        if state is not None:
            self.sealer_for(state)
        return state

    def _key_factory(self, sealer: Sealer, keyset: str) -> Callable[[float], KeyRecord]:
        def make(now: float) -> KeyRecord:
            private = generate_private_key()
            jwk = public_jwk(private)
            kid = thumbprint(jwk)
            return KeyRecord(
                kid=kid,
                public=jwk,
                created_at=now,
                private=sealer.seal(private_to_bytes(private), keyset, kid),
            )

        return make

    def step(
        self,
        *,
        force: bool = False,
        operation: Operation | None = None,
        checkpoint: Callable[[str], None] = _no_checkpoint,
        recover: bool = False,
        other_lineage: bool = False,
    ) -> StepResult:
        """Run one reconcile step, retrying from a fresh read on compare-and-swap conflicts.

        ``recover``: the operator's recovery step (``rotator recover``): adopt the keys the
        publish target still serves (after a restored or recreated keystore), and take this
        host's clock as right for stored times ahead of it. ``other_lineage``: also when the
        target publishes another key set's JWKS (a lost keystore started afresh).
        """
        conflicts = 0
        for _ in range(self.max_attempts):
            try:
                return self._attempt(force, operation, checkpoint, conflicts, recover, other_lineage)
            except ConflictError:
                conflicts += 1
        raise KeystoreError(f"gave up after {conflicts} compare-and-swap conflicts on {self.keystore.location}")

    def _check_host_clock(self, now: float) -> None:
        """Refuse to write from a host whose clock disagrees with the store's own clock."""
        storage_now = self.keystore.storage_time() if self.storage_clock else None
        error = host_clock_error(now, storage_now, self.policy.max_clock_skew, self.keystore.location, "nothing was written")
        if error is not None:
            raise error

    def _repair_clock(self, stored: State, now: float, skew: float, recover: bool) -> Plan:
        """Stored times ``skew`` seconds ahead of this host's clock: repaired when the store's own
        record of the write shows the writer's clock was fast, refused when this host may be the
        one behind."""
        tolerance = self.policy.max_clock_skew
        if skew <= tolerance:
            return Plan(stored)
        stored_at = stored.stored_at if self.storage_clock else None
        writer_was_fast = stored_at is not None and stored_at <= now + tolerance
        if recover or writer_was_fast:
            return clamp_future(stored, now)
        raise ClockSkewError(
            f"{self.keystore.location} holds times up to {skew:.0f}s ahead of this host's clock "
            f"(tolerance {tolerance:.0f}s) and the store cannot tell which clock is wrong: fix this "
            "host's time if it is behind; if it is right, run `rotator recover` to set those times "
            "to now; nothing was written",
            skew,
        )

    def _adopt_published(self, state: State, now: float, other_lineage: bool) -> Plan:
        """What recovery takes from the publish target: its revoked list always; when the
        target is ahead of ``state`` (or holds another lineage and ``other_lineage`` says to
        take it), the keys it serves and its generation."""
        marker = self.publisher.marker()
        events: list[Event] = []
        try:
            served, skipped = published_keys(self.publisher.read_back())
        except PublicationGuardError as e:
            served, skipped = [], []
            events.append(Event("rotator.key_not_adopted", None, f"nothing adopted: {e}"))
        why = _refusal_of(marker, state)
        if why == "lineage":
            assert marker is not None
            if not other_lineage:
                raise PublishTargetAhead(self._refusal_message("lineage", marker, state))
            state = replace(state, lineage=marker.lineage)
        state = _with_lineage(state, marker)
        ahead = why is not None
        adopted = adopt(
            state,
            served,
            now,
            target_generation=marker.generation if ahead and marker is not None else None,
            revoked=self.publisher.revoked(),
        )
        skipped_events = tuple(Event("rotator.key_not_adopted", kid, "not a P-256 key with its thumbprint as kid") for kid in skipped)
        return Plan(adopted.state, tuple(events) + adopted.events + (skipped_events if ahead else ()))

    def recovery_plan(self, *, other_lineage: bool = False) -> Plan:
        """What ``step(recover=True)`` would change before its ordinary planning, written nowhere."""
        now = self.clock()
        stored = self.keystore.load()
        sealer = self.sealer_for(stored)
        state = stored if stored is not None else State(encryption=sealer.header(), lineage=new_lineage())
        events: list[Event] = []
        if stored is not None:
            repaired = self._repair_clock(stored, now, future_skew(stored, now), True)
            state = repaired.state
            events.extend(repaired.events)
        adopted = self._adopt_published(state, now, other_lineage)
        return Plan(adopted.state, tuple(events) + adopted.events)

    def _unusable(self, planned: Plan, sealer: Sealer) -> list[str]:
        """Kids of keys this plan activates whose sealed private half does not open."""
        damaged = []
        for event in planned.events:
            if event.name != "rotator.key_activated" or event.kid is None:
                continue
            key = planned.state.get(event.kid)
            if key is None or key.private is None:
                continue
            try:
                private_from_bytes(sealer.unseal(key.private, planned.state.keyset, key.kid))
            except (KeystoreError, ValueError):
                damaged.append(key.kid)
        return damaged

    def _refusal_message(self, why: str, marker: Marker, state: State) -> str:
        target = self.publisher.location
        if why == "lineage":
            return (
                f"{target} publishes the JWKS of another key set (lineage {marker.lineage}, this keystore's "
                f"{state.lineage}): the keystore was lost and started afresh, or two key sets share one publish "
                "location; if the keystore was lost, run `rotator recover --other-lineage` to adopt the keys "
                "published there, otherwise give this key set a publish location of its own; nothing was written"
            )
        if why == "diverged":
            return (
                f"{target} holds a JWKS of state generation {marker.generation} with other keys than this "
                f"keystore's generation {state.generation}: the keystore was restored from a backup or recreated; "
                "run `rotator recover` to adopt the keys it still publishes and publish again"
            )
        return (
            f"{target} holds the JWKS of state generation {marker.generation}, above this keystore's "
            f"generation {state.generation}: the keystore was restored from a backup or recreated; "
            "run `rotator recover` to adopt the keys it still publishes and publish again"
        )

    def _check_target(self, saved: State, state: State) -> State:
        """Before a step writes anything: the publish target must take what this step would
        publish. Its marker refuses a state of another lineage, of a later generation than
        the one loaded (the keystore went back: a restored backup, a lost keystore), or of
        the served generation with other keys; its revoked list refuses a state that holds
        a key revoked there. Refused without a write, so a state that cannot publish never
        advances its generation, and `rotator recover` is the way on.

        Returns ``state`` with a lineage: a state from before lineages takes the target's."""
        marker = self.publisher.marker()
        why = _refusal_of(marker, saved)
        if why is not None:
            self._refused(saved, why)
        # A target still serving what this state last confirmed has had no revocation
        # published since; anything else (nothing there, another document) may have.
        confirmed_here = marker is not None and marker.digest is not None and marker.digest == saved.published_digest
        revoked = frozenset() if confirmed_here else self.publisher.revoked()
        live = sorted(k.kid for k in state.keys if k.published and k.kid in revoked)
        if live:
            raise PublishTargetAhead(
                f"{self.publisher.location} records key(s) {', '.join(live)} as revoked, but this keystore "
                "still holds them live: it was restored from a backup older than their revocation; run "
                "`rotator recover` to revoke them here too; nothing was written"
            )
        return _with_lineage(state, marker)

    def _refused(self, saved: State, why: str | None = None) -> None:
        """The publish target refuses this state: a race, or a keystore gone back."""
        latest = self.keystore.load()
        if latest is not None and latest.generation != saved.generation:
            raise ConflictError("a newer state was published meanwhile")
        marker = self.publisher.marker()
        if why is None:
            why = _refusal_of(marker, saved) or "ahead"
        raise PublishTargetAhead(self._refusal_message(why, marker or Marker(0), saved))

    def _attempt(
        self,
        force: bool,
        operation: Operation | None,
        checkpoint: Callable[[str], None],
        conflicts: int,
        recover: bool,
        other_lineage: bool = False,
    ) -> StepResult:
        now = self.clock()
        stored = self.keystore.load()
        sealer = self.sealer_for(stored)
        checkpoint("loaded")
        # Stored times are judged against a reading taken after the read, so a step that
        # stalled since its first reading is not mistaken for a clock problem.
        after_load = self.clock()
        self._check_host_clock(after_load)
        saved = stored if stored is not None else State(encryption=sealer.header(), lineage=new_lineage())
        state = saved
        events: list[Event] = []
        skew = future_skew(stored, after_load) if stored is not None else 0.0
        if stored is not None:
            repaired = self._repair_clock(stored, after_load, skew, recover)
            state = repaired.state
            events.extend(repaired.events)
        if recover:
            adopted = self._adopt_published(state, now, other_lineage)
            state = adopted.state
            events.extend(adopted.events)
        if operation is not None:
            applied = operation(state, now)
            state = applied.state
            events.extend(applied.events)
        new_key = self._key_factory(sealer, saved.keyset)

        current_copy: bytes | None = None  # what the publish target serves, once read
        have_copy = False
        published = False
        checked = False
        # plan -> publish -> record -> plan again (a confirmation can allow an activation);
        # three rounds always suffice: bootstrap needs two.
        for round_ in range(3):
            planned = plan(state, self.policy, now, new_key, force=force and round_ == 0)
            damaged = self._unusable(planned, sealer)
            while damaged:
                # Never activate a key whose private half cannot be opened: mark it (every
                # one found so far stays marked) and plan again, which replaces it.
                dropped = mark_damaged(state, damaged, now)
                state = dropped.state
                events.extend(dropped.events)
                planned = plan(state, self.policy, now, new_key, force=force and round_ == 0)
                damaged = self._unusable(planned, sealer)
            state = planned.state
            events.extend(planned.events)
            body = build_jwks(state)
            digest = jwks_digest(body)
            if state.published_digest == digest:
                if not have_copy:
                    current_copy, have_copy = self.publisher.read_back(), True
                if current_copy == body:
                    break
            checkpoint("planned")
            if not checked and not recover:
                # Once, before this step's first write of either kind.
                state, checked = self._check_target(saved, state), True
            if state != saved:
                # The state names every key before any JWKS does: a published key
                # always has its private half stored.
                state = saved = self.keystore.save(state, saved.generation)
                checkpoint("state_written")
            if not publish(self.publisher, state, body):
                self._refused(saved)
            published = True
            checkpoint("published")
            current_copy, have_copy = self.publisher.read_back(), True
            if current_copy != body:
                latest = self.keystore.load()
                if latest is not None and latest.generation != saved.generation:
                    raise ConflictError("a newer state was published meanwhile")
                raise PublishError(
                    f"read-back of {self.publisher.location} does not match the JWKS just written "
                    "(a stale copy or a cache in front of it); pending keys stay unconfirmed"
                )
            checkpoint("confirmed")
            # Stamp the confirmation after the read-back, not with the step's start
            # time: a step that stalled must not make a key look published earlier
            # than it was, or its M wait would be cut short.
            confirmed = record_confirmation(state, jwks_kids(body), digest, self.clock(), self.publisher.etag)
            state = confirmed.state
            events.extend(confirmed.events)
        if state != saved:
            state = self.keystore.save(state, saved.generation)
            checkpoint("recorded")
        return StepResult(
            state=state, events=tuple(events), conflicts=conflicts, published=published, clock_skew=skew
        )
