"""rotator.revocation against a real redis-server: the store, the replica, the verifier and signer
with revocations, the CLI, bad input, and faults (SIGKILL, restart, SIGSTOP, a dropping proxy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import jwt
import pytest
from click.testing import CliRunner

from rotator.cli import main
from rotator.issuer import RefreshRefused, Signer, SubjectRevoked
from rotator.revocation import RevocationError, RevocationStore, Tables
from rotator.verifier import RevocationUnavailable, Revoked, Verifier

from .faultproxy import FaultProxy
from .helpers import (
    PASSPHRASE,
    Clock,
    bootstrapped_key_set,
    rejected,
    self_signed_cert,
    token,
    wait_for,
)
from .jwks_server import JwksServer, SigningKey
from .ports import free_port
from .redis_server import RedisServer, fresh_prefix, module_redis

HERE = Path(__file__).parent


server = module_redis("server")


@pytest.fixture
def prefix() -> str:
    return fresh_prefix()


@pytest.fixture
def store(server: RedisServer, prefix: str) -> Iterator[RevocationStore]:
    s = RevocationStore.from_url(server.url, prefix=prefix, token_lifetime=3600, grace=60)
    yield s
    s.close()


@pytest.fixture(scope="module")
def jwks() -> Iterator[tuple[SigningKey, JwksServer]]:
    key = SigningKey()
    with JwksServer([key]) as srv:
        yield key, srv


def keys_under(server: RedisServer, prefix: str) -> list[bytes]:
    return sorted(server.client().scan_iter(match=prefix + "*"))





# -- the store ------------------------------------------------------------------------------------


def test_records_expire_with_the_tokens_they_affect(server: RedisServer, store: RevocationStore, prefix: str) -> None:
    """Each record carries a Redis expiry: a denial at exp + grace, a cutoff and a session
    version at the last moment a token they void can be alive (cutoff + lifetime + grace),
    each plus the clock margin (max_clock_skew, 60 s) for readers whose clocks lag."""
    r = server.client()
    exp = int(time.time()) + 300
    store.deny("j1", exp)
    assert r.expiretime(prefix + "jti:j1") == exp + 60 + 60
    cutoff = store.revoke_subject("alice")
    assert r.expiretime(prefix + "sub:alice") == cutoff.not_before + 3600 + 60 + 60 == cutoff.expires_at
    store.bump_session("bob")
    raw = r.get(prefix + "sv:bob")
    assert isinstance(raw, bytes)
    bumped = int(raw.split()[1])
    assert r.expiretime(prefix + "sv:bob") == bumped + 3600 + 60 + 60
    # A token already past exp + grace + margin needs nothing: nothing is written.
    store.deny("old", time.time() - 121)
    assert r.exists(prefix + "jti:old") == 0


def test_replica_drops_expired_records_by_its_clock(server: RedisServer, prefix: str) -> None:
    """The replica drops records past their expiry by its own clock."""
    clock = Clock(time.time())
    store = RevocationStore.from_url(server.url, prefix=prefix, token_lifetime=600, grace=60, clock=clock)
    try:
        store.deny("a", clock.now + 100)
        store.revoke_subject("alice")
        replica = store.replica()
        replica.prune_every = 0.01
        wait_for(lambda: len(replica.tables) == 2, what="two records")
        clock.advance(100 + 60 + 60 + 1)  # past exp + grace + clock margin: the denial can no longer matter; the cutoff still can
        wait_for(lambda: len(replica.tables) == 1, what="the denial dropped")
        assert list(replica.tables.cutoffs) == ["alice"]
        clock.advance(600)
        wait_for(lambda: len(replica.tables) == 0, what="the cutoff dropped")
    finally:
        store.close()


def test_a_later_ban_is_never_shortened_and_versions_never_repeat(
    server: RedisServer, store: RevocationStore, prefix: str
) -> None:
    """A later revocation never shortens a ban in force, and session versions never repeat, even
    after a record expired."""
    week = time.time() + 7 * 86400
    ban = store.revoke_subject("mallory", until=week)
    assert ban.not_before == int(week) + (week % 1 > 0)
    again = store.revoke_subject("mallory")  # a plain logout-everywhere during the ban
    assert again.not_before == ban.not_before and again.expires_at == ban.expires_at

    versions = [store.bump_session("carol") for _ in range(5)]
    assert versions == sorted(set(versions))
    assert store.session_version("carol") == versions[-1]
    server.client().delete(prefix + "sv:carol")  # as Redis does when the record expires
    assert store.session_version("carol") is None
    assert store.bump_session("carol") > versions[-1]


def test_deny_keeps_the_later_exp(server: RedisServer, store: RevocationStore, prefix: str) -> None:
    """Denying a jti twice keeps the later exp."""
    later = int(time.time()) + 500
    store.deny("j", later)
    store.deny("j", later - 100)
    assert server.client().get(prefix + "jti:j") == f"{later} {later + 60 + 60}".encode()  # grace + clock margin


# -- the verifier with revocations ------------------------------------------------------------


def test_verifier_applies_every_kind_of_record(jwks: Any, store: RevocationStore) -> None:
    """A verifier with a store rejects denied jtis, tokens before a subject cutoff and old
    session versions, each soon after the write."""
    key, srv = jwks
    v = Verifier(srv.url, allow_http=True, revocations=store)
    one, other = token(key, "alice"), token(key, "alice")
    assert v.verify(one)["sub"] == "alice"
    store.deny_token(one)
    wait_for(lambda: rejected(v, one), what="denied jti rejected")
    assert v.verify(other)["sub"] == "alice"

    before = token(key, "bob", iat=int(time.time()) - 5)
    refreshed = token(key, "bob", orig_iat=int(time.time()) - 5)  # a refresh: the chain began earlier
    cutoff = store.revoke_subject("bob")
    wait_for(lambda: rejected(v, before), what="cutoff applied")
    assert rejected(v, refreshed)
    after = token(key, "bob", iat=cutoff.not_before)
    assert v.verify(after)["sub"] == "bob"

    ban = token(key, "eve", iat=int(time.time()) + 1)
    store.revoke_subject("eve", until=time.time() + 3600)
    wait_for(lambda: rejected(v, ban), what="ban applied to tokens issued during it")

    version = store.bump_session("carol")
    unversioned, old = token(key, "carol"), token(key, "carol", sv=version - 1)
    current = token(key, "carol", sv=version)
    wait_for(lambda: rejected(v, unversioned), what="bump applied")
    assert rejected(v, old)
    assert v.verify(current)["sv"] == version


def test_result_cache_hits_are_checked_against_the_replica(jwks: Any, store: RevocationStore) -> None:
    """A token served from the result cache is still rejected once revoked."""
    key, srv = jwks
    v = Verifier(srv.url, allow_http=True, revocations=store, result_cache_size=100)
    tok = token(key, "dave")
    v.verify(tok)
    v.verify(tok)  # now a cache hit
    store.deny_token(tok)
    wait_for(lambda: rejected(v, tok), what="cached token rejected")


def test_classic_example_one_write_revokes_a_thousand_tokens(jwks: Any, store: RevocationStore) -> None:
    """1,000 live tokens, one cutoff; 500 new tokens, 10 denied one by one: 11 records, not 1,010."""
    key, srv = jwks
    v = Verifier(srv.url, allow_http=True, revocations=store)
    now = int(time.time())
    old = [token(key, "frank", iat=now - 10) for _ in range(1000)]
    assert all(v.verify(t) for t in old)
    cutoff = store.revoke_subject("frank")
    new = [token(key, "frank", iat=cutoff.not_before) for _ in range(500)]
    for t in new[:10]:
        store.deny_token(t)
    replica = v.revocations
    wait_for(lambda: len(replica.tables) == 11, what="11 records")
    assert len(replica.tables.cutoffs) == 1 and len(replica.tables.denied) == 10
    assert sum(rejected(v, t) for t in old) == 1000
    assert sum(rejected(v, t) for t in new) == 10
    assert len(store.records()) == 11


def test_no_redis_command_while_verifying(server: RedisServer, jwks: Any, prefix: str) -> None:
    """10,000 verifies, counted on the server with INFO commandstats: zero commands. (The
    heartbeat is set longer than the run so its PINGs do not blur the count.)"""
    key, srv = jwks
    store = RevocationStore.from_url(server.url, prefix=prefix)
    try:
        for i in range(100):
            store.deny(f"d{i}", time.time() + 600)
            store.revoke_subject(f"s{i}")
        replica = store.replica(heartbeat=60)
        v = Verifier(srv.url, allow_http=True, revocations=replica)
        tokens = [token(key, f"user{i % 50}") for i in range(100)]
        v.verify(tokens[0])
        time.sleep(0.2)  # let the replica's first PING be answered before counting
        before = server.commands()
        for i in range(10_000):
            v.verify(tokens[i % 100])
        after = server.commands()
        assert {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)} == {"info": 1}
    finally:
        store.close()


def test_signer_stamps_the_session_version_and_respects_a_fresh_cutoff(
    tmp_path: Path, server: RedisServer, prefix: str
) -> None:
    """A Signer on the store stamps the current session version and signs tokens that survive a
    cutoff written just before."""
    ks, pub, policy = bootstrapped_key_set(tmp_path)
    store = RevocationStore.from_url(server.url, prefix=prefix, token_lifetime=300, grace=60)
    try:
        signer = Signer(ks, policy, passphrase=PASSPHRASE, publisher=pub, revocations=store, watch=False)
        with JwksServer([]) as jwks_server:
            jwks_server.body_override = (tmp_path / "pub" / "jwks.json").read_bytes()
            v = Verifier(jwks_server.url, allow_http=True, revocations=store)
            plain = signer.sign(subject="gina")
            version = store.bump_session("gina")
            wait_for(lambda: rejected(v, plain), what="bump applied")
            stamped = signer.sign(subject="gina")
            assert v.verify(stamped)["sv"] == version
            with pytest.raises(RefreshRefused, match="session version"):
                signer.refresh(plain)
            assert v.verify(signer.refresh(stamped))["sv"] == version

            store.revoke_subject("gina")  # logout everywhere, then sign in again at once
            wait_for(lambda: rejected(v, stamped), what="cutoff applied")
            fresh = signer.sign(subject="gina")
            assert v.verify(fresh)["sub"] == "gina"
            with pytest.raises(RefreshRefused, match="revoked"):
                signer.refresh(stamped)

            # Tokens every verifier would reject are refused at the signer, with the reason.
            cutoff = store.revoke_subject("gina")
            wait_for(lambda: signer.sessions.replica.tables.cutoffs["gina"] == cutoff, what="cutoff replicated")
            with pytest.raises(SubjectRevoked, match="issued before its cutoff"):
                signer.sign(subject="gina", orig_iat=cutoff.not_before - 60)  # a revoked chain continued
            with pytest.raises(SubjectRevoked, match=r"session version \(sv\) is no longer current"):
                signer.sign({"sv": version - 1}, subject="gina")  # a stale version carried over by the caller
            until = time.time() + 3600
            ban = store.revoke_subject("gina", until=until)
            wait_for(lambda: signer.sessions.replica.tables.cutoffs["gina"] == ban, what="ban replicated")
            with pytest.raises(SubjectRevoked, match=r"^subject 'gina' is banned until \d{4}-\d\d-\d\dT.*Z: a token "
                                                     "signed now would be rejected by every verifier$"):
                signer.sign(subject="gina")
            assert v.verify(signer.sign(subject="henry"))["sub"] == "henry"  # others are unaffected
    finally:
        store.close()


def test_a_writer_within_the_skew_writes_by_redis_time_and_the_signer_signs_at_once(
    tmp_path: Path, server: RedisServer, prefix: str
) -> None:
    """A logout written by a host whose clock runs 30 s ahead (within max_clock_skew): the
    cutoff carries Redis's time, not the writer's, so a sign-in on a host with the right
    time right after it is valid (it was void for 30 s when the writer's clock set it)."""
    ks, pub, policy = bootstrapped_key_set(tmp_path)
    ahead = RevocationStore.from_url(server.url, prefix=prefix, token_lifetime=300, grace=60,
                                     clock=lambda: time.time() + 30)
    reader = RevocationStore.from_url(server.url, prefix=prefix, token_lifetime=300, grace=60)
    try:
        signer = Signer(ks, policy, passphrase=PASSPHRASE, publisher=pub, revocations=reader, watch=False)
        cutoff = ahead.revoke_subject("ivy")
        seconds, _ = server.client().time()
        assert seconds <= cutoff.revoked_at <= seconds + 2, "the cutoff took the writer's clock, not Redis's"
        wait_for(lambda: "ivy" in signer.sessions.replica.tables.cutoffs, what="cutoff replicated")
        claims = jwt.decode(signer.sign(subject="ivy"), options={"verify_signature": False})
        assert claims["iat"] >= cutoff.not_before
    finally:
        ahead.close()
        reader.close()


@pytest.mark.parametrize("off", [+120.0, -120.0])
def test_a_writer_off_redis_clock_is_refused(server: RedisServer, prefix: str, off: float) -> None:
    """A host two minutes off Redis's clock (beyond max_clock_skew, 60 s) writes nothing:
    slow, its password reset would have left tokens minted just before it alive; fast, its
    denial of a token still valid would have been skipped as expired. The same rule and
    words as a rotating step and a signer."""
    writer = RevocationStore.from_url(server.url, prefix=prefix, clock=lambda: time.time() + off)
    try:
        for write in (lambda: writer.revoke_subject("jim"), lambda: writer.deny("j-1", time.time() + 30)):
            with pytest.raises(RevocationError) as info:
                write()
            message = str(info.value)
            assert f"this host's clock is 120s {'ahead of' if off > 0 else 'behind'} the clock of redis at 127.0.0.1:" in message
            assert message.endswith("(tolerance 60s): fix its time (NTP); nothing was written")
        assert keys_under(server, prefix) == []
    finally:
        writer.close()


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: s.deny(7, time.time() + 60), "jti must be a string, got int"),
        (lambda s: s.deny("", time.time() + 60), "jti is empty"),
        (lambda s: s.deny("x" * 257, time.time() + 60), "jti is 257 characters long; the limit is 256"),
        (lambda s: s.deny("a\nb", time.time() + 60), "contains a control character"),
        (lambda s: s.deny("j", "tomorrow"), "exp must be a number of seconds since the epoch"),
        (lambda s: s.deny("j", time.time() + 400 * 86400), "is more than 366 days ahead"),
        (lambda s: s.revoke_subject("bob", until=time.time() + 400 * 86400), "until .* is more than 366 days ahead"),
        (lambda s: s.revoke_subject(""), "subject is empty"),
        (lambda s: s.revoke_subject(None), "subject must be a string, got NoneType"),
        (lambda s: s.bump_session(""), "subject is empty"),
        (lambda s: s.deny_token("not-a-token"), "token does not parse: token has 1 parts, expected 3"),
        (lambda s: s.deny_token("a.!!!.c"), "token does not parse"),
        (lambda s: s.deny_token(SigningKey().sign({"sub": "x", "exp": 1})), "token has no jti claim"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    server: RedisServer, store: RevocationStore, prefix: str, call: Any, message: str
) -> None:
    """Bad input to the store is one line naming what is wrong, and nothing reaches Redis."""
    with pytest.raises(RevocationError, match=message) as info:
        call(store)
    assert "\n" not in str(info.value)
    assert keys_under(server, prefix) == []


