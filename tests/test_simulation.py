"""Thirty simulated days at the default settings, on the file backends, with an injected clock.

The cron-like driver ticks every 5 minutes. Tokens are signed at random
instants and verified at random later instants against the JWKS copy a
verifier could hold then (fetched up to M earlier).
"""

from __future__ import annotations

import bisect
import json
import random
import statistics
import time
from pathlib import Path

import pytest

from rotator.config import Policy
from rotator.issuer import Signer
from rotator.keystore import FileKeystore
from rotator.publish import FilePublisher
from rotator.reconcile import Rotator
from rotator.state import KeyState
from rotator.verifier import UnknownKey, parse_jwks, verify_token

from .harness import FaultyPublisher, RecordingKeystore
from .helpers import PASSPHRASE, T0, TEST_SCRYPT_N, Clock

DAYS = 30
TICK = 300.0


@pytest.mark.slow
def test_thirty_days_at_default_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """2,880 rotations: no false rejection, no token accepted from a removed key,
    JWKS never above ceil(W/P) + 2, and the stored state stays bounded (so the
    time per step cannot grow with the days simulated; measured and printed)."""
    rng = random.Random(20261124)
    policy = Policy()
    clock = Clock()
    keystore = RecordingKeystore(FileKeystore(tmp_path / "ks"))
    publisher = FaultyPublisher(FilePublisher(tmp_path / "pub"), clock)
    rotator = Rotator(keystore, publisher, policy, passphrase=PASSPHRASE, clock=clock, scrypt_n=TEST_SCRYPT_N, storage_clock=False)
    # Simulated time: the test reloads the signer after each tick, as its watcher would.
    signer = Signer(keystore, policy, passphrase=PASSPHRASE, clock=clock, watch=False, storage_clock=False)

    state_bound = int((policy.retirement_window + policy.audit_retention) / policy.rotation_period) + 3
    step_seconds: dict[int, list[float]] = {}
    tokens: list[tuple[str, str, float, int]] = []
    activations = 0
    max_state_keys = 0
    ticks = int(DAYS * 86400 / TICK)
    for i in range(ticks + 1):
        clock.now = T0 + i * TICK
        started = time.perf_counter()
        result = rotator.step()
        signer.reload()
        step_seconds.setdefault(i * int(TICK) // 86400, []).append(time.perf_counter() - started)
        activations += sum(1 for e in result.events if e.name == "rotator.key_activated")
        max_state_keys = max(max_state_keys, len(result.state.keys))
        assert len(result.state.keys) <= state_bound
        assert result.state.active is not None
        if i < ticks:
            for _ in range(1):  # 288 tokens a day, signed between ticks
                clock.now = T0 + i * TICK + rng.uniform(0, TICK)
                ttl = rng.choice([policy.token_lifetime, float(rng.randint(60, int(policy.token_lifetime)))])
                token = signer.sign(subject="u", audience="api", ttl=ttl)
                tokens.append((token, signer.kid, clock.now, int(clock.now) + int(ttl)))
    rotations = activations - 1  # the first activation is the bootstrap

    history = publisher.history
    starts = [p.at for p in history]
    parsed = [parse_jwks(p.body) for p in history]

    def copy_at(instant: float) -> dict:  # type: ignore[type-arg]
        return parsed[bisect.bisect_right(starts, instant) - 1]

    checks = false_rejections = 0
    for token, kid, signed_at, exp in tokens:
        window_end = exp + policy.leeway
        instants = [signed_at, window_end, rng.uniform(signed_at, window_end)]
        for instant in instants:
            for age in (0.0, policy.max_age, rng.uniform(0, policy.max_age)):
                checks += 1
                try:
                    verify_token(token, copy_at(max(instant - age, T0)), now=instant, leeway=policy.leeway, audience="api")
                except Exception:
                    false_rejections += 1

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
    max_jwks = max(len(json.loads(p.body)["keys"]) for p in history)

    # The state reaches its steady size after W + audit retention (day 3).
    days = sorted(step_seconds)
    first_day = statistics.mean(step_seconds[days[2]]) * 1000
    last_day = statistics.mean(step_seconds[days[-2]]) * 1000
    with capsys.disabled():
        print(
            f"\n[simulation] {DAYS} days, {ticks + 1} steps, {rotations} rotations, {len(tokens)} tokens, "
            f"{checks} verifications: {false_rejections} false rejections; "
            f"{removal_checks} checks after removal: {accepted_after_removal} accepted; "
            f"JWKS max {max_jwks} keys (bound {policy.max_jwks_keys}); state max {max_state_keys} keys; "
            f"mean step {first_day:.2f} ms on day 3, {last_day:.2f} ms on day {days[-2] + 1} "
            f"(ratio {last_day / first_day:.2f})"
        )
    assert rotations == DAYS * 86400 / policy.rotation_period == 2880
    assert false_rejections == 0
    assert removal_checks > 0 and accepted_after_removal == 0
    assert max_jwks <= policy.max_jwks_keys
