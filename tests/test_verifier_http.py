"""The verifier's key cache against a real HTTP server that counts, delays, hangs, fails and stops."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import pytest

from rotator.verifier import BadSignature, KeysUnavailable, UnknownKey, Verifier

from .helpers import AUD, ISS, Clock, claims_at, result_entries, self_signed_cert, wait_for
from .jwks_server import JwksServer, SigningKey


@pytest.fixture
def server(key: SigningKey) -> Iterator[JwksServer]:
    with JwksServer([key]) as srv:
        yield srv


def make(server: JwksServer, **options: Any) -> Verifier:
    return Verifier(server.url, issuer=ISS, audience=AUD, allow_http=True, **options)


def run_together(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(i) on n threads released at the same instant; returns results or exceptions."""
    barrier = threading.Barrier(n)

    def call(i: int) -> Any:
        barrier.wait()
        try:
            return fn(i)
        except Exception as e:  # collected and asserted on by the caller
            return e

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(call, range(n)))


def random_kid() -> str:
    return secrets.token_urlsafe(32)


# -- cold cache ---------------------------------------------------------------------------


def test_200_threads_on_a_cold_cache_cause_one_fetch(server: JwksServer, key: SigningKey) -> None:
    """200 threads verifying at once on a cold cache cause one JWKS fetch, and every one of them
    is answered."""
    server.delay = 0.3  # every caller arrives while the first fetch is in flight
    verifier = make(server)
    token = key.sign(claims_at(time.time()))
    results = run_together(200, lambda i: verifier.verify(token))
    assert all(isinstance(r, dict) and r["sub"] == "user-1" for r in results), {type(r) for r in results}
    assert server.requests == 1
    assert verifier.stats().fetches == 1


def test_200_coroutines_on_a_cold_cache_cause_one_fetch_shared_with_threads(server: JwksServer, key: SigningKey) -> None:
    """200 coroutines and threads together on a cold cache share one JWKS fetch."""
    server.delay = 0.3
    verifier = make(server)
    token = key.sign(claims_at(time.time()))

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(verifier.averify(token) for _ in range(200)), return_exceptions=True))

    thread_result: list[Any] = []
    side = threading.Thread(target=lambda: thread_result.append(verifier.verify(token)))
    side.start()
    results = asyncio.run(main())
    side.join()
    assert all(isinstance(r, dict) for r in results + thread_result)
    assert server.requests == 1


