"""The lifecycle, step by step, as DESIGN.md states it."""

from __future__ import annotations

from typing import Callable

import pytest

from rotator.config import Policy
from rotator.errors import LifecycleError, UnknownKey
from rotator.lifecycle import next_due, plan, record_confirmation, retire, revoke
from rotator.publish import build_jwks
from rotator.reconcile import Rotator
from rotator.state import KeyRecord, KeyState, State

from .helpers import Clock

P, M = 900.0, 300.0


def _placeholder_factory() -> Callable[[float], KeyRecord]:
    count = 0

    def make(now: float) -> KeyRecord:
        nonlocal count
        count += 1
        return KeyRecord(kid=f"k{count}", public={"kty": "EC", "crv": "P-256", "x": "", "y": ""}, created_at=now, private="sealed")

    return make


def _bootstrapped(policy: Policy, factory: Callable[[float], KeyRecord], confirmed: list[str]) -> State:
    """Plan a fresh key set at t=0, confirm the publication of `confirmed`, plan again."""
    state = plan(State(encryption={}), policy, 0.0, factory).state
    return plan(record_confirmation(state, confirmed, "d", 0.0).state, policy, 0.0, factory).state


def test_bootstrap_publishes_two_keys_and_activates_one(make_rotator: Callable[..., Rotator]) -> None:
    """A fresh key set: first key active as soon as its publication is confirmed, successor pending."""
    result = make_rotator().step()
    state = result.state
    assert state.active is not None and state.active.activation == "bootstrap"
    assert len(state.pending) == 1
    assert all(k.published_at is not None for k in state.keys)
    assert state.published_digest is not None
    assert len(build_jwks(state).split(b'"kid"')) - 1 == 2


def test_no_rotation_before_period(make_rotator: Callable[..., Rotator], clock: Clock) -> None:
    """The active key keeps signing until it is P old."""
    rotator = make_rotator()
    first = rotator.step().state.active
    clock.advance(P - 1)
    assert rotator.step().state.active == first


def test_rotation_at_period_when_successor_published_for_max_age(make_rotator: Callable[..., Rotator], clock: Clock) -> None:
    """At P the confirmed pending key activates, the old one retires, a new successor is created."""
    rotator = make_rotator()
    state = rotator.step().state
    old, successor = state.active, state.pending[0]
    assert old is not None
    clock.advance(P)
    state = rotator.step().state
    assert state.active is not None and state.active.kid == successor.kid
    assert state.active.activation == "rotation"
    retired = state.get(old.kid)
    assert retired is not None and retired.state is KeyState.RETIRED and retired.retired_at == clock.now
    assert len(state.pending) == 1 and state.pending[0].published_at == clock.now


def test_successor_not_published_for_max_age_keeps_current_key() -> None:
    """(b) a successor confirmed less than M ago does not activate; the condition is reported."""
    policy = Policy()
    factory = _placeholder_factory()
    state = _bootstrapped(policy, factory, ["k1", "k2"])
    assert state.active is not None and state.active.kid == "k1"
    # k3 will be created when k2 activates; make k2 look freshly confirmed instead.
    k2 = state.get("k2")
    assert k2 is not None
    state = state.with_keys([k if k.kid != "k2" else k2.with_(published_at=P - 10) for k in state.keys])
    result = plan(state, policy, P, factory)
    assert result.state.active is not None and result.state.active.kid == "k1"
    assert [e.name for e in result.warnings] == ["rotator.rotation_overdue"]
    later = plan(result.state, policy, P - 10 + M, factory)
    assert later.state.active is not None and later.state.active.kid == "k2"


def test_unconfirmed_successor_never_activates() -> None:
    """(a) a pending key whose publication was never confirmed does not sign, however late."""
    policy = Policy()
    factory = _placeholder_factory()
    state = _bootstrapped(policy, factory, ["k1"])
    assert state.active is not None and state.active.kid == "k1"
    result = plan(state, policy, 10 * P, factory)
    assert result.state.active is not None and result.state.active.kid == "k1"
    assert result.warnings


