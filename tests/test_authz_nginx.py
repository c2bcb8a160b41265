"""`rotator authz` behind Debian's nginx running the shipped examples/authz/nginx.conf, with
a real backend, a real redis-server and real HTTP clients: allow with the claim headers
(client copies replaced), deny, forbidden by a rule, revoked with the CLI (every worker
within a second), revocations unavailable (503, never allow), and a key rotation mid-load
with no wrongful denial."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from .authz_harness import ROOT, ROTATOR, Authz, Backend, Nginx, authz_config, bearer, request
from .helpers import claims_at
from .jwks_server import JwksServer, SigningKey
from .redis_server import RedisServer

TABLES = """
[authz.headers]
sub = "X-Auth-Subject"
scope = "X-Auth-Scope"

[[authz.rules]]
path = "/admin/"
scopes = ["orders:admin"]
"""


class Stack:
    def __init__(self, key: SigningKey, jwks: JwksServer, redis: RedisServer, authz: Authz, nginx: Nginx) -> None:
        self.key, self.jwks, self.redis, self.authz, self.nginx = key, jwks, redis, authz, nginx

    def token(self, **extra: object) -> str:
        return self.key.sign(claims_at(time.time(), **extra))

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return request(self.nginx.port, path, headers)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "ROTATOR_REVOCATION_URL": self.redis.url, "ROTATOR_REVOCATION_PREFIX": "authz:"}
        return subprocess.run([ROTATOR, *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("authz-nginx")
    key = SigningKey()
    redis = RedisServer(tmp / "redis").start()
    try:
        with JwksServer([key]) as jwks, Backend() as backend:
            config = authz_config(jwks.url, redis_url=redis.url, tables=TABLES)
            with Authz(tmp, config) as authz, Nginx(tmp, authz.port, backend.port) as nginx:
                yield Stack(key, jwks, redis, authz, nginx)
    finally:
        redis.stop()


def test_allow_passes_the_claims_and_replaces_client_copies(stack: Stack) -> None:
    """A valid token reaches the backend with X-Auth-Subject and X-Auth-Scope from its claims;
    a copy the client sent is replaced, and a claim the token lacks sends no header at all."""
    status, _, body = stack.get("/orders", bearer(stack.token(scope="orders:read"), **{"X-Auth-Subject": "admin"}))
    assert status == 200
    assert json.loads(body)["headers"] == {"x-auth-subject": "user-1", "x-auth-scope": "orders:read"}
    status, _, body = stack.get("/orders", bearer(stack.token(), **{"X-Auth-Scope": "orders:admin"}))
    assert status == 200 and json.loads(body)["headers"] == {"x-auth-subject": "user-1"}


def test_deny_and_forbidden_reach_the_client_with_their_challenge(stack: Stack) -> None:
    """No token: 401 with a bare challenge; a bad token: 401 invalid_token; a token without
    the rule's scope: 403 insufficient_scope. The backend sees none of them."""
    status, headers, _ = stack.get("/orders")
    assert status == 401 and headers["www-authenticate"] == 'Bearer realm="api"'
    token = stack.token()
    status, headers, _ = stack.get("/orders", bearer(token[:-6] + "AAAAAA"))
    assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]
    status, _, _ = stack.get("/orders", bearer(stack.token(exp=int(time.time()) - 3600)))
    assert status == 401
    status, _, _ = stack.get("/admin/users", bearer(stack.token(scope="orders:read")))
    assert status == 403
    assert stack.get("/admin/users", bearer(stack.token(scope="orders:read orders:admin")))[0] == 200
    assert stack.authz.decisions("deny", "bad_signature") >= 1
    assert stack.authz.decisions("forbidden", "insufficient_scope") >= 1


def _slot_counts(metrics: str) -> dict[str, int]:
    return {m[0]: int(m[1]) for m in re.findall(r'rotator_authz_worker_decisions_total\{slot="(\d+)"\} (\d+)', metrics)}


