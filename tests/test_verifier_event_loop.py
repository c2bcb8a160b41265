"""``averify`` never blocks the event loop: on every path that may wait for a JWKS fetch
(cold cache, a key set that expired while idle, an unknown kid, a result-cache hit whose
key must be looked up again), a ticker task beside it keeps running while a real, slow
JWKS host takes its time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Iterator

import pytest

from rotator.verifier import UnknownKey, Verifier

from .helpers import AUD, ISS, Clock, claims_at
from .jwks_server import JwksServer, SigningKey

MAX_AGE = 300
TICK = 0.005
# The must-show bound for the longest loop gap; the fetch it runs beside takes seconds.
GAP_BOUND = 0.05


async def longest_gap_while(work: Callable[[], Any]) -> tuple[Any, float, int]:
    """Run ``work()`` (a coroutine) beside a ticker; (its result or exception, the longest
    gap between two ticks, the number of ticks)."""
    stamps: list[float] = []

    async def ticker() -> None:
        while True:
            stamps.append(time.perf_counter())
            await asyncio.sleep(TICK)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker's first stamp
    try:
        outcome: Any = await work()
    except Exception as e:  # asserted on by the caller
        outcome = e
    stamps.append(time.perf_counter())
    task.cancel()
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return outcome, max(gaps), len(stamps)


@pytest.fixture
def server(key: SigningKey) -> Iterator[JwksServer]:
    with JwksServer([key], max_age=MAX_AGE) as srv:
        yield srv


def verifier_for(server: JwksServer, clock: Clock, result_cache: bool) -> Verifier:
    return Verifier(
        server.url, issuer=ISS, audience=AUD, allow_http=True, clock=clock,
        result_cache_size=64 if result_cache else 0,
    )


def set_expired_while_idle(server: JwksServer, key: SigningKey, verifier: Verifier, clock: Clock) -> str:
    token = key.sign(claims_at(clock.now))
    verifier.verify(token)  # warm: keys cached and, with the cache, the result too
    clock.advance(MAX_AGE + 1)  # idle past the max-age: the next lookup must fetch and wait
    return token


def kid_left_the_set(server: JwksServer, key: SigningKey, verifier: Verifier, clock: Clock) -> str:
    token = key.sign(claims_at(clock.now))
    verifier.verify(token)
    server.keys = [SigningKey()]
    verifier.refresh()  # the snapshot no longer has the token's kid
    clock.advance(31)  # past the unknown-kid cooldown: the lookup refetches and waits
    return token


def cold(server: JwksServer, key: SigningKey, verifier: Verifier, clock: Clock) -> str:
    return key.sign(claims_at(clock.now))


def unknown_kid(server: JwksServer, key: SigningKey, verifier: Verifier, clock: Clock) -> str:
    verifier.verify(key.sign(claims_at(clock.now)))
    newcomer = SigningKey()
    server.keys.append(newcomer)
    clock.advance(31)
    return newcomer.sign(claims_at(clock.now))


def refresh_ahead(server: JwksServer, key: SigningKey, verifier: Verifier, clock: Clock) -> str:
    token = key.sign(claims_at(clock.now))
    verifier.verify(token)
    clock.advance(MAX_AGE * 0.9)  # past the refresh-ahead point, still fresh: a background fetch
    return token


PATHS = {
    "cold": (cold, "user-1"),
    "set-expired-while-idle": (set_expired_while_idle, "user-1"),
    "kid-left-the-set": (kid_left_the_set, UnknownKey),
    "unknown-kid": (unknown_kid, "user-1"),
    "refresh-ahead": (refresh_ahead, "user-1"),
}


@pytest.mark.parametrize("result_cache", [True, False], ids=["result-cache", "no-result-cache"])
@pytest.mark.parametrize("path", list(PATHS))
def test_averify_keeps_the_loop_running_on_every_fetch_path(
    server: JwksServer, key: SigningKey, path: str, result_cache: bool
) -> None:
    """Whatever the path, the loop keeps ticking while the host answers in 1 s; the outcome is
    the one the path calls for (claims, or UnknownKey for a kid that left the set)."""
    clock = Clock(time.time())
    verifier = verifier_for(server, clock, result_cache)
    prepare, expected = PATHS[path]
    token = prepare(server, key, verifier, clock)
    requests_before = server.requests
    server.delay = 1.0
    outcome, gap, ticks = asyncio.run(longest_gap_while(lambda: verifier.averify(token)))
    if isinstance(expected, str):
        assert isinstance(outcome, dict) and outcome["sub"] == expected, outcome
    else:
        assert isinstance(outcome, expected), outcome  # type: ignore[arg-type]
    if path != "refresh-ahead":  # there the stale-but-fresh set answers at once
        assert server.requests == requests_before + 1, "the path did not wait on a fetch"
    # A blocked loop stands still for the whole fetch (1 s); a tenth of it leaves room for a
    # loaded machine's scheduling and still tells the two apart.
    assert gap < server.delay / 10, f"{path}: the event loop stood still for {gap * 1000:.0f} ms ({ticks} ticks)"


def test_result_cache_hit_after_idle_does_not_stall_the_loop_during_a_3s_fetch(
    server: JwksServer, key: SigningKey
) -> None:
    """The reported stall: result cache on, the key set passed its max-age while the service
    was idle, the JWKS host answers in 3 s. The hit awaits the fetch; the loop never stops."""
    clock = Clock(time.time())
    verifier = verifier_for(server, clock, result_cache=True)
    token = set_expired_while_idle(server, key, verifier, clock)
    server.delay = 3.0
    started = time.perf_counter()
    outcome, gap, ticks = asyncio.run(longest_gap_while(lambda: verifier.averify(token)))
    waited = time.perf_counter() - started
    print(f"\n[event loop] averify waited {waited:.2f} s on the fetch; longest loop gap {gap * 1000:.1f} ms over {ticks} ticks")
    assert isinstance(outcome, dict) and outcome["sub"] == "user-1", outcome
    assert waited >= server.delay, "the hit did not wait for the fetch it needed"
    assert gap < GAP_BOUND, f"the event loop stood still for {gap * 1000:.0f} ms"
