"""Instrumented wrappers around the real file backends, for simulations and property tests.

They add fault injection and a record of everything stored or published; the
storage itself is the real FileKeystore and FilePublisher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rotator.errors import PublishError
from rotator.keystore import FileKeystore
from rotator.publish import FilePublisher
from rotator.state import State


@dataclass(frozen=True)
class Publication:
    at: float  # clock time the document became current
    body: bytes
    generation: int


class RecordingKeystore:
    """A FileKeystore that remembers every state it stored, by generation."""

    def __init__(self, inner: FileKeystore) -> None:
        self.inner = inner
        self.location = inner.location
        self.saved: dict[int, State] = {}

    def load(self) -> State | None:
        return self.inner.load()

    def version(self) -> object:
        return self.inner.version()

    def storage_time(self) -> float | None:
        return self.inner.storage_time()

    def load_if_changed(self, token: object) -> tuple[object, State | None] | None:
        return self.inner.load_if_changed(token)

    def save(self, state: State, expected_generation: int) -> State:
        stored = self.inner.save(state, expected_generation)
        self.saved[stored.generation] = stored
        return stored


class FaultyPublisher:
    """A FilePublisher that can fail writes or serve an older copy on read-back, and logs changes."""

    def __init__(self, inner: FilePublisher, clock: Callable[[], float]) -> None:
        self.inner = inner
        self.location = inner.location
        self.clock = clock
        self.history: list[Publication] = []
        self.fail_writes = False
        self.stale_reads = False
        self.writes = 0
        self.reads = 0

    @property
    def etag(self) -> str | None:
        return self.inner.etag

    def write(self, body: bytes, generation: int, previous_etag: str | None = None) -> bool:
        if self.fail_writes:
            raise PublishError("injected: publish target answered 503")
        self.writes += 1
        before = self.inner.read_back()
        written = self.inner.write(body, generation, previous_etag)
        if written and body != before:
            self.history.append(Publication(self.clock(), body, generation))
        return written

    def published_generation(self) -> int | None:
        return self.inner.published_generation()

    def read_back(self) -> bytes | None:
        self.reads += 1
        if self.stale_reads and len(self.history) >= 2:
            return self.history[-2].body
        return self.inner.read_back()


class Crash(BaseException):
    """Raised from a checkpoint to stop a step dead, as a killed process would."""