def test_bad_url_wrong_password_and_unreachable_redis(tmp_path: Path) -> None:
    """A bad URL, a wrong password and an unreachable Redis are each one line, the password
    never shown."""
    with pytest.raises(RevocationError, match=r"scheme http:// is not supported: use redis://, rediss:// \(TLS\) or redis\+sentinel://"):
        RevocationStore.from_url("http://127.0.0.1:6379")
    with pytest.raises(RevocationError, match="names no host"):
        RevocationStore.from_url("redis://")

    secured = RedisServer(tmp_path / "pw", password="s3cret-pass").start()
    try:
        pwfile = tmp_path / "pwfile"
        pwfile.write_text("wrong\n")
        pwfile.chmod(0o600)
        with pytest.raises(RevocationError, match=rf"redis at 127.0.0.1:{secured.port} refused the password \(from password file {pwfile}\)$"):
            RevocationStore.from_url(secured.url, password_file=str(pwfile))
        pwfile.write_text("s3cret-pass\n")
        RevocationStore.from_url(secured.url, password_file=str(pwfile)).close()
    finally:
        secured.stop()

    closed = free_port()
    started = time.monotonic()
    with pytest.raises(RevocationError, match=rf"redis at 127.0.0.1:{closed}: .*refused") as info:
        RevocationStore.from_url(f"redis://127.0.0.1:{closed}")
    assert time.monotonic() - started < 5 and "\n" not in str(info.value)


