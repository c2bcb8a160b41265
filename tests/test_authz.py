"""The sidecar's decision and settings (rotator.authz) with real Verifiers against a local
JWKS server, then `rotator authz` as a process: the Envoy HTTP and Traefik endpoints, a
worker killed and replaced, and SIGHUP reloads good and bad."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rotator.authz import Authorizer, AuthzSettings, IssuerSettings, Rule, load_authz
from rotator.errors import ConfigError
from rotator.verifier import Verifier

from .authz_harness import Authz, authz_config, bearer, request
from .helpers import AUD, ISS, Clock, claims_at, wait_for
from .jwks_server import JwksServer, SigningKey


def authorizer(jwks: JwksServer, **options: Any) -> Authorizer:
    settings = AuthzSettings(issuers=(IssuerSettings(ISS, jwks.url, (AUD,), allow_http=True),), **options)
    return Authorizer(settings, Verifier(jwks.url, issuer=ISS, audience=AUD, allow_http=True, timeout=0.5))


def decide(a: Authorizer, token: str | None, method: str | None = "GET", path: str | None = "/orders") -> Any:
    return asyncio.run(a.decide([f"Bearer {token}"] if token else [], method, path))


# -- the decision --------------------------------------------------------------------------------


def test_claim_headers_are_capped_and_refused_with_control_characters(jwks: JwksServer, key: SigningKey) -> None:
    """Mapped claims become headers (a list of strings joined by spaces, a number as text);
    a value over the cap, or holding a control character or non-ASCII, refuses the request
    (403 claim_header) rather than send a header the upstream might misread."""
    a = authorizer(jwks, headers=(("sub", "X-Auth-Subject"), ("roles", "X-Auth-Roles"), ("level", "X-Auth-Level")),
                   max_header_bytes=32)
    d = decide(a, key.sign(claims_at(time.time(), roles=["a", "b"], level=3)))
    assert d.status == 200 and dict(d.headers) == {"X-Auth-Subject": "user-1", "X-Auth-Roles": "a b", "X-Auth-Level": "3"}
    for bad in ("user\r\nX-Admin: 1", "user\x00", "x" * 33, "usér"):
        d = decide(a, key.sign(claims_at(time.time(), sub=bad)))
        assert (d.status, d.reason) == (403, "claim_header"), bad
    assert decide(a, key.sign(claims_at(time.time(), roles={"a": 1}))).reason == "claim_header"


def test_decision_caching_is_off_by_default_and_bounded_when_on(jwks: JwksServer, key: SigningKey) -> None:
    """Off: an allow carries no Cache-Control (no proxy caches an auth answer unless told to).
    On: an allow's max-age is the least of the setting, the token's remaining life and (with
    revocation) the staleness bound. Denials always say no-store."""
    now = time.time()
    token = key.sign(claims_at(now, exp=int(now) + 100))
    assert "cache-control" not in dict(decide(authorizer(jwks), token).headers)
    capped = dict(decide(authorizer(jwks, decision_max_age=600.0), token).headers)["cache-control"]
    assert capped.startswith("private, max-age=") and 90 <= int(capped.rsplit("=", 1)[1]) <= 100
    assert dict(decide(authorizer(jwks, decision_max_age=20.0), token).headers)["cache-control"] == "private, max-age=20"
    revoking = authorizer(jwks, decision_max_age=600.0, revocation_url="redis://127.0.0.1:1/0", revocation_max_staleness=5.0)
    assert dict(decide(revoking, token).headers)["cache-control"] == "private, max-age=5"
    assert ("cache-control", "no-store") in decide(authorizer(jwks, decision_max_age=600.0), None).headers


def test_rules_need_the_original_request_and_a_plain_path(jwks: JwksServer, key: SigningKey) -> None:
    """With rules, a check that does not say which request it is answers 400, and a path
    with dot segments or encoded characters is refused (403) rather than matched."""
    a = authorizer(jwks, rules=(Rule("/admin/", scopes=("admin",)),))
    token = key.sign(claims_at(time.time()))
    assert decide(a, token, method=None).reason == "no_original_request"
    for path in ("/public/../admin/x", "/admin%2fx", "//admin/x", "/a/./admin"):
        assert (decide(a, token, path=path).status, decide(a, token, path=path).reason) == (403, "path_not_plain")
    assert decide(a, token, path="/admin/x").reason == "insufficient_scope"
    assert decide(a, token, path="/orders?x=/admin/").status == 200


def test_a_kept_allow_is_asked_again_every_time(jwks: JwksServer, key: SigningKey) -> None:
    """An allow is kept by its exact Authorization value and reused only while the verifier
    says the token would still be accepted: once its key leaves the JWKS (refreshed) or its
    time is up, the next check decides in full and denies."""
    clock = Clock(time.time())
    settings = AuthzSettings(issuers=(IssuerSettings(ISS, jwks.url, (AUD,), allow_http=True),), result_cache_size=16)
    verifier = Verifier(jwks.url, issuer=ISS, audience=AUD, allow_http=True, result_cache_size=16, clock=clock)
    a = Authorizer(settings, verifier, clock=clock)
    token = key.sign(claims_at(clock.now, exp=int(clock.now) + 120))
    first = decide(a, token)
    assert first.status == 200 and a.reuse([f"Bearer {token}"], "GET", "/orders") is first
    clock.advance(121 + verifier.leeway)
    assert a.reuse([f"Bearer {token}"], "GET", "/orders") is None
    assert decide(a, token).reason == "expired"
    fresh = key.sign(claims_at(clock.now))
    assert decide(a, fresh).status == 200 and a.reuse([f"Bearer {fresh}"], None, None) is not None
    other = SigningKey()
    jwks.keys = [other]
    verifier.refresh()
    assert a.reuse([f"Bearer {fresh}"], None, None) is None
    assert decide(a, fresh).reason == "unknown_kid"


def test_keys_unavailable_is_503_never_allow(key: SigningKey) -> None:
    """A JWKS host that answers 500 from the start: 503 keys_unavailable with Retry-After."""
    with JwksServer([key]) as down:
        down.fail_status = 500
        d = decide(authorizer(down), key.sign(claims_at(time.time())))
    assert (d.status, d.reason) == (503, "keys_unavailable") and ("retry-after", "5") in d.headers


def test_settings_errors_are_one_line(tmp_path: Path) -> None:
    """Each wrong setting is refused with one line naming it."""
    cases = {
        "[authz]\n": "needs at least one issuer",
        '[[authz.issuers]]\nissuer = "https://a.example"\n': "needs audience",
        '[authz]\nlisten = "9191"\n[[authz.issuers]]\nissuer = "https://a.example"\naudience = "x"\n': "invalid listen",
        '[authz.headers]\nsub = "Authorization"\n[[authz.issuers]]\nissuer = "https://a.example"\naudience = "x"\n': "not a header name",
        '[authz]\nbogus = 1\n[[authz.issuers]]\nissuer = "https://a.example"\naudience = "x"\n': "unknown setting 'bogus'",
        '[[authz.issuers]]\nissuer = "https://a.example"\naudience = "x"\nalgorithms = ["HS256"]\n': "algorithm 'HS256'",
        '[[authz.rules]]\npath = "admin"\n[[authz.issuers]]\nissuer = "https://a.example"\naudience = "x"\n': "needs path",
    }
    for text, fragment in cases.items():
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=fragment) as caught:
            load_authz(env={}, config_file=str(path))
        assert "\n" not in str(caught.value)
    ok = load_authz(env={"ROTATOR_AUTHZ_ISSUER": ISS, "ROTATOR_AUTHZ_AUDIENCE": AUD, "ROTATOR_AUTHZ_WORKERS": "3"})
    assert ok.issuers[0].issuer == ISS and ok.worker_count == 3 and ok.issuers[0].jwks_url is None


# -- the process ---------------------------------------------------------------------------------

TABLES = """
[authz.headers]
sub = "X-Auth-Subject"

