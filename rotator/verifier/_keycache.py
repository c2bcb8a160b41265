"""The key cache behind a Verifier: one snapshot per JWKS URL, at most one fetch in flight.

Readers take the current snapshot without a lock. The lock guards only the bookkeeping
(which fetch is in flight, when the next may start); it is never held across I/O, so a
slow JWKS host cannot make callers queue behind one another. A fetch runs in its own
thread; callers that need its result wait on it for a bounded time, sync or async, and
then use what they have (a stale snapshot within its bound) or fail.

``KeyCache`` is one class, a little past the project's usual size, on purpose: the sync
and async lookups and the fetch thread share one snapshot and one lock, and every rule
on when a fetch may start is in sight of the others.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Callable, Union

from ..keys import PublicKey

from .._backoff import backoff
from ..jose import KeysUnavailable, UnknownKey
from ._http import FetchError, Response
from ._jwks import KeySet, parse_jwks

__all__ = ["KeyCache", "CacheStats"]

_NEGATIVE_CAP = 4096
_NONE: frozenset[str] = frozenset()
_REFRESH_AHEAD = 0.8  # refresh in the background after this fraction of the freshness lifetime



@dataclass(frozen=True)
class _Snapshot:
    keys: KeySet
    fetched_at: float  # last successful fetch or 304 renewal (monotonic)
    refresh_at: float
    fresh_until: float
    etag: str | None


@dataclass
class CacheStats:
    fetches: int = 0  # requests sent
    not_modified: int = 0  # 304 answers that renewed the snapshot
    failures: int = 0  # fetches that kept the old keys
    unknown_kid_fetches: int = 0  # fetches started because a token named an unknown kid
    last_error: str | None = None
    keys: int = 0
    age: float | None = None  # seconds since the key set was last fetched or renewed
    fresh_for: float | None = None  # seconds until the key set expires (negative: stale)


class _Fetch:
    """One fetch in flight; sync callers wait on ``done``, async callers on a future of their loop."""

    def __init__(self, started: float) -> None:
        self.started = started  # cache clock
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def future(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if not self.done.is_set():
                self._futures.append((loop, fut))
                return fut
        fut.set_result(None)
        return fut

    def finish(self) -> None:
        with self._lock:
            self.done.set()
            futures, self._futures = self._futures, []
        for loop, fut in futures:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that loop has closed; nobody is waiting any more
                pass


# A key to use now, or the fetch in flight to wait for before looking again.
_KeyOrFetch = Union[PublicKey, _Fetch]


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


@dataclass
class KeyCache:
    url: str
    fetcher: Callable[[str | None], Response]  # etag -> Response; raises FetchError
    clock: Callable[[], float]
    fetch_wait: float
    max_stale: float
    unknown_kid_cooldown: float
    min_ttl: float
    max_ttl: float
    default_ttl: float
    max_keys: int
    algorithms: tuple[str, ...] = ("ES256",)
    retry_min: float = 1.0
    retry_max: float = 30.0
    # A fetch running longer than this is taken as failed, so that a new one may start
    # (the HTTP fetcher enforces its own deadline; this covers any fetcher).
    fetch_deadline: float = float("inf")

    _snapshot: _Snapshot | None = field(default=None, init=False)
    _inflight: _Fetch | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _retry_at: float = field(default=float("-inf"), init=False)
    _consecutive_failures: int = field(default=0, init=False)
    _last_unknown_fetch: float = field(default=float("-inf"), init=False)
    _negative: dict[str, float] = field(default_factory=dict, init=False)
    _stats: CacheStats = field(default_factory=CacheStats, init=False)

    # -- lookups -----------------------------------------------------------------------

    def peek(self, kid: str) -> PublicKey | None:
        """The key from a fresh snapshot, without fetching, waiting or locking; None sends the
        caller to ``get`` or ``aget`` (the async fast path: no coroutine for the common case)."""
        snap = self._snapshot
        if snap is not None and self.clock() < snap.refresh_at:
            return snap.keys.get(kid)
        return None

    def algs(self, kid: str) -> frozenset[str]:
        """The algorithms ``kid`` may verify, by the current key set (empty: none)."""
        snap = self._snapshot
        return snap.keys.algs.get(kid, _NONE) if snap is not None else _NONE

    def get(self, kid: str) -> PublicKey:
        found = self._begin(kid)
        if isinstance(found, _Fetch):
            found.done.wait(self.fetch_wait)
            return self._finish(kid)
        return found

    async def aget(self, kid: str) -> PublicKey:
        found = self._begin(kid)
        if isinstance(found, _Fetch):
            try:
                await asyncio.wait_for(found.future(), self.fetch_wait)
            except asyncio.TimeoutError:
                pass
            return self._finish(kid)
        return found

    def _begin(self, kid: str) -> _KeyOrFetch:
        now = self.clock()
        snap = self._snapshot
        if snap is not None and now < snap.refresh_at:
            key = snap.keys.get(kid)
            if key is not None:
                return key
            return self._begin_unknown(kid, snap, now)
        fetch = self._start_fetch(now)
        # Wait for the fetch only when there is nothing fresh to use and no sign the host is failing:
        # a cold cache, or a key set that expired while idle (the fetch began after it expired).
        # During an outage, or behind a background refresh that is taking its time, the stale set
        # serves at once.
        if fetch is not None and (
            snap is None
            or (now >= snap.fresh_until and self._consecutive_failures == 0 and fetch.started >= snap.fresh_until)
        ):
            return fetch
        return self._lookup(kid, snap, now, may_fetch=True)

    def _lookup(
        self, kid: str, snap: _Snapshot | None, now: float, *, may_fetch: bool
    ) -> _KeyOrFetch:
        if snap is None:
            raise KeysUnavailable(self._stats.last_error or f"no key set from {self.url} yet (fetch pending)")
        if now >= snap.fresh_until + self.max_stale:
            raise KeysUnavailable(
                f"key set from {self.url} is {now - snap.fetched_at:.0f}s old and could not be refreshed: "
                f"{self._stats.last_error or 'fetch pending'}"
            )
        key = snap.keys.get(kid)
        if key is not None:
            return key
        if not may_fetch:
            self._remember_unknown(kid, now)
            raise UnknownKey("token kid is not in the key set")
        return self._begin_unknown(kid, snap, now)

    def _begin_unknown(
        self, kid: str, snap: _Snapshot, now: float
    ) -> _KeyOrFetch:
        until = self._negative.get(kid)
        if until is not None and until > now:
            raise UnknownKey("token kid is not in the key set")
        with self._lock:
            fetch = self._inflight_locked(now)
            if (
                fetch is None
                and now >= self._retry_at
                and now - max(self._last_unknown_fetch, snap.fetched_at) >= self.unknown_kid_cooldown
            ):
                self._last_unknown_fetch = now
                self._stats.unknown_kid_fetches += 1
                fetch = self._start_locked()
        if fetch is None:
            self._remember_unknown(kid, now)
            raise UnknownKey("token kid is not in the key set")
        return fetch

    def _finish(self, kid: str) -> PublicKey:
        key = self._lookup(kid, self._snapshot, self.clock(), may_fetch=False)
        assert not isinstance(key, _Fetch)
        return key

    def _remember_unknown(self, kid: str, now: float) -> None:
        with self._lock:
            if len(self._negative) >= _NEGATIVE_CAP:
                self._negative = {k: t for k, t in self._negative.items() if t > now}
                if len(self._negative) >= _NEGATIVE_CAP:
                    self._negative = {}
            self._negative[kid] = now + self.unknown_kid_cooldown

    # -- fetching ----------------------------------------------------------------------

    def _start_fetch(self, now: float) -> _Fetch | None:
        """The fetch in flight, a new one if allowed now, or None while backing off after a failure."""
        with self._lock:
            inflight = self._inflight_locked(now)
            if inflight is not None:
                return inflight
            if now < self._retry_at:
                return None
            return self._start_locked()

    def _inflight_locked(self, now: float) -> _Fetch | None:
        """The fetch in flight; one past its deadline counts as failed, whatever its thread is doing."""
        inflight = self._inflight
        if inflight is not None and now - inflight.started > self.fetch_deadline:
            self._inflight = None
            self._fail_locked(now, f"JWKS fetch from {self.url} did not finish within {self.fetch_deadline:g}s")
            inflight.finish()
            return None
        return inflight

    def _start_locked(self) -> _Fetch:
        fetch = _Fetch(self.clock())
        self._inflight = fetch
        etag = self._snapshot.etag if self._snapshot is not None else None
        threading.Thread(target=self._run, args=(fetch, etag), name="rotator-jwks-fetch", daemon=True).start()
        return fetch

    def _run(self, fetch: _Fetch, etag: str | None) -> None:
        try:
            self._stats.fetches += 1
            try:
                response = self.fetcher(etag)
                self._accept(response)
            except FetchError as e:
                self._fail(str(e))
            except Exception as e:  # a fetch thread must always finish its waiters
                self._fail(f"JWKS fetch from {self.url} failed: {type(e).__name__}: {e}")
        finally:
            with self._lock:
                if self._inflight is fetch:
                    self._inflight = None
            fetch.finish()

    def _ttl(self, max_age: float | None) -> float:
        ttl = self.default_ttl if max_age is None else max_age
        return min(max(ttl, self.min_ttl), self.max_ttl)

    def _accept(self, response: Response) -> None:
        now = self.clock()
        ttl = self._ttl(response.max_age)
        old = self._snapshot
        if response.status == 304:
            if old is None:
                raise FetchError(f"JWKS host answered 304 for {self.url} without a cached copy")
            keys = old.keys
            self._stats.not_modified += 1
        else:
            try:
                keys = parse_jwks(response.body, max_keys=self.max_keys, algorithms=self.algorithms)
            except ValueError as e:
                raise FetchError(f"JWKS from {self.url} rejected, old keys kept: {e}") from e
            if not keys:
                raise FetchError(f"JWKS from {self.url} has no usable {'/'.join(self.algorithms)} signing key, old keys kept")
        self._snapshot = _Snapshot(keys, now, now + ttl * _REFRESH_AHEAD, now + ttl, response.etag)
        with self._lock:
            self._consecutive_failures = 0
            self._retry_at = float("-inf")
        self._stats.last_error = None

    def _fail(self, message: str) -> None:
        with self._lock:
            self._fail_locked(self.clock(), message)

    def _fail_locked(self, now: float, message: str) -> None:
        self._consecutive_failures += 1
        self._retry_at = now + backoff(self._consecutive_failures, self.retry_min, self.retry_max)
        self._stats.failures += 1
        self._stats.last_error = message

    # -- introspection -----------------------------------------------------------------

    def refresh(self) -> None:
        """Fetch now (or join the fetch in flight) and wait for it, up to the fetch wait."""
        with self._lock:
            fetch = self._inflight_locked(self.clock()) or self._start_locked()
        fetch.done.wait(self.fetch_wait)

    def stats(self) -> CacheStats:
        snap = self._snapshot
        now = self.clock()
        s = self._stats
        return CacheStats(
            fetches=s.fetches,
            not_modified=s.not_modified,
            failures=s.failures,
            unknown_kid_fetches=s.unknown_kid_fetches,
            last_error=s.last_error,
            keys=len(snap.keys) if snap else 0,
            age=(now - snap.fetched_at) if snap else None,
            fresh_for=(snap.fresh_until - now) if snap else None,
        )