def test_verifier_with_unreachable_redis_fails_at_start(jwks: Any, server: RedisServer) -> None:
    """A store made without the check, then the Redis goes away: the replica's first load is an error."""
    key, srv = jwks
    doomed = RedisServer(server.dir / "doomed").start()
    store = RevocationStore.from_url(doomed.url)
    doomed.stop()
    with pytest.raises(RevocationError, match=rf"redis at 127.0.0.1:{doomed.port}"):
        Verifier(srv.url, allow_http=True, revocations=store)


# -- the CLI --------------------------------------------------------------------------------------


def test_cli_revocation_commands(server: RedisServer, prefix: str, tmp_path: Path) -> None:
    """deny-token, revoke-subject, bump-session and revocations do what they say through a real
    Redis."""
    env = {"ROTATOR_REVOCATION_URL": server.url, "ROTATOR_REVOCATION_PREFIX": prefix}
    runner = CliRunner()
    key = SigningKey()
    tok = token(key, "henry", jti="cli-jti")

    out = runner.invoke(main, ["deny-token", "-"], input=tok + "\n", env=env)
    assert out.exit_code == 0, out.output
    assert "denied: jti 'cli-jti'" in out.output
    out = runner.invoke(main, ["deny-token", "--jti", "other", "--exp", "10m"], env=env)
    assert out.exit_code == 0, out.output
    out = runner.invoke(main, ["revoke-subject", "henry"], env=env)
    assert out.exit_code == 0 and "every token of 'henry' issued before" in out.output
    out = runner.invoke(main, ["revoke-subject", "ivan", "--until", "2d"], env=env)
    assert out.exit_code == 0, out.output
    out = runner.invoke(main, ["bump-session", "judy"], env=env)
    assert out.exit_code == 0 and int(out.output) > 0

    out = runner.invoke(main, ["revocations", "--json"], env=env)
    listed = json.loads(out.output)
    assert [d["jti"] for d in listed["denied_jtis"]] == ["cli-jti", "other"]
    assert [c["subject"] for c in listed["subject_cutoffs"]] == ["henry", "ivan"]
    ivan = listed["subject_cutoffs"][1]
    assert ivan["not_before"] - ivan["revoked_at"] == pytest.approx(2 * 86400, abs=2)
    assert [v["subject"] for v in listed["session_versions"]] == ["judy"]
    out = runner.invoke(main, ["revocations"], env=env)
    assert out.output.startswith("2 denied jtis, 2 subject cutoffs, 1 session versions\n")

    # The flag wins over the environment (precedence as everywhere).
    other = f"o{prefix}"  # a sibling prefix (one can never be the start of another)
    out = runner.invoke(main, ["revocations", "--revocation-prefix", other], env=env)
    assert out.output.startswith("0 denied jtis")


