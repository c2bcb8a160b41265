"""Simulated days at the default settings, on the file backends, with an injected clock: ten
in the suite, thirty in `make soak` (ROTATOR_SIMULATION_DAYS); either runs well past day 3,
when the stored state reaches its steady size.

The cron-like driver ticks every 5 minutes. Tokens are signed at random
instants and verified at random later instants against the JWKS copy a
verifier could hold then (fetched up to M earlier).
"""

from __future__ import annotations

import bisect
import json
import os
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from rotator.config import Policy
from rotator.issuer import Signer
from rotator.jose import verify_token as verify_any
from rotator.keys import public_key_from_jwk
from rotator.keystore import FileKeystore
from rotator.publish import FilePublisher, open_publisher
from rotator.reconcile import Rotator
from rotator.state import KeyState
from rotator.verifier import UnknownKey, parse_jwks, verify_token

from .harness import FaultyPublisher, RecordingKeystore
from .helpers import PASSPHRASE, T0, TEST_SCRYPT_N, Clock

DAYS = float(os.environ.get("ROTATOR_SIMULATION_DAYS", "10"))
TICK = 300.0


def judge(
    tokens: list[tuple[str, str, float, int]],
    copy_at: Callable[[float], dict[str, Any]],
    policy: Policy,
    rng: random.Random,
    verify: Callable[[str, str, dict[str, Any], float], object],
) -> tuple[int, int]:
    """Verify each token (token, tag, signed at, exp) at its signing instant, at exp + leeway
    and at a random instant between, against the key set a verifier could hold then
    (fetched at that instant, M before, or a random age up to M): (checks, false rejections)."""
    checks = rejections = 0
    for token, tag, signed_at, exp in tokens:
        window_end = exp + policy.leeway
        for instant in (signed_at, window_end, rng.uniform(signed_at, window_end)):
            for age in (0.0, policy.max_age, rng.uniform(0, policy.max_age)):
                checks += 1
                try:
                    verify(token, tag, copy_at(max(instant - age, T0)), instant)
                except Exception:  # noqa: BLE001 (any refusal is a false rejection here)
                    rejections += 1
    return checks, rejections


@dataclass(frozen=True)
class Outcome:
    """What the simulated days gave, for the tests below to judge one rule each."""

    policy: Policy
    ticks: int
    rotations: int
    tokens: int
    checks: int
    false_rejections: int
    removal_checks: int
    accepted_after_removal: int
    max_jwks: int
    max_state_keys: int
    state_bound: int
    steps_without_active_key: int
    step_ms_day3: float
    step_ms_last: float
    last_day: int