[[authz.rules]]
path = "/admin/"
methods = ["DELETE"]
scopes = ["{scope}"]
"""


def config(jwks: JwksServer, scope: str = "admin") -> str:
    return authz_config(jwks.url, tables=TABLES.replace("{scope}", scope))


def test_envoy_http_and_traefik_endpoints(tmp_path: Path, jwks: JwksServer, key: SigningKey) -> None:
    """Envoy's HTTP service sends the original method and the original path behind the
    prefix; Traefik's forwardAuth sends X-Forwarded-Method and X-Forwarded-Uri. Both are
    judged by the same rules, and an allow carries the claim header."""
    token = key.sign(claims_at(time.time(), scope="orders:read"))
    with Authz(tmp_path, config(jwks)) as authz:
        status, headers, _ = request(authz.port, "/envoy/admin/users?page=2", bearer(token), method="DELETE")
        assert status == 403 and 'error="insufficient_scope"' in headers["www-authenticate"]
        status, headers, _ = request(authz.port, "/envoy/admin/users", bearer(token), method="GET")
        assert status == 200 and headers["x-auth-subject"] == "user-1"
        forwarded = {"X-Forwarded-Method": "DELETE", "X-Forwarded-Uri": "/admin/users"}
        assert request(authz.port, "/auth/traefik", bearer(token, **forwarded))[0] == 403
        assert request(authz.port, "/auth/traefik", bearer(token, **{**forwarded, "X-Forwarded-Method": "GET"}))[0] == 200
        assert request(authz.port, "/auth/traefik", bearer(token))[0] == 400  # Traefik always says: a bare call is not Traefik
        assert request(authz.port, "/elsewhere", bearer(token))[0] == 404


def test_a_killed_worker_is_replaced_and_the_port_keeps_answering(tmp_path: Path, jwks: JwksServer, key: SigningKey) -> None:
    """SIGKILL one worker: the supervisor starts another, and the checks keep being answered."""
    token = key.sign(claims_at(time.time()))
    with Authz(tmp_path, config(jwks)) as authz:
        workers = authz.worker_pids()
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        replaced = wait_for(lambda: len(set(authz.worker_pids()) - set(workers)) == 1 and len(authz.worker_pids()) == 2,
                            timeout=20, what="a new worker")
        assert replaced
        wait_for(lambda: all(request(authz.port, "/envoy/orders", bearer(token))[0] == 200 for _ in range(20)),
                 timeout=20, what="every check answered 200")
        assert "exited (-9)" in authz.logs()


def test_sighup_reloads_without_a_failed_check_and_keeps_the_old_settings_when_bad(
    tmp_path: Path, jwks: JwksServer, key: SigningKey
) -> None:
    """SIGHUP after the rule's scope changed: the new generation applies it and no check in
    between fails to be answered; SIGHUP with a broken file logs one line and keeps serving
    the settings it had."""
    token = key.sign(claims_at(time.time(), scope="admin"))
    with Authz(tmp_path, config(jwks)) as authz:
        assert request(authz.port, "/envoy/admin/x", bearer(token), method="DELETE")[0] == 200
        authz.path.write_text(config(jwks, scope="superuser").replace("{port}", str(authz.port)))
        assert authz.proc is not None
        authz.proc.send_signal(signal.SIGHUP)
        statuses = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            statuses.append(request(authz.port, "/envoy/admin/x", bearer(token), method="DELETE")[0])
            if statuses[-1] == 403 and len(authz.worker_pids()) == 2:
                break
        assert set(statuses) <= {200, 403} and statuses[-1] == 403, statuses
        authz.path.write_text("[authz\n")
        authz.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in authz.logs(), timeout=10, what="the refusal logged")
        assert request(authz.port, "/envoy/admin/x", bearer(token), method="DELETE")[0] == 403
        assert authz.stop() == 0


def test_check_says_what_the_settings_mean_and_refuses_bad_ones_in_one_line(tmp_path: Path, jwks: JwksServer) -> None:
    """`rotator authz --check` reads the settings and prints what they mean, starting nothing;
    a wrong file is one line on stderr and exit code 2."""
    from click.testing import CliRunner

    from rotator.cli import main

    good = tmp_path / "good.toml"
    good.write_text(config(jwks).replace("{port}", "9191"))
    result = CliRunner().invoke(main, ["authz", "--check", "--config", str(good)], env={"ROTATOR_CONFIG": None})
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"rotator authz: 1 issuer(s) ({ISS}), 1 rule(s), 1 claim header(s), listen 127.0.0.1:9191, 2 worker(s), revocation off"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('[authz]\nworkers = "many"\n' + config(jwks).split("[authz]", 1)[1].split("workers = 2", 1)[1])
    result = CliRunner().invoke(main, ["authz", "--check", "--config", str(bad)])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "invalid workers 'many'" in result.output


def listeners(port: int) -> int:
    """How many sockets listen on ``port`` (the kernel's own table, /proc/net/tcp)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        count += state == "0A" and int(local.split(":")[1], 16) == port
    return count


def test_a_reload_while_workers_start_leaves_one_listener_per_worker_all_new(
    tmp_path: Path, jwks: JwksServer, key: SigningKey
) -> None:
    """SIGHUP while the first workers still wait for the JWKS (held by the server), then every
    worker of both generations gets it at once, in whatever order: afterwards there are as
    many listening sockets as workers, each served (no check waits unanswered), and every
    answer is the new settings' (no superseded worker left serving the old ones). Five times."""
    token = key.sign(claims_at(time.time(), scope="admin"))
    for attempt in range(5):
        hold = threading.Event()
        jwks.hold = hold
        directory = tmp_path / str(attempt)
        directory.mkdir()
        authz = Authz(directory, config(jwks)).start(wait=False)
        try:
            wait_for(lambda: jwks.in_flight >= 2, timeout=20, what="both first workers waiting for the JWKS")
            authz.path.write_text(config(jwks, scope="superuser").replace("{port}", str(authz.port)))
            assert authz.proc is not None
            authz.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: len(authz.worker_pids()) == 4, timeout=20, what="the second generation started")
            hold.set()
            wait_for(lambda: len(authz.worker_pids()) == 2 and listeners(authz.port) == 2, timeout=20,
                     what="two workers, two listeners")
            statuses = {request(authz.port, "/envoy/admin/x", bearer(token), method="DELETE", timeout=3)[0] for _ in range(60)}
            assert statuses == {403}, (attempt, statuses)
            assert listeners(authz.port) == 2
        finally:
            jwks.hold = None
            authz.stop()