@pytest.mark.parametrize(
    "args, env_extra, message, code",
    [
        (["deny-token"], {}, "give TOKEN, or --jti with --exp", 2),
        (["deny-token", "--jti", "x"], {}, "--jti needs --exp", 2),
        (["deny-token", "not.a.token"], {}, "token does not parse", 2),
        (["deny-token", "--jti", "x", "--exp", "soon"], {}, "--exp 'soon' is neither", 2),
        (["deny-token", "--jti", "x", "--exp", "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660"], {},
         "use ASCII digits", 2),
        (["revoke-subject", "bob", "--until", "\uff12d"], {}, "use ASCII digits", 2),
        (["revoke-subject", ""], {}, "subject is empty", 2),
        (["revoke-subject", "bob", "--until", "400d"], {}, "more than 366 days ahead", 2),
        (["revocations"], {"ROTATOR_REVOCATION_URL": "http://127.0.0.1:1"}, "scheme http:// is not supported", 2),
        (["revocations"], {"ROTATOR_REVOCATION_URL": ""}, "revocation_url is not set", 2),
    ],
)
def test_cli_bad_input(server: RedisServer, prefix: str, args: list[str], env_extra: dict[str, str], message: str, code: int) -> None:
    """Bad arguments are usage errors (exit 2, one line), as in every other verb; exit 7 is
    kept for a store that cannot be reached. Digits of other scripts are not a time."""
    env = {"ROTATOR_REVOCATION_URL": server.url, "ROTATOR_REVOCATION_PREFIX": prefix, **env_extra}
    out = CliRunner().invoke(main, args, env=env)
    assert out.exit_code == code, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.output
    assert keys_under(server, prefix) == []


