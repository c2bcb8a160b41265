"""One reconcile step: load, plan, compare-and-swap write, publish, confirm, record.

Used by ``rotator rotate``, ``retire``, ``revoke`` and every tick of ``run``.
Each stage is safe to crash after: the next step sees what was stored and
finishes the work, so running it late, twice or from two hosts converges.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from .config import Policy
from .errors import ConflictError, KeystoreError, PublishError
from .keys import generate_private_key, private_to_bytes, public_jwk, thumbprint
from .keystore import Keystore
from .lifecycle import Event, Plan, plan, record_confirmation
from .publish import Publisher, build_jwks, jwks_digest, jwks_kids, publish
from .sealing import DEFAULT_SCRYPT_N, Sealer, new_sealer, open_sealer
from .state import KeyRecord, State

__all__ = ["Rotator", "StepResult", "Operation", "STAGES"]

Clock = Callable[[], float]
Operation = Callable[[State, float], Plan]
# Checkpoint names, in order; tests crash at each, the daemon labels failures with them.
STAGES = ("loaded", "planned", "state_written", "published", "confirmed", "recorded")


def _no_checkpoint(stage: str) -> None:
    return None


@dataclass(frozen=True)
class StepResult:
    state: State
    events: tuple[Event, ...]
    conflicts: int = 0
    published: bool = False

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

    def sealer_for(self, state: State | None) -> Sealer:
        if state is None:
            return new_sealer(self.passphrase, self.allow_plaintext, scrypt_n=self.scrypt_n, kms_key_id=self.kms_key_id)
        return open_sealer(state.encryption, self.passphrase, self.allow_plaintext, kms_key_id=self.kms_key_id)

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
    ) -> StepResult:
        """Run one reconcile step, retrying from a fresh read on compare-and-swap conflicts."""
        conflicts = 0
        for _ in range(self.max_attempts):
            try:
                return self._attempt(force, operation, checkpoint, conflicts)
            except ConflictError:
                conflicts += 1
        raise KeystoreError(f"gave up after {conflicts} compare-and-swap conflicts on {self.keystore.location}")

    def _attempt(
        self,
        force: bool,
        operation: Operation | None,
        checkpoint: Callable[[str], None],
        conflicts: int,
    ) -> StepResult:
        now = self.clock()
        stored = self.keystore.load()
        sealer = self.sealer_for(stored)
        checkpoint("loaded")
        saved = stored if stored is not None else State(encryption=sealer.header())
        state = saved
        events: list[Event] = []
        if operation is not None:
            applied = operation(state, now)
            state = applied.state
            events.extend(applied.events)
        new_key = self._key_factory(sealer, saved.keyset)

        current_copy: bytes | None = None  # what the publish target serves, once read
        have_copy = False
        published = False
        # plan -> publish -> record -> plan again (a confirmation can allow an activation);
        # three rounds always suffice: bootstrap needs two.
        for round_ in range(3):
            planned = plan(state, self.policy, now, new_key, force=force and round_ == 0)
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
            if state != saved:
                # The state names every key before any JWKS does: a published key
                # always has its private half stored.
                state = saved = self.keystore.save(state, saved.generation)
                checkpoint("state_written")
            publish(self.publisher, state, body)
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
        return StepResult(state=state, events=tuple(events), conflicts=conflicts, published=published)