def test_the_sidecar_starts_from_the_revocation_snapshot_while_redis_is_down(tmp_path: Path) -> None:
    """With revocation_snapshot set and Redis down at start, the workers start from the
    published snapshot (younger than their bound): ready, refusing the subject it revokes and
    allowing another. Without the snapshot the same start never becomes ready."""
    from rotator.revocation import RevocationStore, publish_snapshot

    from .redis_server import RedisServer

    key = SigningKey()
    redis_srv = RedisServer(tmp_path / "redis").start()
    snapshot = tmp_path / "revocations.json.gz"
    store = RevocationStore.from_url(redis_srv.url, prefix="authz:", snapshot=str(snapshot))
    store.revoke_subject("user-revoked")
    publish_snapshot(store)
    store.close()
    redis_srv.stop()
    with JwksServer([key]) as jwks:
        head = f'revocation_url = "{redis_srv.url}"\nrevocation_prefix = "authz:"\n'
        plain = authz_config(jwks.url, authz='revocation_max_staleness = "30s"')
        (tmp_path / "with").mkdir()
        (tmp_path / "without").mkdir()
        with Authz(tmp_path / "with", f'{head}revocation_snapshot = "{snapshot}"\n' + plain) as authz:
            revoked = key.sign(claims_at(time.time() - 60, sub="user-revoked"))  # issued before the cutoff
            assert request(authz.port, "/auth/nginx", bearer(revoked))[0] == 401
            assert request(authz.port, "/auth/nginx", bearer(key.sign(claims_at(time.time()))))[0] == 200
        without = Authz(tmp_path / "without", head + plain).start(wait=False)
        try:
            wait_for(lambda: f"redis at 127.0.0.1:{redis_srv.port}" in without.logs(), what="the workers' redis error")
            assert not without.ready()
        finally:
            without.stop()