def test_cli_denying_an_expired_token_says_so_and_writes_nothing(server: RedisServer, prefix: str) -> None:
    """A token past exp + grace is already rejected everywhere: the CLI says nothing was
    written instead of printing "denied"."""
    env = {"ROTATOR_REVOCATION_URL": server.url, "ROTATOR_REVOCATION_PREFIX": prefix}
    old = token(SigningKey(), "kim", jti="long-gone", iat=int(time.time()) - 7200)  # exp an hour ago
    out = CliRunner().invoke(main, ["deny-token", old], env=env)
    assert out.exit_code == 0, out.output
    assert out.output.startswith("not denied: jti 'long-gone' expired at") and "nothing written" in out.output
    assert keys_under(server, prefix) == []
    out = CliRunner().invoke(main, ["deny-token", "--jti", "gone-too", "--exp", str(int(time.time()) - 3600)], env=env)
    assert out.output.startswith("not denied: jti 'gone-too'") and keys_under(server, prefix) == []


def test_cli_listing_escapes_invisible_characters(server: RedisServer, prefix: str) -> None:
    """A subject carrying a direction override (U+202E) is listed escaped, so it cannot make
    one subject's line read as another's."""
    env = {"ROTATOR_REVOCATION_URL": server.url, "ROTATOR_REVOCATION_PREFIX": prefix}
    tricky = "admin\u202egnp.exe"
    assert CliRunner().invoke(main, ["revoke-subject", tricky], env=env).exit_code == 0
    listing = CliRunner().invoke(main, ["revocations"], env=env).output
    assert "\u202e" not in listing and "'admin\\u202egnp.exe'" in listing, listing


