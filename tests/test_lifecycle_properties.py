"""Property tests: DESIGN.md's invariants hold for any sequence of ticks, delays,
crashes, duplicate and racing runs, failed publications, retirements and revocations.

Each invariant is a named method below; Hypothesis drives the real reconcile
step on the real file backends with an injected clock.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from rotator.config import Policy
from rotator.errors import LifecycleError, PublishError
from rotator.issuer import Signer
from rotator.keys import PRIVATE_MEMBERS
from rotator.keystore import FileKeystore
from rotator.lifecycle import retire, revoke
from rotator.publish import FilePublisher
from rotator.reconcile import STAGES, Rotator
from rotator.state import KeyState
from rotator.verifier import parse_jwks, verify_token

from .harness import Crash, FaultyPublisher, RecordingKeystore
from .helpers import PASSPHRASE, TEST_SCRYPT_N, Clock

POLICY = Policy()
P, M, W, T, L = (
    POLICY.rotation_period,
    POLICY.max_age,
    POLICY.retirement_window,
    POLICY.token_lifetime,
    POLICY.leeway,
)
DELAYS = st.one_of(
    st.sampled_from([0.0, 1.0, M - 1, M, P - 1, P, P + 1, 2 * P, W - P, W, W + T]),
    st.floats(min_value=0, max_value=3 * P, allow_nan=False),
)


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="rotator-prop-"))
        self.clock = Clock()
        self.keystore = RecordingKeystore(FileKeystore(self.tmp / "ks"))
        self.publisher = FaultyPublisher(FilePublisher(self.tmp / "pub"), self.clock)
        self.tokens: list[tuple[str, str, float, float]] = []  # token, kid, signed at, exp
        self.manual_operations = 0
        self.bootstrapped = False

    def rotator(self, clock: Callable[[], float] | None = None) -> Rotator:
        return Rotator(
            keystore=self.keystore,
            publisher=self.publisher,
            policy=POLICY,
            passphrase=PASSPHRASE,
            clock=clock or self.clock,
            scrypt_n=TEST_SCRYPT_N,
            storage_clock=False,  # simulated time
        )

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _ok_step(self, **kwargs: object) -> None:
        result = self.rotator().step(**kwargs)  # type: ignore[arg-type]
        self.bootstrapped = True
        self.check_exactly_one_active_after_a_completed_step(result.state)

    @initialize()
    def bootstrap(self) -> None:
        self._ok_step()

    @rule(delay=DELAYS)
    def time_passes(self, delay: float) -> None:
        self.clock.advance(delay)

    @rule()
    def tick(self) -> None:
        self._ok_step()

    @rule()
    def duplicate_tick(self) -> None:
        self._ok_step()
        self._ok_step()

    @rule(stage=st.sampled_from(STAGES))
    def crash_during_tick(self, stage: str) -> None:
        def checkpoint(at: str) -> None:
            if at == stage:
                raise Crash(at)

        try:
            self.rotator().step(checkpoint=checkpoint)
        except Crash:
            pass

    @rule(stall=st.floats(min_value=0.0, max_value=120.0))
    def stalled_tick(self, stall: float) -> None:
        """A step whose first clock reading is `stall` seconds old by the time it acts."""
        readings = iter([self.clock.now - stall])

        def clock() -> float:
            return next(readings, self.clock.now)

        self.rotator(clock).step()

    @rule(stage=st.sampled_from(STAGES[:-1]))
    def racing_ticks(self, stage: str) -> None:
        """A second host runs a whole step while the first is at `stage`; both finish."""
        fired = False

        def checkpoint(at: str) -> None:
            nonlocal fired
            if at == stage and not fired:
                fired = True
                self.rotator().step()

        result = self.rotator().step(checkpoint=checkpoint)
        self.check_exactly_one_active_after_a_completed_step(result.state)

    @rule()
    def publication_fails(self) -> None:
        self.publisher.fail_writes = True
        try:
            self.rotator().step()
        except PublishError:
            pass
        finally:
            self.publisher.fail_writes = False

    @rule()
    def read_back_shows_old_document(self) -> None:
        self.publisher.stale_reads = True
        try:
            self.rotator().step()
        except PublishError:
            pass
        finally:
            self.publisher.stale_reads = False

    @rule()
    def forced_rotation(self) -> None:
        self.manual_operations += 1
        self._ok_step(force=True)

    @rule(index=st.integers(min_value=0, max_value=200))
    def manual_retire(self, index: int) -> None:
        state = self.keystore.load()
        assert state is not None
        if not state.keys:
            return
        kid = state.keys[index % len(state.keys)].kid
        self.manual_operations += 1
        try:
            self._ok_step(operation=lambda s, now: retire(s, kid, now, POLICY))
        except LifecycleError:
            pass

    @rule(index=st.integers(min_value=0, max_value=200))
    def emergency_revoke(self, index: int) -> None:
        state = self.keystore.load()
        assert state is not None
        kid = state.keys[index % len(state.keys)].kid
        self.manual_operations += 1
        self._ok_step(operation=lambda s, now: revoke(s, kid, now))

    @precondition(lambda self: self.bootstrapped)
    @rule(ttl=st.sampled_from([T, T / 2, 1.0]))
    def issuer_signs(self, ttl: float) -> None:
        signer = Signer(self.keystore, POLICY, passphrase=PASSPHRASE, clock=self.clock, watch=False, storage_clock=False)
        state = self.keystore.load()
        if state is None or state.active is None:
            return
        token = signer.sign({"n": len(self.tokens)}, subject="s", audience="a", ttl=ttl)
        self.tokens.append((token, signer.kid, self.clock.now, int(self.clock.now) + int(ttl)))

    # ---- invariants -------------------------------------------------------

    def check_exactly_one_active_after_a_completed_step(self, state: object) -> None:
        """Invariant: after bootstrap every completed step leaves exactly one active key."""
        stored = self.keystore.load()
        assert stored is not None
        assert len(stored.in_state(KeyState.ACTIVE)) == 1

    @invariant()
    def at_most_one_active_key_in_any_stored_state(self) -> None:
        for state in self.keystore.saved.values():
            assert len(state.in_state(KeyState.ACTIVE)) <= 1

    @invariant()
    def no_private_member_ever_published(self) -> None:
        for pub in self.publisher.history:
            for key in json.loads(pub.body)["keys"]:
                assert not PRIVATE_MEMBERS.intersection(key), key

    @invariant()
    def every_publication_holds_its_states_active_and_pending_keys(self) -> None:
        for pub in self.publisher.history:
            state = self.keystore.saved[pub.generation]
            kids = [k["kid"] for k in json.loads(pub.body)["keys"]]
            if state.active is not None:
                assert kids[0] == state.active.kid
            for key in state.pending:
                assert key.kid in kids

    def _first_published(self) -> dict[str, float]:
        first: dict[str, float] = {}
        for pub in self.publisher.history:
            for key in json.loads(pub.body)["keys"]:
                first.setdefault(key["kid"], pub.at)
        return first

    @invariant()
    def no_key_signs_before_confirmed_publication_for_max_age(self) -> None:
        """Rotations wait M after the first publication; bootstrap and emergency
        promotion wait for confirmation only (no older JWKS copy can lack a key
        that verifiers have never seen, and verifiers refetch on an unknown kid)."""
        first = self._first_published()
        for state in self.keystore.saved.values():
            for key in state.keys:
                if key.activated_at is None:
                    continue
                assert key.published_at is not None and key.kid in first
                assert first[key.kid] <= key.published_at <= key.activated_at
                if key.activation == "rotation":
                    assert key.published_at + M <= key.activated_at
                    assert first[key.kid] + M <= key.activated_at

    @invariant()
    def removed_and_revoked_keys_never_published_again(self) -> None:
        gone: dict[str, int] = {}
        for generation in sorted(self.keystore.saved):
            for key in self.keystore.saved[generation].keys:
                if key.state in (KeyState.REMOVED, KeyState.REVOKED):
                    gone.setdefault(key.kid, generation)
        for pub in self.publisher.history:
            kids = {k["kid"] for k in json.loads(pub.body)["keys"]}
            for kid, generation in gone.items():
                if pub.generation >= generation:
                    assert kid not in kids, f"{kid} published after removal/revocation"

    @invariant()
    def jwks_stays_bounded(self) -> None:
        bound = POLICY.max_jwks_keys + self.manual_operations
        for pub in self.publisher.history:
            assert len(json.loads(pub.body)["keys"]) <= bound

    @invariant()
    def tokens_verify_against_every_copy_a_verifier_may_hold(self) -> None:
        """A token signed at t verifies against every JWKS current at any instant in
        [t - M, exp + L], unless its key was revoked (then it must not) or was
        promoted in an emergency (copies from before its first publication refetch)."""
        history = self.publisher.history
        revoked = {
            k.kid: generation
            for generation, state in sorted(self.keystore.saved.items(), reverse=True)
            for k in state.keys
            if k.state is KeyState.REVOKED
        }
        promoted = {
            k.kid for state in self.keystore.saved.values() for k in state.keys if k.activation == "promotion"
        }
        first = self._first_published()
        for token, kid, signed_at, exp in self.tokens:
            for i, pub in enumerate(history):
                current_until = history[i + 1].at if i + 1 < len(history) else self.clock.now
                # A copy replaced at instant x is older than M at any instant after x + M.
                if current_until <= signed_at - M or pub.at > exp + L:
                    continue
                if pub.at > self.clock.now:
                    continue
                if kid in revoked and pub.generation >= revoked[kid]:
                    assert kid not in parse_jwks(pub.body)
                    continue
                if kid in promoted and current_until <= first[kid]:
                    continue
                keys = parse_jwks(pub.body)
                assert kid in keys, f"token of {kid} signed at {signed_at} fails on copy published at {pub.at}"
                verify_token(token, keys, now=signed_at, leeway=L, audience="a")


TestLifecycleInvariants = LifecycleMachine.TestCase
TestLifecycleInvariants.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