def test_averify_does_not_block_the_event_loop_while_fetching(server: JwksServer, key: SigningKey) -> None:
    """averify awaits a slow fetch without blocking the event loop: other tasks keep running
    meanwhile."""
    server.delay = 0.5
    verifier = make(server)
    token = key.sign(claims_at(time.time()))

    async def main() -> tuple[dict[str, Any], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        claims = await verifier.averify(token)
        task.cancel()
        return claims, ticks

    claims, ticks = asyncio.run(main())
    assert claims["sub"] == "user-1"
    assert ticks >= 5, "the event loop stood still during the fetch"


# -- unknown kids -------------------------------------------------------------------------


def test_random_kid_flood_costs_one_fetch_per_cooldown_and_never_delays_valid_tokens(
    server: JwksServer, key: SigningKey
) -> None:
    """A flood of tokens with random kids costs at most one fetch per cooldown, and valid tokens
    are answered from the cache throughout."""
    clock = Clock(time.time())
    verifier = make(server, clock=clock, unknown_kid_cooldown=30)
    attacker = SigningKey()
    valid = key.sign(claims_at(clock.now))
    assert verifier.verify(valid)
    assert server.requests == 1
    clock.advance(31)  # past the cooldown measured from the last fetch

    # Concurrent flood. The one refetch it causes is held open by the server, and valid
    # tokens are verified while it is still in flight: they do not wait for it.
    server.hold = threading.Event()
    flood: list[Any] = []
    flooder = threading.Thread(
        target=lambda: flood.extend(run_together(200, lambda i: verifier.verify(attacker.sign(claims_at(clock.now), kid=random_kid())))),
    )
    flooder.start()
    wait_for(lambda: server.in_flight == 1, timeout=10)
    for _ in range(50):
        assert verifier.verify(valid)["sub"] == "user-1"
    assert server.in_flight == 1, "the refetch finished before the valid tokens were checked"
    server.hold.set()
    flooder.join()
    assert len(flood) == 200 and all(isinstance(r, UnknownKey) for r in flood), {type(r) for r in flood}
    assert server.requests == 2

    # Sequential flood within the same cooldown: no fetch at all.
    server.hold = None
    for _ in range(200):
        with pytest.raises(UnknownKey):
            verifier.verify(attacker.sign(claims_at(clock.now), kid=random_kid()))
    assert server.requests == 2

    # Next cooldown: again at most one.
    clock.advance(31)
    for _ in range(200):
        with pytest.raises(UnknownKey):
            verifier.verify(attacker.sign(claims_at(clock.now), kid=random_kid()))
    assert server.requests == 3
    assert verifier.stats().unknown_kid_fetches == 2


def test_unknown_kid_that_was_just_published_is_found_by_the_refetch(server: JwksServer, key: SigningKey) -> None:
    """A kid published since the last fetch is found by the refetch an unknown kid triggers."""
    clock = Clock(time.time())
    verifier = make(server, clock=clock, unknown_kid_cooldown=30)
    assert verifier.verify(key.sign(claims_at(clock.now)))
    successor = SigningKey()
    server.keys.append(successor)
    clock.advance(31)
    assert verifier.verify(successor.sign(claims_at(clock.now)))["sub"] == "user-1"
    assert server.requests == 2


def test_negative_cache_remembers_an_unknown_kid_for_a_cooldown(server: JwksServer, key: SigningKey) -> None:
    """An unknown kid is not refetched for again within the cooldown."""
    clock = Clock(time.time())
    verifier = make(server, clock=clock, unknown_kid_cooldown=30)
    assert verifier.verify(key.sign(claims_at(clock.now)))
    clock.advance(31)
    stranger = SigningKey()
    token = stranger.sign(claims_at(clock.now))
    with pytest.raises(UnknownKey):
        verifier.verify(token)
    assert server.requests == 2
    assert stranger.kid in verifier._keys._negative
    clock.advance(29)
    with pytest.raises(UnknownKey):
        verifier.verify(token)
    assert server.requests == 2


def test_a_bad_signature_never_causes_a_refetch(server: JwksServer, key: SigningKey) -> None:
    """A bad signature under a known kid never causes a fetch."""
    clock = Clock(time.time())
    verifier = make(server, clock=clock)
    assert verifier.verify(key.sign(claims_at(clock.now)))
    clock.advance(31)  # past the unknown-kid cooldown, key set still fresh
    before = server.requests
    forged = SigningKey().sign(claims_at(clock.now), kid=key.kid)
    for _ in range(50):
        with pytest.raises(BadSignature):
            verifier.verify(forged)
    assert server.requests == before


# -- slow, hanging, failing and stopped hosts ------------------------------------------------


def test_hanging_host_does_not_make_callers_queue(server: JwksServer, key: SigningKey) -> None:
    """Callers waiting on a host that never answers each give up after the timeout; none queues
    behind another's wait."""
    timeout = 0.5
    server.hold = threading.Event()  # the host accepts and then never answers (until the test ends)
    verifier = make(server, timeout=timeout, connect_timeout=0.2)
    token = key.sign(claims_at(time.time()))

    def timed(i: int) -> tuple[float, Any]:
        start = time.monotonic()
        try:
            return time.monotonic() - start, verifier.verify(token)
        except KeysUnavailable as e:
            return time.monotonic() - start, e

    results = run_together(50, timed)
    waits = [w for w, _ in results]
    assert all(isinstance(r, KeysUnavailable) for _, r in results)
    assert server.requests == 1, "callers started their own fetches instead of sharing one"
    assert server.in_flight == 1, "the host was still hanging when every caller had its answer"
    # Queueing behind one another would take 50 x the timeout; sharing the fetch takes one.
    print(f"\n[hanging host] 50 callers, timeout {timeout}s: longest wait {max(waits):.2f}s, median {sorted(waits)[25]:.2f}s")
    assert max(waits) < 4 * timeout
    # During the back-off after that failure, callers fail at once without another fetch.
    start = time.monotonic()
    with pytest.raises(KeysUnavailable, match="timed out|longer than"):
        verifier.verify(token)
    assert time.monotonic() - start < timeout
    assert server.requests == 1
    server.hold.set()


def test_hanging_refresh_does_not_delay_a_warm_cache(server: JwksServer, key: SigningKey) -> None:
    """A refresh-ahead fetch that hangs does not delay verification from a warm cache."""
    clock = Clock(time.time())
    verifier = make(server, clock=clock, timeout=2.0)
    token = key.sign(claims_at(clock.now))
    assert verifier.verify(token)
    server.hold = threading.Event()
    clock.advance(250)  # past the refresh-ahead point (80% of max-age 300), still fresh
    for _ in range(20):
        assert verifier.verify(token)["sub"] == "user-1"
    wait_for(lambda: server.in_flight == 1, timeout=10)
    assert server.requests == 2 and server.in_flight == 1  # one background refresh, still hanging
    server.hold.set()
    wait_for(lambda: (age := verifier.stats().age) is not None and age < 1, timeout=10)


def test_stopped_host_serves_stale_keys_up_to_the_bound_then_keys_unavailable(server: JwksServer, key: SigningKey) -> None:
    """With the JWKS host down, the last key set serves up to max_stale past its freshness, then
    KeysUnavailable."""
    clock = Clock(time.time())
    verifier = make(server, clock=clock, max_stale=600)
    token = key.sign(claims_at(clock.now, exp=int(clock.now) + 86400))
    assert verifier.verify(token)
    server.stop()
    t0 = _t0(verifier)
    for t in (250, 301, 600, 899):  # refresh due, expired, stale within the 600 s bound
        clock.now = t0 + t
        assert verifier.verify(token)["sub"] == "user-1", f"rejected {t}s after the fetch"
        wait_for(lambda: verifier._keys._inflight is None, timeout=10)
    stats = verifier.stats()
    assert stats.failures >= 1 and "cannot fetch" in (stats.last_error or "")
    clock.now = t0 + 300 + 600 + 1
    with pytest.raises(KeysUnavailable, match="could not be refreshed"):
        verifier.verify(token)
    # The host comes back: after the back-off the next call fetches and verifies again.
    server.start()
    clock.advance(60)
    wait_for(lambda: _verifies(verifier, token), timeout=10)
    assert verifier.stats().failures >= 1 and verifier.stats().last_error is None


def _t0(verifier: Verifier) -> float:
    snap = verifier._keys._snapshot
    assert snap is not None
    return snap.fetched_at


def _verifies(verifier: Verifier, token: str) -> bool:
    try:
        verifier.verify(token)
        return True
    except KeysUnavailable:
        time.sleep(0.01)
        return False


def test_failing_host_with_a_cold_cache_is_keys_unavailable(server: JwksServer, key: SigningKey) -> None:
    """A host answering 503 on a cold cache is KeysUnavailable naming the status."""
    server.fail_status = 503
    verifier = make(server)
    with pytest.raises(KeysUnavailable, match="HTTP 503"):
        verifier.verify(key.sign(claims_at(time.time())))


def test_redirects_are_not_followed(server: JwksServer, key: SigningKey) -> None:
    """A redirect is not followed: KeysUnavailable, one request."""
    server.fail_status = 302
    server.extra_headers = {"Location": "https://attacker.example/jwks.json"}
    verifier = make(server)
    with pytest.raises(KeysUnavailable, match="HTTP 302"):
        verifier.verify(key.sign(claims_at(time.time())))
    assert server.requests == 1


# -- conditional refresh and bad documents ----------------------------------------------------


def test_etag_conditional_refresh_gets_304_and_renews(server: JwksServer, key: SigningKey) -> None:
    """An expired key set is revalidated with If-None-Match; a 304 renews it without a new
    download."""
    clock = Clock(time.time())
    verifier = make(server, clock=clock)
    token = key.sign(claims_at(clock.now, exp=int(clock.now) + 86400))
    assert verifier.verify(token)
    first = verifier._keys._snapshot
    clock.advance(301)  # expired: this call waits for the conditional GET
    assert verifier.verify(token)
    assert server.requests == 2 and server.not_modified == 1
    stats = verifier.stats()
    assert stats.not_modified == 1 and stats.fresh_for == pytest.approx(300, abs=1)
    assert verifier._keys._snapshot is not first and verifier._keys._snapshot.keys is first.keys  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "body, reason",
    [
        (b'{"keys": [' + b'{"kty":"EC"},' * 200_000 + b"{}]}", "limit"),
        (b"{not json", "rejected"),
        (b'{"keys": [], "keys": []}', "duplicate"),
        (b'{"keys": "none"}', "rejected"),
        (json.dumps({"keys": [{"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}]}).encode(), "no usable"),
        (json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": f"k{i}", "x": "A", "y": "A"} for i in range(300)]}).encode(), "more than the limit"),
    ],
    ids=["oversized", "malformed", "duplicate-members", "keys-not-a-list", "no-usable-key", "too-many-keys"],
)
def test_oversized_or_malformed_jwks_keeps_the_old_keys(server: JwksServer, key: SigningKey, body: bytes, reason: str) -> None:
    """An oversized or malformed JWKS on refresh is refused and the previous keys stay in use."""
    clock = Clock(time.time())
    verifier = make(server, clock=clock)
    token = key.sign(claims_at(clock.now, exp=int(clock.now) + 86400))
    assert verifier.verify(token)
    server.body_override = body
    clock.advance(301)
    assert verifier.verify(token)["sub"] == "user-1"
    wait_for(lambda: verifier._keys._inflight is None, timeout=10)
    stats = verifier.stats()
    assert stats.failures == 1 and reason in (stats.last_error or ""), stats.last_error
    assert stats.keys == 1


def test_cache_control_max_age_is_clamped(server: JwksServer, key: SigningKey) -> None:
    """Cache-Control max-age is clamped to [min_max_age, max_max_age]."""
    clock = Clock(time.time())
    server.max_age = 5  # below the floor
    verifier = make(server, clock=clock, min_max_age=30, max_max_age=600)
    assert verifier.verify(key.sign(claims_at(clock.now)))
    assert verifier.stats().fresh_for == pytest.approx(30, abs=1)
    server.max_age = 10**7  # above the ceiling
    verifier.refresh()
    assert verifier.stats().fresh_for == pytest.approx(600, abs=1)
    server.max_age = None  # absent: the default
    verifier.refresh()
    assert verifier.stats().fresh_for == pytest.approx(300, abs=1)


def test_plain_http_is_refused_unless_allowed_and_loopback() -> None:
    """Plain http is refused unless allowed and loopback; other schemes are refused outright."""
    with pytest.raises(ValueError, match="plain http"):
        Verifier("http://127.0.0.1:8080/jwks.json")
    with pytest.raises(ValueError, match="loopback"):
        Verifier("http://issuer.example/jwks.json", allow_http=True)
    with pytest.raises(ValueError, match="https"):
        Verifier("file:///etc/jwks.json")
    Verifier("http://localhost:8080/jwks.json", allow_http=True)
    Verifier("http://[::1]:8080/jwks.json", allow_http=True)


def test_result_cache_under_concurrent_use(server: JwksServer, key: SigningKey) -> None:
    """Many threads filling, hitting and evicting a small result cache: every answer is right."""
    verifier = make(server, result_cache_size=8)
    tokens = [key.sign(claims_at(time.time(), jti=f"t{i}")) for i in range(40)]
    results = run_together(16, lambda i: [verifier.verify(tokens[(i * 7 + n) % 40])["jti"] for n in range(400)])
    for i, got in enumerate(results):
        assert got == [f"t{(i * 7 + n) % 40}" for n in range(400)], got if isinstance(got, Exception) else "mismatch"
    assert len(result_entries(verifier)) <= 8


# -- HTTPS ------------------------------------------------------------------------------------


def test_https_with_a_trusted_certificate_and_refusal_of_an_untrusted_one(key: SigningKey, tmp_path: Any) -> None:
    """HTTPS verifies with a trusted certificate and refuses an untrusted one as
    KeysUnavailable."""
    import ssl

    cert, private = self_signed_cert(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, private)
    with JwksServer([key], tls=server_ctx) as server:
        assert server.url.startswith("https://localhost:")
        token = key.sign(claims_at(time.time()))
        trusting = Verifier(server.url, issuer=ISS, audience=AUD, ssl_context=ssl.create_default_context(cafile=cert))
        assert trusting.verify(token)["sub"] == "user-1"
        # The system trust store does not know this certificate: no keys, and the reason says TLS.
        default = Verifier(server.url, issuer=ISS, audience=AUD)
        with pytest.raises(KeysUnavailable, match="TLS error|CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            default.verify(token)
        assert server.requests == 1  # the untrusted handshake never reached a request