# -- faults ---------------------------------------------------------------------------------------


class Prober:
    """Verifies one token in a loop on its own thread, recording each call's duration and outcome."""

    def __init__(self, verifier: Verifier, tok: str) -> None:
        self.verifier, self.token = verifier, tok
        self.longest = 0.0
        self.calls = 0
        self.unavailable_at: float | None = None
        self.last: str = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                self.verifier.verify(self.token)
                outcome = "ok"
            except RevocationUnavailable:
                outcome = "unavailable"
            except Revoked:
                outcome = "revoked"
            took = time.perf_counter() - started
            self.longest = max(self.longest, took)
            self.calls += 1
            if outcome == "unavailable" and self.unavailable_at is None:
                self.unavailable_at = time.monotonic()
            self.last = outcome
            time.sleep(0.001)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


BOUND = 2.0
REDIS_TIMEOUT = 1.0  # the stores' socket timeouts in the fault tests


@pytest.mark.parametrize("fault", ["kill", "sigstop", "proxy-drop"])
def test_outage_verifies_until_the_bound_then_unavailable(tmp_path: Path, jwks: Any, fault: str) -> None:
    """During a Redis outage the verifier keeps verifying until the staleness bound, then
    answers RevocationUnavailable, and recovers after."""
    key, srv = jwks
    redis_srv = RedisServer(tmp_path / "redis").start()
    proxy = FaultProxy("127.0.0.1", redis_srv.port) if fault == "proxy-drop" else None
    url = f"redis://127.0.0.1:{proxy.port}/0" if proxy else redis_srv.url
    store = RevocationStore.from_url(url, timeout=REDIS_TIMEOUT, connect_timeout=REDIS_TIMEOUT)
    try:
        store.replica(heartbeat=0.2)
        v = Verifier(srv.url, allow_http=True, revocations=store, revocation_max_staleness=BOUND)
        prober = Prober(v, token(key, "kate"))
        wait_for(lambda: prober.calls > 50, what="verifies running")
        began = time.monotonic()
        if fault == "kill":
            redis_srv.kill()
        elif fault == "sigstop":
            redis_srv.pause()
        else:
            assert proxy is not None
            proxy.drop()
        time.sleep(BOUND * 0.6)
        assert prober.last == "ok"  # verifies go on with the records held, up to the bound
        wait_for(lambda: prober.unavailable_at, timeout=BOUND + 3, what="RevocationUnavailable")
        assert prober.unavailable_at is not None
        assert prober.unavailable_at - began <= BOUND + 1.0
        with pytest.raises(RevocationUnavailable, match=r"not confirmed current for .* \(bound 2s\)"):
            v.verify(token(key, "kate"))

        # Back: the replica reconnects, resynchronises, and verifies succeed again.
        if fault == "kill":
            redis_srv.start()
        elif fault == "sigstop":
            redis_srv.resume()
        else:
            assert proxy is not None
            proxy.drop(False)
        wait_for(lambda: prober.last == "ok", timeout=15, what="verifies succeed again")
        prober.stop()
        print(f"[{fault}] RevocationUnavailable {prober.unavailable_at - began:.2f}s after the fault (bound {BOUND}s); "
              f"longest of {prober.calls} verifies {prober.longest * 1000:.2f} ms")
        # A verify that waited on Redis would take the store's socket timeout (1 s); one that
        # reads the replica takes microseconds, whatever else loads the machine.
        assert prober.longest < REDIS_TIMEOUT / 10, f"a verify blocked for {prober.longest * 1000:.1f} ms"
    finally:
        store.close()
        if proxy:
            proxy.close()
        redis_srv.stop()


