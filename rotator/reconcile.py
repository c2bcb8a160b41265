"""One reconcile step: load, plan, compare-and-swap write, publish, confirm, record.

Used by ``rotator rotate``, ``retire``, ``revoke`` and every tick of ``run``.
Each stage is safe to crash after: the next step sees what was stored and
finishes the work, so running it late, twice or from two hosts converges.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from .clocks import host_clock_error
from .config import Policy
from .errors import ConfigError, ConflictError, KeystoreError, PublishError, PublishTargetAhead
from .keys import ALG, generate_private_key, private_to_bytes, public_jwk, thumbprint
from .keystore import Keystore
from .lifecycle import (
    Event,
    Plan,
    future_skew,
    mark_damaged,
    plan,
    record_confirmation,
)
from .publish import Marker, Publisher, build_jwks, jwks_digest, jwks_kids, publish
from .recovery import adopt_published, check_target, refusal_message, refusal_of, repair_clock
from .sealing import DEFAULT_SCRYPT_N, Sealer, SealerOptions, opens
from .state import KeyRecord, State, new_lineage

__all__ = ["Rotator", "StepResult", "Operation", "STAGES", "FAILURE_STAGES", "Trail", "failure_stage"]

Clock = Callable[[], float]
Operation = Callable[[State, float], Plan]
# Checkpoint names, in order; tests crash at each, the daemon labels failures with them.
STAGES = ("loaded", "planned", "state_written", "published", "confirmed", "recorded")
# Where a step failed, as metrics and logs name it: the stage after the last checkpoint passed.
FAILURE_STAGES = ("load", "plan", "write_state", "publish", "confirm", "record")
_FAILED_IN = dict(zip((None, *STAGES), (*FAILURE_STAGES, "record")))


def failure_stage(last_checkpoint: str | None, error: BaseException) -> str:
    """The stage a step failed in, from the last checkpoint it passed and the error."""
    stage = _FAILED_IN.get(last_checkpoint, "load")
    if isinstance(error, PublishError):
        if stage == "plan":
            return "confirm"  # nothing to change: the step was re-reading the published JWKS
        if stage == "write_state":
            return "publish"  # the state was unchanged, so the step went straight to publishing
    return stage


class Trail:
    """A ``checkpoint`` for ``Rotator.step`` that remembers the last checkpoint passed."""

    def __init__(self) -> None:
        self.last: str | None = None

    def __call__(self, stage: str) -> None:
        self.last = stage

    def failed_in(self, error: BaseException) -> str:
        return failure_stage(self.last, error)


def _no_checkpoint(stage: str) -> None:
    return None


def key_factory(sealer: Sealer, keyset: str, alg: str, rsa_bits: int) -> Callable[[float], KeyRecord]:
    """What the planner makes new keys with: a fresh ``alg`` key, its kid the thumbprint,
    its private half sealed for this key set."""

    def make(now: float) -> KeyRecord:
        private = generate_private_key(alg, rsa_bits)
        jwk = public_jwk(private)
        kid = thumbprint(jwk)
        return KeyRecord(
            kid=kid, public=jwk, created_at=now, private=sealer.seal(private_to_bytes(private), keyset, kid), alg=alg
        )

    return make


@dataclass(frozen=True)
class StepResult:
    state: State
    events: tuple[Event, ...]
    conflicts: int = 0
    published: bool = False
    clock_skew: float = 0.0  # how far stored times were ahead of this host's clock (repaired)
    jwks: bytes = b""  # the JWKS of ``state``, built once, for whoever observes the step

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
    algorithm: str = ALG  # what new keys sign with; a key set keeps one
    rsa_bits: int = 2048  # the size of new RSA keys (RS256, PS256)

    def sealer_for(self, state: State | None) -> Sealer:
        options = SealerOptions(self.passphrase, self.allow_plaintext, self.kms_key_id, self.passphrase_source)
        return options.new(self.scrypt_n) if state is None else options.open(state)

    def load(self) -> State | None:
        """The stored state, after checking that this configuration can open it."""
        state = self.keystore.load()
        if state is not None:
            self._check_algorithm(state)
            self.sealer_for(state)
        return state

    def _check_algorithm(self, state: State) -> None:
        """A key set signs with one algorithm: settings naming another are refused."""
        if state.alg is not None and state.alg != self.algorithm:
            raise ConfigError(
                f"the key set in {self.keystore.location} signs {state.alg}, but the settings say algorithm "
                f"{self.algorithm}: a key set keeps its algorithm; give {self.algorithm} a key set of its own "
                "(another keystore and publish location), or set the algorithm back"
            )

    def _key_factory(self, sealer: Sealer, keyset: str) -> Callable[[float], KeyRecord]:
        return key_factory(sealer, keyset, self.algorithm, self.rsa_bits)

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
        return repair_clock(
            stored, now, skew, recover=recover, tolerance=self.policy.max_clock_skew,
            storage_clock=self.storage_clock, location=self.keystore.location,
        )

    def recovery_plan(self, *, other_lineage: bool = False) -> Plan:
        """What ``step(recover=True)`` would change before its ordinary planning, written nowhere."""
        now = self.clock()
        stored = self.keystore.load()
        if stored is not None:
            self._check_algorithm(stored)
        sealer = self.sealer_for(stored)
        state = stored if stored is not None else State(encryption=sealer.header(), lineage=new_lineage())
        events: list[Event] = []
        if stored is not None:
            repaired = self._repair_clock(stored, now, future_skew(stored, now), True)
            state = repaired.state
            events.extend(repaired.events)
        adopted = adopt_published(self.publisher, state, now, other_lineage, self.algorithm)
        return Plan(adopted.state, tuple(events) + adopted.events)

    def _unusable(self, planned: Plan, sealer: Sealer) -> list[str]:
        """Kids of keys this plan activates whose sealed private half does not open."""
        damaged = []
        for event in planned.events:
            if event.name != "rotator.key_activated" or event.kid is None:
                continue
            key = planned.state.get(event.kid)
            if key is not None and key.private is not None and not opens(sealer, planned.state.keyset, key):
                damaged.append(key.kid)
        return damaged

    def _check_target(self, saved: State, state: State) -> State:
        """See ``recovery.check_target``; a refusal is raised by ``_refused``."""
        state, why = check_target(self.publisher, saved, state)
        if why is not None:
            self._refused(saved, why)
        return state

    def _refused(self, saved: State, why: str | None = None) -> None:
        """The publish target refuses this state: a race, or a keystore gone back."""
        latest = self.keystore.load()
        if latest is not None and latest.generation != saved.generation:
            raise ConflictError("a newer state was published meanwhile")
        marker = self.publisher.marker()
        if why is None:
            why = refusal_of(marker, saved) or "ahead"
        raise PublishTargetAhead(refusal_message(self.publisher.location, why, marker or Marker(0), saved))

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
        if stored is not None:
            self._check_algorithm(stored)
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
            adopted = adopt_published(self.publisher, state, now, other_lineage, self.algorithm)
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
            state=state, events=tuple(events), conflicts=conflicts, published=published, clock_skew=skew, jwks=body
        )
