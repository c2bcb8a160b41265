"""Instrumented wrappers around the real file backends, for simulations and property tests.

They add fault injection and a record of everything stored or published; the
storage itself is the real FileKeystore and FilePublisher.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

from rotator.errors import PublishError
from rotator.keystore import FileKeystore
from rotator.publish import FilePublisher, Marker
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

    @etag.setter
    def etag(self, value: str | None) -> None:
        self.inner.etag = value

    def write_discovery(self, body: bytes) -> None:
        self.inner.write_discovery(body)

    def write(self, body: bytes, generation: int, lineage: str | None, previous_etag: str | None = None) -> bool:
        if self.fail_writes:
            raise PublishError("injected: publish target answered 503")
        self.writes += 1
        before = self.inner.read_back()
        written = self.inner.write(body, generation, lineage, previous_etag)
        if written and body != before:
            self.history.append(Publication(self.clock(), body, generation))
        return written

    def marker(self) -> Marker | None:
        return self.inner.marker()

    def revoked(self) -> frozenset[str]:
        return self.inner.revoked()

    def record_revoked(self, kids: frozenset[str]) -> None:
        if self.fail_writes:
            raise PublishError("injected: publish target answered 503")
        self.inner.record_revoked(kids)

    def document(self) -> bytes | None:
        return self.read_back()

    def read_back(self) -> bytes | None:
        self.reads += 1
        if self.stale_reads and len(self.history) >= 2:
            return self.history[-2].body
        return self.inner.read_back()


class Crash(BaseException):
    """Raised from a checkpoint to stop a step dead, as a killed process would."""


def check_target_rule(make: Callable[[], Any]) -> None:
    """The publish target's own rule (``rotator.publish.target.refusal``), asked of a real
    target through fresh publishers (as separate hosts would): never an older generation,
    never another lineage, never the served generation with another body; the same body
    again, a newer generation of its lineage, or a writer from before lineages, yes."""
    a, b = "A" * 22, "B" * 22
    first = make()
    assert first.write(b'{"keys":[]}\n', 7, a)
    assert not make().write(b'{"keys":[1]}\n', 6, a), "an older generation replaced a newer one"
    assert not make().write(b'{"keys":[1]}\n', 7, a), "the served generation was taken with another body"
    assert make().write(b'{"keys":[]}\n', 7, a), "the same document again (a step that crashed) was refused"
    assert not make().write(b'{"keys":[2]}\n', 99, b), "another lineage replaced this one's JWKS"
    assert make().read_back() == b'{"keys":[]}\n'
    assert make().write(b'{"keys":[2]}\n', 8, None), "a state from before lineages was refused"
    marker = make().marker()
    assert marker is not None and marker.generation == 8 and marker.lineage is None
    assert make().write(b'{"keys":[3]}\n', 9, a)
    assert make().marker() == Marker(9, a, hashlib.sha256(b'{"keys":[3]}\n').hexdigest())
    # The revoked list only grows, whoever adds to it.
    assert make().revoked() == frozenset()
    make().record_revoked(frozenset({"k1", "k2"}))
    make().record_revoked(frozenset({"k2", "k3"}))
    make().record_revoked(frozenset({"k1"}))
    assert make().revoked() == {"k1", "k2", "k3"}