def test_restart_with_appendonly_resumes_and_applies_what_was_written_meanwhile(tmp_path: Path, jwks: Any) -> None:
    """After a Redis restart (appendonly) the replica resumes from the change log, without
    loading every record again, and applies what was written while it was away."""
    key, srv = jwks
    redis_srv = RedisServer(tmp_path / "redis", appendonly=True).start()
    store = RevocationStore.from_url(redis_srv.url, timeout=REDIS_TIMEOUT, connect_timeout=REDIS_TIMEOUT)
    try:
        replica = store.replica(heartbeat=0.2)
        v = Verifier(srv.url, allow_http=True, revocations=store, revocation_max_staleness=BOUND)
        before, during = token(key, "liam"), token(key, "mia")
        store.deny_token(before)
        wait_for(lambda: rejected(v, before), what="first denial")
        prober = Prober(v, token(key, "noah"))
        loads, resumes = replica.loads, replica.resumes
        redis_srv.kill()
        redis_srv.start()  # same port and directory: the append-only file brings the denial back
        # Written while the replica is still away (its reconnect backs off), or just after.
        writer = RevocationStore.from_url(redis_srv.url)
        writer.deny_token(during)
        writer.close()
        wait_for(lambda: replica.resumes > resumes, timeout=10, what="a resume from the log")
        wait_for(lambda: rejected(v, before) and rejected(v, during), timeout=5, what="both denials after the restart")
        assert replica.loads == loads, "the replica loaded every record again instead of resuming"
        prober.stop()
        # A verify that waited on Redis would take the store's socket timeout (1 s); one that
        # reads the replica takes microseconds, whatever else loads the machine.
        assert prober.longest < REDIS_TIMEOUT / 10, f"a verify blocked for {prober.longest * 1000:.1f} ms"
    finally:
        store.close()
        redis_srv.stop()


def test_fail_open_is_logged_once_per_outage(tmp_path: Path, jwks: Any, caplog: pytest.LogCaptureFixture) -> None:
    """With fail_open, an outage is logged once, tokens are checked against the records held,
    and recovery is logged."""
    key, srv = jwks
    redis_srv = RedisServer(tmp_path / "redis").start()
    store = RevocationStore.from_url(redis_srv.url, timeout=0.5, connect_timeout=0.5)
    try:
        store.replica(heartbeat=0.1)
        v = Verifier(srv.url, allow_http=True, revocations=store, revocation_max_staleness=0.5, revocation_fail_open=True)
        denied = token(key, "olga")
        store.deny_token(denied)
        wait_for(lambda: rejected(v, denied), what="denial")
        redis_srv.kill()
        time.sleep(1.0)
        tok = token(key, "olga")
        with caplog.at_level("WARNING", logger="rotator.revocation"):
            for _ in range(100):
                assert v.verify(tok)["sub"] == "olga"
            assert rejected(v, denied)  # the records held still apply
        opened = [r for r in caplog.records if "fail_open is set" in r.getMessage()]
        assert len(opened) == 1
    finally:
        store.close()
        redis_srv.stop()


# -- propagation across processes ----------------------------------------------------------------


