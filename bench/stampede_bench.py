"""JWKS client behaviour under stampedes, kid floods, hangs and outages: rotator vs PyJWT's PyJWKClient.

Both clients fetch from the same real HTTP server on loopback (tests/jwks_server.py),
which counts requests and can delay, hang or stop. For each scenario the bench prints
the fetches the host saw and how long callers waited, side by side.

  cold        200 threads verify a valid token at once on a cold cache; host answers after 0.3 s
  kid-flood   warm cache, slow host (0.2 s); 200 tokens with random unknown kids at once, then
              200 one by one over about 3 cooldowns (1 s each); meanwhile a valid token is
              verified in a loop (its worst latency is reported)
  hang        host accepts and never answers; 20 threads on a cold cache, 0.5 s timeout
  outage      warm cache, host stopped, the key set's lifetime (1 s) has passed: 100 valid tokens

    .venv/bin/python bench/stampede_bench.py
"""

from __future__ import annotations

import secrets
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jwt  # noqa: E402

from rotator.verifier import Verifier  # noqa: E402
from tests.jwks_server import JwksServer, SigningKey  # noqa: E402

ISS = "https://issuer.example"
AUD = "orders-api"

Verify = Callable[[str], Any]


COOLDOWN = 1.0  # unknown-kid refetch cooldown for both clients, short so the bench sees several


def rotator_client(url: str, *, timeout: float = 5.0, max_age: float = 300.0) -> Verify:
    verifier = Verifier(
        url, issuer=ISS, audience=AUD, allow_http=True, timeout=timeout, connect_timeout=min(2.0, timeout),
        min_max_age=min(30.0, max_age), default_max_age=max_age, unknown_kid_cooldown=COOLDOWN,
    )
    return verifier.verify


def pyjwt_client(url: str, *, timeout: float = 5.0, max_age: float = 300.0) -> Verify:
    client = jwt.PyJWKClient(url, lifespan=max_age, timeout=timeout, cooldown_duration=COOLDOWN)

    def verify(token: str) -> Any:
        key = client.get_signing_key_from_jwt(token)
        return jwt.decode(token, key.key, algorithms=["ES256"], audience=AUD, issuer=ISS)

    return verify


CLIENTS: dict[str, Callable[..., Verify]] = {"rotator": rotator_client, "pyjwt": pyjwt_client}


def claims() -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISS, "aud": AUD, "sub": "user-1", "iat": now, "exp": now + 3600}


def together(n: int, fn: Callable[[int], Any]) -> list[tuple[float, Any]]:
    """fn(i) on n threads released at once: (seconds waited, result or exception) each."""
    barrier = threading.Barrier(n)

    def call(i: int) -> tuple[float, Any]:
        barrier.wait()
        start = time.perf_counter()
        try:
            result: Any = fn(i)
        except Exception as e:
            result = e
        return time.perf_counter() - start, result

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(call, range(n)))


def summary(results: list[tuple[float, Any]]) -> str:
    waits = [w for w, _ in results]
    ok = sum(1 for _, r in results if isinstance(r, dict))
    return f"ok {ok:>3}/{len(results)}  wait p50 {statistics.median(waits) * 1000:7.1f} ms  max {max(waits) * 1000:7.1f} ms"


def cold(make: Callable[..., Verify], key: SigningKey) -> str:
    with JwksServer([key]) as server:
        server.delay = 0.3
        verify = make(server.url)
        token = key.sign(claims())
        results = together(200, lambda i: verify(token))
        return f"fetches {server.requests:>4}  {summary(results)}"


def kid_flood(make: Callable[..., Verify], key: SigningKey) -> str:
    attacker = SigningKey()
    with JwksServer([key]) as server:
        server.delay = 0.2  # a slow JWKS host: each fetch the flood causes takes 200 ms
        verify = make(server.url)
        valid = key.sign(claims())
        verify(valid)
        warm = server.requests
        time.sleep(COOLDOWN + 0.1)  # the flood starts once an unknown kid may cause a refetch
        stop = threading.Event()
        valid_waits: list[float] = []

        def valid_loop() -> None:
            while not stop.is_set():
                start = time.perf_counter()
                verify(valid)
                valid_waits.append(time.perf_counter() - start)

        side = threading.Thread(target=valid_loop)
        side.start()
        flood = together(200, lambda i: verify(attacker.sign(claims(), kid=secrets.token_urlsafe(32))))
        concurrent = server.requests - warm
        start = time.perf_counter()
        for _ in range(200):  # spread over about 3 cooldowns
            try:
                verify(attacker.sign(claims(), kid=secrets.token_urlsafe(32)))
            except Exception:
                pass
            time.sleep(3 * COOLDOWN / 200)
        sequential_s = time.perf_counter() - start
        stop.set()
        side.join()
        sequential = server.requests - warm - concurrent
        rejected = sum(1 for _, r in flood if not isinstance(r, dict))
        return (
            f"fetches {concurrent:>3} concurrent + {sequential:>3} sequential  rejected {rejected}/200  "
            f"flood wait max {max(w for w, _ in flood) * 1000:6.1f} ms  200 sequential in {sequential_s * 1000:6.1f} ms  "
            f"valid token during flood: max {max(valid_waits) * 1000:6.1f} ms over {len(valid_waits)} checks"
        )


def hang(make: Callable[..., Verify], key: SigningKey) -> str:
    with JwksServer([key]) as server:
        server.hold = threading.Event()
        verify = make(server.url, timeout=0.5)
        token = key.sign(claims())
        start = time.perf_counter()
        results = together(20, lambda i: verify(token))
        total = time.perf_counter() - start
        server.hold.set()
        return f"fetches {server.requests:>4}  {summary(results)}  all answered after {total:5.2f} s"


def outage(make: Callable[..., Verify], key: SigningKey) -> str:
    with JwksServer([key], max_age=1) as server:
        verify = make(server.url, max_age=1.0)
        token = key.sign(claims())
        verify(token)
        server.stop()
        time.sleep(1.2)
        results = []
        for _ in range(100):
            start = time.perf_counter()
            try:
                r: Any = verify(token)
            except Exception as e:
                r = e
            results.append((time.perf_counter() - start, r))
        errors = {type(r).__name__ for _, r in results if not isinstance(r, dict)}
        return f"fetches {server.requests:>4}  {summary(results)}  errors: {', '.join(sorted(errors)) or 'none'}"


def main() -> int:
    key = SigningKey()
    print("stampede_bench: rotator.verifier.Verifier vs jwt.PyJWKClient (PyJWT " + jwt.__version__ + "), same local HTTP host")
    for name, scenario in (("cold", cold), ("kid-flood", kid_flood), ("hang", hang), ("outage", outage)):
        for client, make in CLIENTS.items():
            print(f"{name:<10} {client:<8} {scenario(make, key)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