@pytest.fixture(scope="module")
def simulation(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """A rotation every 15 minutes on the file backends (960 in ten days): a step every 5 minutes, a token signed between
    ticks, each verified at random later instants against the JWKS copy a verifier could
    hold then (fetched up to M earlier)."""
    tmp_path = tmp_path_factory.mktemp("simulation")
    rng = random.Random(20261124)
    policy = Policy()
    clock = Clock()
    keystore = RecordingKeystore(FileKeystore(tmp_path / "ks"))
    publisher = FaultyPublisher(FilePublisher(tmp_path / "pub"), clock)
    rotator = Rotator(keystore, publisher, policy, passphrase=PASSPHRASE, clock=clock, scrypt_n=TEST_SCRYPT_N, storage_clock=False)
    # Simulated time: the test reloads the signer after each tick, as its watcher would.
    signer = Signer(keystore, policy, passphrase=PASSPHRASE, clock=clock, watch=False, storage_clock=False)

    step_seconds: dict[int, list[float]] = {}
    tokens: list[tuple[str, str, float, int]] = []
    activations = 0
    max_state_keys = 0
    without_active = 0
    ticks = int(DAYS * 86400 / TICK)
    for i in range(ticks + 1):
        clock.now = T0 + i * TICK
        started = time.perf_counter()
        result = rotator.step()
        signer.reload()
        step_seconds.setdefault(i * int(TICK) // 86400, []).append(time.perf_counter() - started)
        activations += sum(1 for e in result.events if e.name == "rotator.key_activated")
        max_state_keys = max(max_state_keys, len(result.state.keys))
        without_active += result.state.active is None
        if i < ticks:  # 288 tokens a day, signed between ticks
            clock.now = T0 + i * TICK + rng.uniform(0, TICK)
            ttl = rng.choice([policy.token_lifetime, float(rng.randint(60, int(policy.token_lifetime)))])
            token = signer.sign(subject="u", audience="api", ttl=ttl)
            tokens.append((token, signer.kid, clock.now, int(clock.now) + int(ttl)))

    history = publisher.history
    starts = [p.at for p in history]
    parsed = [parse_jwks(p.body) for p in history]

    def copy_at(instant: float) -> dict[str, Any]:
        return parsed[bisect.bisect_right(starts, instant) - 1]

    checks, false_rejections = judge(
        tokens, copy_at, policy, rng,
        lambda token, _kid, keys, now: verify_token(token, keys, now=now, leeway=policy.leeway, audience="api"),
    )

    removed = {
        k.kid: k.removed_at
        for state in keystore.saved.values()
        for k in state.keys
        if k.state is KeyState.REMOVED and k.removed_at is not None
    }
    accepted_after_removal = removal_checks = 0
    for token, kid, _, _ in tokens:
        if kid in removed:
            removal_checks += 1
            try:
                verify_token(token, copy_at(removed[kid]), now=removed[kid] - 7200, leeway=policy.leeway, audience="api")
                accepted_after_removal += 1
            except UnknownKey:
                pass
    # The state reaches its steady size after W + audit retention (day 3).
    days = sorted(step_seconds)
    return Outcome(
        policy=policy,
        ticks=ticks,
        rotations=activations - 1,  # the first activation is the bootstrap
        tokens=len(tokens),
        checks=checks,
        false_rejections=false_rejections,
        removal_checks=removal_checks,
        accepted_after_removal=accepted_after_removal,
        max_jwks=max(len(json.loads(p.body)["keys"]) for p in history),
        max_state_keys=max_state_keys,
        state_bound=int((policy.retirement_window + policy.audit_retention) / policy.rotation_period) + 3,
        steps_without_active_key=without_active,
        step_ms_day3=statistics.mean(step_seconds[days[2]]) * 1000,
        step_ms_last=statistics.mean(step_seconds[days[-2]]) * 1000,
        last_day=days[-2] + 1,
    )


@pytest.mark.slow
def test_every_rotation_period_rotates_once(simulation: Outcome, capsys: pytest.CaptureFixture[str]) -> None:
    """The simulated days at the default settings rotate exactly once per rotation period
    (96 times a day), with an active key after every step; the run's figures are printed."""
    o = simulation
    with capsys.disabled():
        print(
            f"\n[simulation] {DAYS:g} days, {o.ticks + 1} steps, {o.rotations} rotations, {o.tokens} tokens, "
            f"{o.checks} verifications: {o.false_rejections} false rejections; "
            f"{o.removal_checks} checks after removal: {o.accepted_after_removal} accepted; "
            f"JWKS max {o.max_jwks} keys (bound {o.policy.max_jwks_keys}); state max {o.max_state_keys} keys; "
            f"mean step {o.step_ms_day3:.2f} ms on day 3, {o.step_ms_last:.2f} ms on day {o.last_day} "
            f"(ratio {o.step_ms_last / o.step_ms_day3:.2f})"
        )
    assert o.rotations == DAYS * 86400 / o.policy.rotation_period == DAYS * 96
    assert o.steps_without_active_key == 0


@pytest.mark.slow
def test_no_token_is_falsely_rejected(simulation: Outcome) -> None:
    """Every token verifies throughout its lifetime (plus leeway) against any JWKS copy a
    verifier may hold, up to M old."""
    assert simulation.checks > 0 and simulation.false_rejections == 0


@pytest.mark.slow
def test_no_token_is_accepted_from_a_removed_key(simulation: Outcome) -> None:
    """Once a key is removed from the JWKS, the tokens it signed no longer verify against it."""
    assert simulation.removal_checks > 0 and simulation.accepted_after_removal == 0


@pytest.mark.slow
def test_the_jwks_stays_within_its_bound(simulation: Outcome) -> None:
    """The published JWKS never holds more than ceil(W/P) + 2 keys."""
    assert 0 < simulation.max_jwks <= simulation.policy.max_jwks_keys


@pytest.mark.slow
def test_the_stored_state_stays_bounded(simulation: Outcome) -> None:
    """The stored state holds at most (W + audit retention) / P + 3 keys, so a step's cost
    cannot grow with the days simulated."""
    assert simulation.max_state_keys <= simulation.state_bound


# -- two key sets, one JWKS ------------------------------------------------------------------

# `make soak` runs thirty days of this too; the suite runs the short form (the same code, fewer days).
SHARED_DAYS = float(os.environ.get("ROTATOR_SHARED_SIMULATION_DAYS", "2"))


@dataclass(frozen=True)
class SharedOutcome:
    days: float
    rotations: dict[str, int]
    tokens: int
    checks: int
    false_rejections: int
    guard_violations: int
    most_keys: dict[str, int]  # per key type, the most the document held
    budget: int


@pytest.fixture(scope="module")
def shared_simulation(tmp_path_factory: pytest.TempPathFactory) -> SharedOutcome:
    """An ES256 and an RS256 key set at the default settings publishing into one JWKS, a step
    of each every 5 minutes for SHARED_DAYS; tokens of both signed between ticks and verified
    at random later instants against the document a verifier could hold then (up to M old);
    after every tick, each set's active and pending keys checked in the served document."""
    tmp_path = tmp_path_factory.mktemp("shared")
    rng = random.Random(20261130)
    policy = Policy()
    clock = Clock()
    doc = tmp_path / "pub" / "jwks.json"
    rotators, signers = {}, {}
    for name, alg in (("access", "ES256"), ("federation", "RS256")):
        rotators[name] = Rotator(
            FileKeystore(tmp_path / name), open_publisher(f"file://{doc}", key_set=name), policy, passphrase=PASSPHRASE,
            clock=clock, scrypt_n=TEST_SCRYPT_N, storage_clock=False, algorithm=alg,
        )
        signers[name] = Signer(rotators[name].keystore, policy, passphrase=PASSPHRASE, clock=clock, watch=False, storage_clock=False)
    history: list[tuple[float, bytes]] = []
    tokens: list[tuple[str, str, float, int]] = []
    activations = {name: 0 for name in rotators}
    violations = 0
    most: dict[str, int] = {}
    ticks = int(SHARED_DAYS * 86400 / TICK)
    for i in range(ticks + 1):
        clock.now = T0 + i * TICK
        for name, rotator in rotators.items():
            result = rotator.step()
            signers[name].reload()
            activations[name] += sum(1 for e in result.events if e.name == "rotator.key_activated")
        body = doc.read_bytes()
        if not history or history[-1][1] != body:
            history.append((clock.now, body))
        entries = json.loads(body)["keys"]
        served_kids = {k["kid"] for k in entries}
        for rotator in rotators.values():
            state = rotator.keystore.load()
            assert state is not None
            required = {k.kid for k in (*state.pending, *([state.active] if state.active else [])) if k.published}
            violations += not required <= served_kids
        for kty in {k["kty"] for k in entries}:
            most[kty] = max(most.get(kty, 0), sum(1 for k in entries if k["kty"] == kty))
        if i < ticks:
            for name in rotators:
                clock.now = T0 + i * TICK + rng.uniform(0, TICK)
                token = signers[name].sign(subject="u", audience="api")
                tokens.append((token, signers[name].schedule.key(clock.now).record.alg, clock.now, int(clock.now) + int(policy.token_lifetime)))
    starts = [at for at, _ in history]
    parsed = [{k["kid"]: public_key_from_jwk(k, k["alg"]) for k in json.loads(b)["keys"]} for _, b in history]

    def shared_copy_at(instant: float) -> dict[str, Any]:
        return parsed[bisect.bisect_right(starts, instant) - 1]

    checks, false_rejections = judge(
        tokens, shared_copy_at, policy, rng,
        lambda token, alg, keys, now: verify_any(token, keys, now=now, leeway=policy.leeway, audience="api", algorithms=(alg,)),
    )
    return SharedOutcome(
        days=SHARED_DAYS, rotations={n: a - 1 for n, a in activations.items()}, tokens=len(tokens), checks=checks,
        false_rejections=false_rejections, guard_violations=violations, most_keys=most, budget=100,
    )


@pytest.mark.slow
def test_two_key_sets_in_one_jwks_never_reject_a_valid_token(shared_simulation: SharedOutcome, capsys: pytest.CaptureFixture[str]) -> None:
    """An ES256 and an RS256 set sharing one JWKS, each rotating every period: every token of
    both verifies throughout its lifetime against any copy a verifier may hold (the run's
    figures are printed)."""
    o = shared_simulation
    with capsys.disabled():
        print(
            f"\n[shared simulation] {o.days:g} days, rotations {o.rotations}, {o.tokens} tokens, {o.checks} verifications: "
            f"{o.false_rejections} false rejections, {o.guard_violations} guard violations; most keys per type {o.most_keys} "
            f"(budget {o.budget})"
        )
    assert all(r == round(o.days * 96) for r in o.rotations.values()), o.rotations
    assert o.checks > 0 and o.false_rejections == 0


@pytest.mark.slow
def test_two_key_sets_in_one_jwks_keep_the_guard_and_the_budget(shared_simulation: SharedOutcome) -> None:
    """After every tick the served document holds every set's active and pending keys, and
    never more keys of a type than the budget."""
    assert shared_simulation.guard_violations == 0
    assert set(shared_simulation.most_keys) == {"EC", "RSA"}
    assert all(0 < n <= shared_simulation.budget for n in shared_simulation.most_keys.values())