def test_propagation_to_two_verifier_processes(tmp_path: Path, server: RedisServer, jwks: Any, prefix: str) -> None:
    """A writer process and two verifier processes; 200 revocations (denials, cutoffs, bumps).
    Latency: from the write returning to each verifier rejecting the token it voids."""
    key, srv = jwks
    n = 200
    now = int(time.time())
    plan = []
    for i in range(n):
        kind = ("deny", "cutoff", "bump")[i % 3]
        plan.append({"kind": kind, "sub": f"p{i}", "jti": f"pj{i}", "token": token(key, f"p{i}", jti=f"pj{i}", iat=now - 2)})
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    proc = [sys.executable, str(HERE / "revocation_proc.py")]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    verifiers = [
        subprocess.Popen(
            [*proc, "verify", server.url, prefix, srv.url, str(tmp_path / "plan.json"), str(tmp_path / f"v{k}.json")],
            env=env, stdout=subprocess.PIPE, text=True,
        )
        for k in range(2)
    ]
    try:
        for p in verifiers:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        subprocess.run(
            [*proc, "write", server.url, prefix, "", str(tmp_path / "plan.json"), str(tmp_path / "w.json")],
            env=env, check=True, timeout=120,
        )
        for p in verifiers:
            assert p.wait(timeout=120) == 0
    finally:
        for p in verifiers:
            p.kill()
    written = json.loads((tmp_path / "w.json").read_text())
    delays = []
    for k in range(2):
        seen = json.loads((tmp_path / f"v{k}.json").read_text())
        delays += [max(0.0, seen[i] - written[i]) for i in range(n)]
    delays.sort()
    p50, p99 = delays[len(delays) // 2], delays[int(len(delays) * 0.99) - 1]
    print(f"propagation over {n} revocations x 2 verifiers: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, max {delays[-1] * 1000:.2f} ms")
    assert p99 < 1.0 and p50 < 0.050


# -- scale -----------------------------------------------------------------------------------------


def test_replica_loads_100k_denials_and_100k_cutoffs(server: RedisServer, prefix: str, jwks: Any) -> None:
    """The records go in through a pipeline of the store's own scripts; the figures (load time,
    memory) are printed here and measured against the target in bench/revocation_bench.py."""
    from bench.revocation_bench import fill, replica_figures

    store = RevocationStore.from_url(server.url, prefix=prefix)
    try:
        fill(store, 100_000, 100_000)
        seconds, megabytes, replica = replica_figures(store)
        print(f"replica load: 200,000 records in {seconds:.2f} s, {megabytes:.1f} MB")
        assert len(replica.tables.denied) == 100_000 and len(replica.tables.cutoffs) == 100_000
        key, srv = jwks
        v = Verifier(srv.url, allow_http=True, revocations=replica)
        # Times from the record itself, not from the clock after a long fill: a token whose
        # session started a second before the cutoff, and one that started at it.
        cutoff = replica.tables.cutoffs["user99999"]
        assert rejected(v, token(key, "user99999", iat=cutoff.not_before - 1))
        assert v.verify(token(key, "user99999", iat=cutoff.not_before))["sub"] == "user99999"
        assert rejected(v, token(key, "someone", jti="deny-4242"))
        assert v.verify(token(key, "someone"))["sub"] == "someone"
    finally:
        server.client().flushdb()
        store.close()


def test_tables_apply_ignores_what_it_does_not_know() -> None:
    """The tables ignore unknown record kinds and malformed values instead of failing."""
    t = Tables()
    t.apply("jti:a", "10 20")
    t.apply("jti:b", "garbage")
    t.apply("zzz:c", "1 2 3")
    t.apply("sub:x", "1 2")
    assert list(t.denied) == ["a"] and len(t) == 1
    t.apply("jti:a", None)
    assert len(t) == 0


def test_revocation_unavailable_is_a_503_in_the_service_glue() -> None:
    """In the ASGI/WSGI glue, RevocationUnavailable is a 503 with Retry-After and Revoked is a
    401."""
    from rotator.verifier.bearer import denial_for

    denial = denial_for(RevocationUnavailable("not confirmed current"), "api", 5)
    assert denial.status == 503 and ("retry-after", "5") in denial.headers
    assert denial_for(Revoked("jti"), "api", 5).status == 401


def test_rediss_with_tls(tmp_path: Path, jwks: Any) -> None:
    """rediss:// to a TLS-only redis-server, trusting its certificate through the URL's ssl_ca_certs."""

    key, srv = jwks
    tls_server = RedisServer(tmp_path / "tls", tls=self_signed_cert(tmp_path)).start()
    try:
        assert tls_server.url.startswith("rediss://")
        store = RevocationStore.from_url(tls_server.url)
        v = Verifier(srv.url, allow_http=True, revocations=store)
        tok = token(key, "tls-user")
        store.deny_token(tok)
        wait_for(lambda: rejected(v, tok), what="denial over TLS")
        store.close()
        # Plain redis:// to the TLS port: one line, no hang.
        with pytest.raises(RevocationError, match=rf"redis at 127.0.0.1:{tls_server.port}: ") as info:
            RevocationStore.from_url(f"redis://127.0.0.1:{tls_server.port}/0", timeout=1.0)
        assert "\n" not in str(info.value)
    finally:
        tls_server.stop()
