"""Shared fixtures: an injectable clock, temp file backends, the CLI's environment, running
daemons. Plain helpers live in ``helpers.py`` (and ``daemon_harness.py``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from rotator.config import Policy
from rotator.keystore import FileKeystore
from rotator.publish import FilePublisher
from rotator.reconcile import Rotator

from .daemon_harness import RunningDaemon
from .helpers import PASSPHRASE, TEST_SCRYPT_N, Clock
from .jwks_server import JwksServer, SigningKey


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


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., RunningDaemon]]:
    """Start ``rotator run`` subprocesses in this test's directory; killed at the end if still running."""
    started: list[RunningDaemon] = []

    def start(*extra: str, **kwargs: Any) -> RunningDaemon:
        d = RunningDaemon(tmp_path, *extra, **kwargs)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


@pytest.fixture
def key() -> SigningKey:
    """A fresh ES256 signing key (a module may define its own ``key``)."""
    return SigningKey()


@pytest.fixture
def jwks(key: SigningKey) -> Iterator[JwksServer]:
    """A local JWKS server publishing ``key``, stopped after the test."""
    with JwksServer([key]) as server:
        yield server