def test_retired_key_lifecycle_private_destroyed_then_removed_then_purged() -> None:
    """A retired key loses its private half after the grace, leaves the JWKS after W, and its
    record is purged after the audit retention."""
    policy = Policy()
    factory = _placeholder_factory()
    state = _bootstrapped(policy, factory, ["k1", "k2"])
    state = plan(state, policy, P, factory).state
    k1 = state.get("k1")
    assert k1 is not None and k1.state is KeyState.RETIRED and k1.private is not None
    state = plan(state, policy, P + policy.private_key_grace, factory).state
    k1 = state.get("k1")
    assert k1 is not None and k1.private is None and k1.state is KeyState.RETIRED
    state = plan(state, policy, P + policy.retirement_window - 1, factory).state
    assert state.get("k1").state is KeyState.RETIRED  # type: ignore[union-attr]
    state = plan(state, policy, P + policy.retirement_window, factory).state
    assert state.get("k1").state is KeyState.REMOVED  # type: ignore[union-attr]
    assert b'"k1"' not in build_jwks(state)
    state = plan(state, policy, P + policy.retirement_window + policy.audit_retention, factory).state
    assert state.get("k1") is None


def test_missed_ticks_catch_up_without_burst(make_rotator: Callable[..., Rotator], clock: Clock) -> None:
    """After 10 periods of silence, one rotation happens, not ten."""
    rotator = make_rotator()
    before = rotator.step().state
    clock.advance(10 * P)
    result = rotator.step()
    activations = [e for e in result.events if e.name == "rotator.key_activated"]
    assert len(activations) == 1
    assert len(result.state.keys) == len(before.keys) + 1
    assert rotator.step().events == ()


def test_planning_is_idempotent(make_rotator: Callable[..., Rotator], clock: Clock) -> None:
    """Running the step twice at the same instant changes nothing the second time."""
    rotator = make_rotator()
    rotator.step()
    clock.advance(P)
    first = rotator.step().state
    again = rotator.step()
    assert again.state == first and again.events == () and not again.published


def test_force_rotates_early_only_when_safe(make_rotator: Callable[..., Rotator], clock: Clock) -> None:
    """--force skips the P wait but never the publication + M wait."""
    rotator = make_rotator()
    state = rotator.step().state
    clock.advance(M - 1)
    assert rotator.step(force=True).state.active == state.active
    clock.advance(1)
    forced = rotator.step(force=True).state
    assert forced.active is not None and forced.active.kid == state.pending[0].kid


def test_retire_active_promotes_published_successor(make_rotator: Callable[..., Rotator], clock: Clock) -> None:
    """retire refuses without a successor published for max_age, and otherwise promotes it."""
    rotator = make_rotator()
    state = rotator.step().state
    active, successor = state.active, state.pending[0]
    assert active is not None
    with pytest.raises(LifecycleError, match="no successor has been published for max_age"):
        rotator.step(operation=lambda s, now: retire(s, active.kid, now, rotator.policy))
    clock.advance(M)
    state = rotator.step(operation=lambda s, now: retire(s, active.kid, now, rotator.policy)).state
    assert state.active is not None and state.active.kid == successor.kid
    assert state.get(active.kid).retirement == "manual"  # type: ignore[union-attr]
    assert active.kid.encode() in build_jwks(state)


def test_revoke_active_removes_it_now_and_promotes(make_rotator: Callable[..., Rotator], clock: Clock) -> None:
    """Emergency revoke: out of the JWKS, private half gone, published successor signs at once."""
    rotator = make_rotator()
    state = rotator.step().state
    active, successor = state.active, state.pending[0]
    assert active is not None
    clock.advance(1)
    state = rotator.step(operation=lambda s, now: revoke(s, active.kid, now)).state
    revoked = state.get(active.kid)
    assert revoked is not None and revoked.state is KeyState.REVOKED and revoked.private is None
    assert revoked.revocation == "manual"
    assert state.active is not None and state.active.kid == successor.kid and state.active.activation == "promotion"
    body = (rotator.publisher.read_back() or b"")
    assert active.kid.encode() not in body and successor.kid.encode() in body
    assert len(state.pending) == 1


