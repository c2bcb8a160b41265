"""A Signer survives fork (gunicorn --preload, uWSGI, Celery prefork): each worker process
mints its own jti sequence, and keeps signing across rotations with a watcher of its own."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from rotator._b64 import b64url_decode
from rotator.config import Policy
from rotator.errors import RotatorError
from rotator.issuer import Signer
from rotator.keystore import FileKeystore

from .daemon_harness import ROTATOR, SHORT
from .helpers import PASSPHRASE

WORKERS = 4
# SHORT's policy: a rotation every 4 s; three rotations take 12 s and some.
POLICY = Policy(rotation_period=4, max_age=2, token_lifetime=2, leeway=1, retirement_window=6, private_key_grace=2)
ROTATIONS = 3


def claims_of(token: str) -> dict[str, object]:
    return dict(json.loads(b64url_decode(token.split(".")[1])))


def kid_of(token: str) -> str:
    return str(json.loads(b64url_decode(token.split(".")[0]))["kid"])


def child_signs(signer: Signer, out: Path, until: float) -> None:
    """In a forked child: sign every 20 ms until ``until``, one line per token or refusal."""
    code = 0
    try:
        with out.open("w") as f:
            while time.time() < until:
                try:
                    token = signer.sign(subject="alice", audience="api", ttl=1)
                    f.write(json.dumps({"jti": claims_of(token)["jti"], "kid": kid_of(token)}) + "\n")
                except RotatorError as e:
                    f.write(json.dumps({"error": str(e)}) + "\n")
                    code = 1
                time.sleep(0.02)
    finally:
        os._exit(code)


@pytest.mark.parametrize("used_before_fork", [True, False], ids=["used-before-fork", "unused-before-fork"])
def test_forked_workers_mint_distinct_jtis_and_sign_across_three_rotations(
    cli_env: dict[str, str], dirs: tuple[Path, Path], tmp_path: Path, used_before_fork: bool
) -> None:
    """Four workers forked from one Signer: no jti repeats across them (denying one user's token
    logs out only that token), and each keeps signing, with the new key each time, while
    the key set rotates three times (a dead watcher stops a worker within two periods)."""
    keystore, _ = dirs
    assert subprocess.run([*ROTATOR, "rotate", *SHORT], env=cli_env, timeout=60).returncode == 0
    signer = Signer(FileKeystore(keystore), POLICY, passphrase=PASSPHRASE, refresh_interval=0.5)
    parent_jtis: set[object] = set()
    if used_before_fork:
        parent_jtis.add(claims_of(signer.sign(subject="alice", audience="api", ttl=1))["jti"])
    until = time.time() + ROTATIONS * POLICY.rotation_period + 3
    pids: dict[int, Path] = {}
    for i in range(WORKERS):
        out = tmp_path / f"worker-{i}.jsonl"
        pid = os.fork()
        if pid == 0:
            child_signs(signer, out, until)
        pids[pid] = out
    # The parent rotates the key set meanwhile, as a daemon would.
    while time.time() < until:
        subprocess.run([*ROTATOR, "rotate", *SHORT], env=cli_env, capture_output=True, timeout=60)
        time.sleep(0.5)
    statuses = {pid: os.waitpid(pid, 0)[1] for pid in pids}

    jtis: list[object] = []
    for pid, out in pids.items():
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        errors = [line["error"] for line in lines if "error" in line]
        assert not errors and os.waitstatus_to_exitcode(statuses[pid]) == 0, errors[:3]
        kids = [line["kid"] for line in lines]
        switches = sum(1 for a, b in zip(kids, kids[1:]) if a != b)
        assert switches >= ROTATIONS, f"worker {pid} signed with {len(set(kids))} keys ({switches} switches)"
        jtis += [line["jti"] for line in lines]
    assert len(jtis) == len(set(jtis)), "two workers minted the same jti"
    assert not parent_jtis & set(jtis)
    signer.close()
