"""Two `rotator rotate` processes started together on one keystore, at each of eight due rotations."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from rotator.keystore import FileKeystore
from rotator.state import KeyState

ROUNDS = 8
# The shortest valid timings (max_age at least 2 s, the period at least twice that), so that
# a rotation is due at every round in real time.
PERIOD = 4.0
POLICY_ENV = {
    "ROTATOR_ROTATION_PERIOD": f"{PERIOD:g}s",
    "ROTATOR_MAX_AGE": "2s",
    "ROTATOR_TOKEN_LIFETIME": "1s",
    "ROTATOR_LEEWAY": "0s",
    "ROTATOR_RETIREMENT_WINDOW": "4s",
    "ROTATOR_PRIVATE_KEY_GRACE": "1s",
    "ROTATOR_AUDIT_RETENTION": "30s",
}


def test_two_processes_rotating_at_once_converge(cli_env: dict[str, str], dirs: tuple[Path, Path]) -> None:
    """State stays valid, no key is lost, at most one new key per due rotation, and the
    published JWKS always matches the stored state."""
    env = {**cli_env, **POLICY_ENV}
    keystore_dir, public_dir = dirs
    keystore = FileKeystore(keystore_dir)
    seen: set[str] = set()
    for round_ in range(ROUNDS):
        before = keystore.load()
        before_kids = {k.kid for k in before.keys} if before else set()
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "rotator.cli", "rotate"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=60) for p in procs]
        for proc, (out, err) in zip(procs, outputs):
            assert proc.returncode == 0, err
        state = keystore.load()  # parses and checks the whole document
        assert state is not None
        assert len(state.in_state(KeyState.ACTIVE)) == 1
        kids = {k.kid for k in state.keys}
        for kid in seen - kids:
            raise AssertionError(f"key {kid} vanished")
        new = kids - before_kids
        assert len(new) <= (2 if before is None else 1), f"round {round_}: {len(new)} new keys"
        seen |= kids
        published = json.loads((public_dir / "jwks.json").read_text())
        expected = [k.kid for k in state.keys if k.published]
        assert sorted(k["kid"] for k in published["keys"]) == sorted(expected)
        assert published["keys"][0]["kid"] == state.active.kid  # type: ignore[union-attr]
        time.sleep(PERIOD + 0.05)  # let the next rotation fall due
    assert len(seen) >= ROUNDS + 1  # a rotation did happen in every round