def test_a_revocation_written_with_the_cli_reaches_every_worker_within_a_second(stack: Stack) -> None:
    """`rotator revoke-subject` in another process; from one second after it returns, every
    request (each on a new connection, so on any worker) is refused, and the per-worker
    counts show every worker answered in that window."""
    token = stack.token(sub="user-revoked")
    assert stack.get("/orders", bearer(token))[0] == 200
    result = stack.cli("revoke-subject", "user-revoked")
    assert result.returncode == 0, result.stderr
    written = time.monotonic()
    time.sleep(1.0)
    before = _slot_counts(stack.authz.metrics())
    statuses = [stack.get("/orders", bearer(token))[0] for _ in range(60)]
    after = _slot_counts(stack.authz.metrics())
    assert set(statuses) == {401}, statuses
    busy = [slot for slot in after if after[slot] - before.get(slot, 0) > 0]
    assert len(busy) == 2, f"requests after {time.monotonic() - written:.1f}s reached slots {busy} only"
    assert stack.get("/orders", bearer(stack.token(sub="user-other")))[0] == 200


def test_revocations_unconfirmed_answer_503_never_allow(stack: Stack) -> None:
    """redis-server stopped (SIGSTOP): once the replica cannot confirm it is current within the
    bound (2 s), nginx answers 503 with Retry-After, not 200; after SIGCONT, 200 again."""
    token = stack.token(sub="user-during-outage")
    stack.redis.pause()
    try:
        seen: list[int] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            status, headers, _ = stack.get("/orders", bearer(token))
            seen.append(status)
            if status == 503:
                assert headers["retry-after"] == "5"
                break
            assert status == 200
            time.sleep(0.1)
        assert seen[-1] == 503, seen
    finally:
        stack.redis.resume()
    assert stack.authz.decisions("unavailable", "revocation_unavailable") >= 1
    deadline = time.monotonic() + 15
    while stack.get("/orders", bearer(token))[0] != 200:
        assert time.monotonic() < deadline, "no recovery after SIGCONT"
        time.sleep(0.1)



def test_a_key_rotation_mid_load_denies_nothing(tmp_path: Path) -> None:
    """wrk through nginx with two workers while a new key is published (JWKS max-age 2 s)
    and, one max-age plus a second after the publication (rotator's schedule leaves at least
    that), the tokens switch to it. Every response is 200: none wrongly denied."""
    old, new = SigningKey(), SigningKey()
    with JwksServer([old], max_age=2) as jwks, Backend() as backend:
        config = authz_config(jwks.url, issuer='min_max_age = "1s"', tables=TABLES)
        with Authz(tmp_path, config) as authz, Nginx(tmp_path, authz.port, backend.port) as nginx:
            now = time.time()
            before, after = tmp_path / "before", tmp_path / "after"
            before.write_text("\n".join(old.sign(claims_at(now, sub=f"old-{i}")) for i in range(500)))
            after.write_text("\n".join(new.sign(claims_at(now, sub=f"new-{i}")) for i in range(500)))
            jwks.keys.append(new)
            switch_at = math.ceil(time.time() + 2 + 1)  # the publication, plus max-age, plus a second
            duration = switch_at - int(time.time()) + 3
            out = subprocess.run(
                ["wrk", "-t1", "-c8", f"-d{duration}s", "-s", str(ROOT / "bench" / "service_bench.lua"),
                 f"http://127.0.0.1:{nginx.port}/"],
                env={**os.environ, "TOKENS": str(before), "TOKENS_AFTER": str(after), "SWITCH_AT": str(switch_at)},
                capture_output=True, text=True, timeout=duration + 30,
            ).stdout
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    assert requests > 100, out
    # Both keys' tokens reached the backend: the switch happened inside the run.
    assert any(s.startswith("old-") for s in backend.subjects) and any(s.startswith("new-") for s in backend.subjects)
