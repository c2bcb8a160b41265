"""Shared fixtures: an injectable clock, temp file backends, a verifier for tokens."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from rotator.config import Policy
from rotator.keystore import FileKeystore
from rotator.publish import FilePublisher
from rotator.reconcile import Rotator
from rotator.verifier import parse_jwks, verify_token

VECTORS = Path(__file__).parent / "vectors"
SHARED_VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
PASSPHRASE = "correct horse battery staple"
TEST_SCRYPT_N = 2**10  # the default cost is slow on purpose; tests exercise the same code path
T0 = 1_800_000_000.0


def load_vectors(name: str) -> Any:
    path = VECTORS / name
    if not path.exists():
        path = SHARED_VECTORS / name
    return json.loads(path.read_text())


def wait_for(
    predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition", poll: float = 0.01
) -> Any:
    """Poll ``predicate`` until it returns something true (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


class Clock:
    """A hand-driven clock, injected wherever rotator reads time."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    keystore = tmp_path / "keystore"
    public = tmp_path / "public"
    return keystore, public


@pytest.fixture
def make_rotator(dirs: tuple[Path, Path], clock: Clock) -> Callable[..., Rotator]:
    def make(policy: Policy | None = None, **kwargs: Any) -> Rotator:
        keystore, public = dirs
        options: dict[str, Any] = dict(
            keystore=FileKeystore(keystore),
            publisher=FilePublisher(public),
            policy=policy or Policy(),
            passphrase=PASSPHRASE,
            clock=clock,
            scrypt_n=TEST_SCRYPT_N,
            storage_clock=False,  # simulated time: no store shares this clock
        )
        options.update(kwargs)
        return Rotator(**options)

    return make


def verify_with(token: str, jwks_body: bytes, now: float, **kwargs: Any) -> dict[str, Any]:
    return verify_token(token, parse_jwks(jwks_body), now=now, **kwargs)


@pytest.fixture
def cli_env(dirs: tuple[Path, Path]) -> dict[str, str]:
    """Environment for running the CLI against the temp backends."""
    keystore, public = dirs
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_")}
    env.update(
        ROTATOR_KEYSTORE=f"file://{keystore}",
        ROTATOR_PUBLISH=f"file://{public}",
        ROTATOR_KEYSTORE_PASSPHRASE=PASSPHRASE,
        ROTATOR_ISSUER="https://issuer.test",
    )
    return env
