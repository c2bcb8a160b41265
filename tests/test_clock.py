"""Wrong clocks (README "Clocks"): a host whose clock disagrees with the store refuses to
write; a state a fast clock wrote is repaired by the next host with a right clock, or,
when the store cannot tell which clock is wrong, by `rotator recover`."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from rotator.config import Policy
from rotator.errors import ClockSkewError
from rotator.lifecycle import future_skew
from rotator.metrics import Metrics
from rotator.reconcile import Rotator
from rotator.stepping import observed_step

from .daemon_harness import ROTATOR, RunningDaemon, http_get, metrics, prom_values
from .daemon_harness import SHORT as DAEMON_SHORT
from .helpers import wait_for

HOUR = 3600.0
SHORT = Policy(rotation_period=4, max_age=2, token_lifetime=2, leeway=1, retirement_window=6,
               private_key_grace=2, max_clock_skew=1)


def real_time(offset: float = 0.0) -> Callable[[], float]:
    return lambda: time.time() + offset


def test_a_host_off_the_store_clock_refuses_to_write(make_rotator: Callable[..., Rotator], dirs: tuple[Path, Path]) -> None:
    """A host whose clock is an hour off the store's refuses to write, saying ahead or behind,
    and the state is untouched."""
    keystore, _ = dirs
    make_rotator(clock=real_time(), storage_clock=True).step()
    before = (keystore / "state.json").read_bytes()
    for offset, word in ((HOUR, "ahead of"), (-HOUR, "behind")):
        skewed = make_rotator(clock=real_time(offset), storage_clock=True)
        with pytest.raises(ClockSkewError) as info:
            skewed.step(force=True)
        assert f"3600s {word} the clock of file://" in str(info.value) and "nothing was written" in str(info.value)
        assert abs(info.value.skew - offset) < 5
        assert (keystore / "state.json").read_bytes() == before


def test_state_written_by_a_fast_clock_is_repaired_by_the_next_right_one(
    make_rotator: Callable[..., Rotator], dirs: tuple[Path, Path]
) -> None:
    # A host one hour ahead whose store gave no clock to check against.
    """Times written by a fast clock are repaired by the next writer with a right clock."""
    make_rotator(SHORT, clock=real_time(), storage_clock=True).step()
    time.sleep(1.1)
    make_rotator(SHORT, clock=real_time(HOUR)).step(force=True)
    right = make_rotator(SHORT, clock=real_time(), storage_clock=True)
    poisoned = right.keystore.load()
    assert poisoned is not None and future_skew(poisoned, time.time()) > HOUR - 60

    result = right.step()
    assert [e.name for e in result.events].count("rotator.clock_skew_repaired") == 1
    assert result.clock_skew > HOUR - 60
    assert future_skew(result.state, time.time()) == 0
    active = result.state.active
    assert active is not None and active.activated_at is not None and active.activated_at <= time.time()
    # Rotation goes on at its own pace: two more activations within a few periods.
    seen = {active.kid}
    deadline = time.monotonic() + 6 * SHORT.rotation_period
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
        state = right.step().state
        assert state.active is not None
        seen.add(state.active.kid)
    assert len(seen) >= 3, "rotation did not resume after the repair"


def test_future_times_the_store_cannot_explain_are_refused_until_recover(
    make_rotator: Callable[..., Rotator], dirs: tuple[Path, Path]
) -> None:
    """The store's own time of the write is in the future too: this host may be the one
    behind, so nothing is written until an operator says this clock is right."""
    keystore, _ = dirs
    make_rotator(clock=real_time(HOUR)).step()
    future = time.time() + HOUR
    os.utime(keystore / "state.json", (future, future))
    right = make_rotator(clock=real_time(), storage_clock=True)
    with pytest.raises(ClockSkewError, match="run `rotator recover`"):
        right.step()
    result = right.step(recover=True)
    assert "rotator.clock_skew_repaired" in [e.name for e in result.events]
    assert future_skew(result.state, time.time()) == 0


def test_health_and_metrics_report_the_skew(make_rotator: Callable[..., Rotator]) -> None:
    """Health and metrics report a clock skew that refused a step."""
    make_rotator(clock=real_time(), storage_clock=True).step()
    m = Metrics()
    fast = make_rotator(clock=real_time(HOUR), storage_clock=True)
    with pytest.raises(ClockSkewError):
        observed_step(fast, (m.health, m))
    problems = m.health.problems()
    assert any(p.startswith("clock skew of 3600s") for p in problems), problems
    assert 3590 < prom_values(m.render().decode())["rotator_clock_skew_seconds"] < 3610


def test_one_fast_host_does_not_freeze_a_running_daemon(daemon_factory: Callable[..., RunningDaemon]) -> None:
    """A real `rotator rotate --force` one hour ahead (libfaketime, whose faked file times hide
    the skew from that host itself) against a running daemon: the daemon repairs the state at
    its next step, keeps rotating, and /healthz reports the skew meanwhile."""
    faketime = shutil.which("faketime")
    assert faketime, "faketime (Debian package faketime) is missing: scripts/test-deps.sh installs it"
    d = daemon_factory("--max-clock-skew", "1s")
    wait_for(lambda: d.notify.has("READY=1"), what="the daemon ready")
    fast = subprocess.run(
        [faketime, "-f", "+1h", *ROTATOR, "rotate", "--force", "--max-clock-skew", "1s", *DAEMON_SHORT],
        env={**d.env, "DONT_FAKE_MONOTONIC": "1"}, capture_output=True, text=True, timeout=60,
    )
    assert fast.returncode == 0, fast.stderr
    poisoned_at = time.time()

    def reported() -> Any:
        status, body = http_get(f"http://127.0.0.1:{d.port}/healthz")
        return body if status == 503 and b"clock skew" in body else None

    body = wait_for(reported, timeout=15, what="/healthz to report the clock skew")
    assert b"repaired" in body
    state = d.state()
    assert state is not None and future_skew(state, time.time()) < 2

    def activations_since() -> int:
        s = d.state()
        return sum(1 for k in (s.keys if s else ()) if k.activated_at is not None and k.activated_at > poisoned_at)

    wait_for(lambda: activations_since() >= 2, timeout=20, what="two activations after the fast host's step")
    assert metrics(d.port)["rotator_active_key_age_seconds"] >= 0
    assert d.stop() == 0



def test_a_signer_reading_the_file_clock_writes_at_most_every_thirty_seconds(
    make_rotator: Callable[..., Rotator], dirs: tuple[Path, Path]
) -> None:
    """A Signer on the file keystore compares clocks at every reload, but touches the lock
    file (a write) at most every 30 s; in between, the filesystem's time is carried forward
    on the monotonic clock and still agrees with this host's."""
    from rotator.issuer import Signer
    from rotator.keystore import FileKeystore

    from .helpers import PASSPHRASE

    keystore_dir, _ = dirs
    make_rotator(clock=real_time(), storage_clock=True).step()
    keystore = FileKeystore(keystore_dir)
    signer = Signer(keystore, Policy(), passphrase=PASSPHRASE, watch=False)
    signer.reload()  # the first reading touches the lock file
    lock = keystore_dir / "state.lock"
    os.utime(lock, (1_000_000_000, 1_000_000_000))  # a mark any later touch would overwrite
    for _ in range(20):
        signer.reload()
    assert lock.stat().st_mtime == 1_000_000_000, "a reload touched the lock file"
    carried = keystore.storage_time()
    assert carried is not None and abs(carried - time.time()) < 5
    assert signer.sign(subject="s", audience="a")  # the clocks agree: signing goes on