def test_revoke_without_published_successor_recovers_next_step() -> None:
    """Revoking the only key leaves no active key; the next steps publish and activate a new
    one."""
    policy = Policy()
    factory = _placeholder_factory()
    state = _bootstrapped(policy, factory, ["k1"])
    revoked = revoke(state, "k1", 5.0)
    assert revoked.state.active is None
    assert [e.name for e in revoked.events] == ["rotator.key_revoked", "rotator.no_active_key"]
    recovered = plan(record_confirmation(revoked.state, ["k2"], "d", 6.0).state, policy, 6.0, factory).state
    assert recovered.active is not None and recovered.active.kid == "k2" and recovered.active.activation == "promotion"


def test_unknown_kid_for_retire_and_revoke() -> None:
    """retire and revoke of an unknown kid name it."""
    state = State(encryption={})
    with pytest.raises(UnknownKey, match="no key with kid 'nope'"):
        retire(state, "nope", 0.0, Policy())
    with pytest.raises(UnknownKey):
        revoke(state, "nope", 0.0)


def test_state_time_never_goes_backwards() -> None:
    """A step planned with an older clock reading (slow or skewed host) writes no earlier times."""
    policy = Policy()
    factory = _placeholder_factory()
    state = plan(State(encryption={}), policy, 1000.0, factory).state
    state = record_confirmation(state, ["k1", "k2"], "d", 1000.0).state
    late = plan(state, policy, 10.0, factory).state
    assert late.active is not None and late.active.activated_at == 1000.0


def test_next_due_points_at_rotation_then_cleanup() -> None:
    """next_due points at the rotation, then at each cleanup in order."""
    policy = Policy()
    factory = _placeholder_factory()
    state = _bootstrapped(policy, factory, ["k1", "k2"])
    assert next_due(state, policy) == P
    state = plan(state, policy, P, factory).state
    assert next_due(state, policy) == P + policy.private_key_grace


@pytest.mark.parametrize("published_late", [False, True])
def test_the_planner_and_the_signer_switch_at_one_instant(
    make_rotator: Callable[..., Rotator], clock: Clock, published_late: bool
) -> None:
    """The planner promotes the successor exactly at lifecycle.activation_at, never a second
    before, and a Signer switches keys at that same instant: whether the rotation period or
    the successor's publication plus max_age comes last."""
    from rotator.issuer import Signer
    from rotator.lifecycle import activation_at

    from .helpers import PASSPHRASE

    policy = Policy()
    rotator = make_rotator(policy)
    state = rotator.step().state
    active, successor = state.active, state.pending[0]
    assert active is not None
    if published_late:  # the successor's confirmation comes late: its max_age wait is what counts
        late = active.activated_at + policy.rotation_period - 10  # type: ignore[operator]
        state = state.with_keys(k.with_(published_at=late) if k.kid == successor.kid else k for k in state.keys)
        state = rotator.keystore.save(state, state.generation)
        successor = state.pending[0]
    switch = activation_at(active, successor, policy)
    assert switch is not None
    expected = max(active.activated_at + policy.rotation_period, successor.published_at + policy.max_age)  # type: ignore[operator]
    assert switch == expected
    signer = Signer(rotator.keystore, policy, passphrase=PASSPHRASE, clock=clock, watch=False, storage_clock=False)
    signer.reload()
    assert signer.schedule.snapshot().switch_at == switch
    new_key = rotator._key_factory(rotator.sealer_for(state), state.keyset)
    before = plan(state, policy, switch - 1, new_key)
    assert before.state.active is not None and before.state.active.kid == active.kid
    at = plan(state, policy, switch, new_key)
    assert at.state.active is not None and at.state.active.kid == successor.kid
    clock.now = switch - 1
    assert signer.kid == active.kid
    clock.now = switch
    assert signer.kid == successor.kid
