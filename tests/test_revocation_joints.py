"""Revocation where its pieces meet, against a real redis-server: a writer reads its own
write at once, two databases and two prefixes on one server stay apart, a replica merges
what it hears by the writers' rule, and the session-version rule is strict about types."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import jwt
import pytest

from rotator.issuer import Signer
from rotator.revocation import RevocationError, RevocationStore, Tables
from rotator.verifier import Verifier

from .helpers import PASSPHRASE, bootstrapped_key_set, rejected, token, wait_for
from .jwks_server import JwksServer, SigningKey
from .redis_server import RedisServer, fresh_prefix, module_redis


server = module_redis("server")


# -- isolation --------------------------------------------------------------------------------


def test_two_databases_with_one_prefix_never_hear_each_other(server: RedisServer) -> None:
    """Redis pub/sub ignores the database number. A staging logout in database 1 must not lift
    (or a staging bump void) production's records in database 0 under the same prefix."""
    prefix = fresh_prefix()
    prod = RevocationStore.from_url(server.url + "/0", prefix=prefix)
    staging = RevocationStore.from_url(server.url + "/1", prefix=prefix)
    try:
        assert prod.channel != staging.channel
        ban = prod.revoke_subject("mallory", until=time.time() + 86400)
        replica = prod.replica()
        staging.revoke_subject("mallory")  # a plain logout there, with an earlier not_before
        staging.bump_session("alice")
        staging.deny("j-staging", time.time() + 600)
        marker = prod.bump_session("marker")  # heard after anything staging could have sent
        other = RevocationStore.from_url(server.url + "/0", prefix=prefix)
        try:
            wait_for(lambda: other.replica().tables.versions.get("marker"), what="the marker in a second replica")
            for tables in (replica.tables, other.replica().tables):
                assert tables.cutoffs["mallory"].not_before == ban.not_before
                assert "alice" not in tables.versions and "j-staging" not in tables.denied
                assert tables.versions["marker"].version == marker
        finally:
            other.close()
    finally:
        prod.close()
        staging.close()


def test_a_prefix_can_never_be_the_start_of_another(server: RedisServer) -> None:
    """`a:` and `a:sub:` would share records and SCANs: nested prefixes are refused; sibling
    prefixes (`a:` and `ab:`) share nothing."""
    base = fresh_prefix()
    with pytest.raises(RevocationError, match="no prefix is the start of another"):
        RevocationStore.from_url(server.url, prefix=base + "sub:")
    with pytest.raises(RevocationError, match="no prefix is the start of another"):
        RevocationStore.from_url(server.url, prefix=base.rstrip(":"))
    a = RevocationStore.from_url(server.url, prefix=base)
    ab = RevocationStore.from_url(server.url, prefix=base[:-1] + "b:")
    try:
        ab.revoke_subject("sub:bob")
        ab.deny("x", time.time() + 600)
        a.bump_session("carol")
        assert len(a.records()) == 1 and len(ab.records()) == 2
        assert "sub:bob" not in a.replica().tables.cutoffs and "carol" not in ab.replica().tables.versions
    finally:
        a.close()
        ab.close()


def test_settings_refuse_a_nested_prefix_in_one_line() -> None:
    """Settings refuse a revocation prefix that nests another, in one line."""
    from rotator.config import load_settings
    from rotator.errors import ConfigError

    with pytest.raises(ConfigError, match="no prefix is the start of another"):
        load_settings({"revocation_url": "redis://127.0.0.1:1", "revocation_prefix": "rotator:staging:"}, env={})


# -- the writers' rule ---------------------------------------------------------------------


def test_a_replica_merges_what_it_hears_and_never_lets_an_older_record_win(server: RedisServer) -> None:
    """A change heard late, twice, or forged in the log by an older writer never shortens
    a ban, lowers a session version or shortens a denial: the later of each time wins."""
    store = RevocationStore.from_url(server.url, prefix=fresh_prefix())
    try:
        replica = store.replica()
        ban = store.revoke_subject("eve", until=time.time() + 7200)
        version = store.bump_session("eve")
        store.deny("jt", time.time() + 900)
        denied_until = replica.tables.denied["jt"]
        client = server.client()
        older = f"{ban.revoked_at - 5} {ban.revoked_at - 5} {ban.revoked_at + 100}"
        client.xadd(store.link.log, {"r": f"sub:eve\n{older}"})
        client.xadd(store.link.log, {"r": f"sv:eve\n{version - 10} {ban.revoked_at} {ban.revoked_at + 100}"})
        client.xadd(store.link.log, {"r": f"jti:jt\n{int(time.time())} {int(time.time()) + 5}"})
        store.bump_session("flush")  # heard after the three forgeries
        wait_for(lambda: replica.tables.versions.get("flush"), what="the flush marker")
        assert replica.tables.cutoffs["eve"].not_before == ban.not_before
        assert replica.tables.versions["eve"].version == version
        assert replica.tables.denied["jt"] == denied_until
    finally:
        store.close()


def test_tables_merge_in_any_order() -> None:
    """Revocation records merge to the same tables in any order."""
    records = [("sub:s", "10 10 100"), ("sub:s", "20 50 200"), ("sv:s", "5 1 100"), ("sv:s", "9 2 100"),
               ("jti:j", "100 160"), ("jti:j", "50 110")]
    results = []
    for order in (records, records[::-1], records[1::2] + records[::2]):
        t = Tables()
        for suffix, value in order:
            t.apply(suffix, value)
        results.append((t.cutoffs["s"], t.versions["s"].version, t.denied["j"]))
    assert all(r == results[0] for r in results)
    assert results[0][0].not_before == 50 and results[0][1] == 9 and results[0][2] == 160


# -- types -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sv", [True, 1.0, "7", None, [7]], ids=["true", "float", "string", "missing", "list"])
def test_a_session_version_that_is_not_an_integer_is_void(
    server: RedisServer, jwks: tuple[SigningKey, JwksServer], sv: Any
) -> None:
    """With a version in force, only an integer at least as new passes: `true` is not 1."""
    key, srv = jwks
    store = RevocationStore.from_url(server.url, prefix=fresh_prefix())
    try:
        version = store.bump_session("dave")
        v = Verifier(srv.url, allow_http=True, revocations=store)
        claims = {} if sv is None else {"sv": sv}
        assert rejected(v, token(key, "dave", **claims))
        assert v.verify(token(key, "dave", sv=version))["sub"] == "dave"
        assert v.verify(token(key, "dave", sv=version + 1))["sub"] == "dave"  # a bump not heard yet
        assert rejected(v, token(key, "dave", sv=version - 1))
    finally:
        store.close()


@pytest.fixture
def jwks() -> Iterator[tuple[SigningKey, JwksServer]]:
    key = SigningKey()
    with JwksServer([key]) as srv:
        yield key, srv


# -- read-your-writes: the password-reset flow ------------------------------------------------

VERIFIER_PROCESS = """
import sys
from rotator.revocation import RevocationStore
from rotator.verifier import Verifier, InvalidToken
url, prefix, jwks_url = sys.argv[1:4]
store = RevocationStore.from_url(url, prefix=prefix, token_lifetime=300, grace=60)
verifier = Verifier(jwks_url, allow_http=True, audience="api", revocations=store)
print("ready", flush=True)
for line in sys.stdin:
    try:
        verifier.verify(line.strip())
        print("ok", flush=True)
    except InvalidToken as e:
        print("void " + type(e).__name__ + ": " + str(e), flush=True)
"""


def test_password_reset_then_sign_in_at_once_1000_times(server: RedisServer, tmp_path: Path) -> None:
    """In one process: revoke every token of a user (or bump the session), then sign the new
    sign-in at once with a Signer on the same store; each token goes straight to a verifier
    in another process. None is void on arrival: the store's replica holds its own write
    before the write returns, and a version newer than a replica knows is current."""
    ks, pub, policy = bootstrapped_key_set(tmp_path)
    prefix = fresh_prefix()
    store = RevocationStore.from_url(server.url, prefix=prefix, token_lifetime=300, grace=60)
    with JwksServer([]) as jwks_server:
        jwks_server.body_override = (tmp_path / "pub" / "jwks.json").read_bytes()
        proc = subprocess.Popen(
            [sys.executable, "-c", VERIFIER_PROCESS, server.url, prefix, jwks_server.url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline().strip() == "ready"
            signer = Signer(ks, policy, passphrase=PASSPHRASE, publisher=pub, revocations=store, watch=False)
            void: list[str] = []
            for i in range(1000):
                user = f"user-{i % 50}"  # each user resets many times: cutoffs and versions pile up
                if i % 2:
                    store.revoke_subject(user)
                else:
                    store.bump_session(user)
                proc.stdin.write(signer.sign(subject=user, audience="api", ttl=60) + "\n")
                proc.stdin.flush()
                answer = proc.stdout.readline().strip()
                if answer != "ok":
                    void.append(f"{i} {user}: {answer}")
            print(f"\n[password reset] 1000 resets, each followed at once by a sign-in: {len(void)} void on arrival")
            assert not void, void[:5]
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=10)
            store.close()
    assert json.loads((tmp_path / "pub" / "jwks.json").read_text())["keys"]


# -- the signer's bound, and what a signer and a verifier refuse -----------------------------


def test_a_signer_whose_redis_link_stalls_refuses_within_the_bound(server: RedisServer, tmp_path: Path) -> None:
    """The Signer is a reader too: past the staleness bound the verifiers use, it refuses to
    sign (and to refresh) with the reason, instead of minting by records it cannot confirm."""
    from rotator.verifier import RevocationUnavailable

    from .faultproxy import FaultProxy

    ks, pub, policy = bootstrapped_key_set(tmp_path)
    proxy = FaultProxy("127.0.0.1", server.port)
    store = RevocationStore.from_url(f"redis://127.0.0.1:{proxy.port}", prefix=fresh_prefix(), token_lifetime=300, grace=60)
    bound = 2.0
    try:
        signer = Signer(ks, policy, passphrase=PASSPHRASE, publisher=pub, revocations=store, watch=False,
                        revocation_max_staleness=bound)
        good = signer.sign(subject="ann", audience="api", ttl=60)
        proxy.stall()
        stalled_at = time.monotonic()
        refused = wait_for(lambda: _refusal(signer), timeout=bound + 10, what="the signer to refuse")
        took = time.monotonic() - stalled_at
        print(f"\n[signer bound] Redis link stalled: signing refused after {took:.2f} s (bound {bound:g} s + the heartbeat)")
        assert isinstance(refused, RevocationUnavailable) and "has not confirmed it is current" in str(refused)
        with pytest.raises(RevocationUnavailable):
            signer.refresh(good)
        proxy.resume()
        wait_for(lambda: _refusal(signer) is None, timeout=15, what="signing again after the link is back")
    finally:
        proxy.close()
        store.close()


def _refusal(signer: Signer) -> Exception | None:
    from rotator.verifier import RevocationUnavailable

    try:
        signer.sign(subject="ann", audience="api", ttl=60)
    except RevocationUnavailable as e:
        return e
    return None


def test_types_and_session_starts_that_would_escape_a_revocation(
    server: RedisServer, jwks: tuple[SigningKey, JwksServer], tmp_path: Path
) -> None:
    """With revocation configured: a non-string sub or jti is malformed (it could never match
    a record); a session starts at the earlier of orig_iat and iat, so an orig_iat later than
    iat never lifts a token over a cutoff; the Signer mints neither."""
    key, srv = jwks
    store = RevocationStore.from_url(server.url, prefix=fresh_prefix(), token_lifetime=300, grace=60)
    try:
        v = Verifier(srv.url, allow_http=True, revocations=store)
        now = int(time.time())
        for claims in ({"sub": 123}, {"sub": ["bob"]}, {"sub": {"id": "bob"}}, {"jti": 7}, {"jti": ["a"]}):
            tok = key.sign({"iat": now, "exp": now + 60, **claims})
            with pytest.raises(Exception, match="malformed"):
                v.verify(tok)
        cutoff = store.revoke_subject("bob")
        wait_for(lambda: "bob" in v.revocations.tables.cutoffs, what="the cutoff")
        before = cutoff.not_before - 5
        sneaky = key.sign({"sub": "bob", "iat": before, "orig_iat": cutoff.not_before, "exp": now + 600})
        assert rejected(v, sneaky)
        ks, pub, policy = bootstrapped_key_set(tmp_path)
        signer = Signer(ks, policy, passphrase=PASSPHRASE, publisher=pub, watch=False)
        with pytest.raises(ValueError, match="subject must be a string"):
            signer.sign(subject=123)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="subject must be a string"):
            signer.sign({"sub": 42})
        with pytest.raises(ValueError, match="no later than iat"):
            signer.sign(subject="bob", orig_iat=int(time.time()) + 3600)
    finally:
        store.close()


def test_a_store_whose_grace_is_shorter_than_the_leeway_is_refused(server: RedisServer, jwks: tuple[SigningKey, JwksServer]) -> None:
    """As for a JtiDenylist: Redis would drop a denial while the verifier still accepts the token."""
    _, srv = jwks
    store = RevocationStore.from_url(server.url, prefix=fresh_prefix(), grace=10)
    try:
        with pytest.raises(ValueError, match="must cover the leeway"):
            Verifier(srv.url, allow_http=True, revocations=store, leeway=60)
        assert Verifier(srv.url, allow_http=True, revocations=store, leeway=10).revocations is not None
    finally:
        store.close()


def test_jtis_are_unique_and_reveal_nothing_of_the_next(tmp_path: Path) -> None:
    """A jti is the signer's counter through AES under a random key: 10,000 distinct ids, and
    consecutive ones share no prefix a client could extrapolate from."""
    ks, pub, policy = bootstrapped_key_set(tmp_path)
    signer = Signer(ks, policy, passphrase=PASSPHRASE, publisher=pub, watch=False)
    jtis = [json.loads(_b64(signer.sign(subject="x").split(".")[1]))["jti"] for _ in range(10_000)]
    assert len(set(jtis)) == len(jtis)
    shared = [os.path.commonprefix([a, b]) for a, b in zip(jtis, jtis[1:])]
    assert max(len(p) for p in shared) <= 6, "consecutive jtis look alike"


def _b64(segment: str) -> bytes:
    from rotator._b64 import b64url_decode

    return b64url_decode(segment)


# -- records outlive what they void ------------------------------------------------------------


def test_a_cutoff_lives_as_long_as_the_refresh_chains_it_voids(
    server: RedisServer, jwks: tuple[SigningKey, JwksServer]
) -> None:
    """A chain lives until orig_iat + refresh_max_age. A refresh minted by a signer that had
    not heard the cutoff yet carries iat after it and orig_iat before it: the record must
    still be there for a verifier started long after one token lifetime, until the chain ends."""
    key, srv = jwks
    prefix = fresh_prefix()
    writer = RevocationStore.from_url(server.url, prefix=prefix, token_lifetime=300, grace=60, session_lifetime=7200)
    try:
        cutoff = writer.revoke_subject("zoe")
        version = writer.bump_session("zoe")
        r = server.client()
        assert cutoff.expires_at == cutoff.not_before + 7200 + 60 + 60 == r.expiretime(prefix + "sub:zoe")  # + grace + clock margin
        assert r.ttl(prefix + "sv:zoe") > 7200  # from the server's clock, like every bump
        fresh = RevocationStore.from_url(server.url, prefix=prefix)  # a verifier started later
        try:
            v = Verifier(srv.url, allow_http=True, revocations=fresh)
            now = int(time.time())
            laundered = key.sign({"sub": "zoe", "iat": now + 1, "orig_iat": cutoff.not_before - 600,
                                  "exp": now + 300, "sv": version})
            assert rejected(v, laundered)
        finally:
            fresh.close()
    finally:
        writer.close()


def test_the_session_version_counter_refuses_to_repeat(server: RedisServer) -> None:
    """Versions come from Lua numbers (doubles): at 2^53 they would repeat, so the bump fails
    with one line instead."""
    prefix = fresh_prefix()
    store = RevocationStore.from_url(server.url, prefix=prefix)
    try:
        server.client().set(prefix + "sv-last", str(2**53 - 1))
        with pytest.raises(RevocationError, match="counter exhausted"):
            store.bump_session("x")
    finally:
        store.close()


def test_the_cli_keeps_cutoffs_for_refresh_max_age(server: RedisServer) -> None:
    """Cutoffs written by the CLI live as long as the longest refresh chain."""
    from click.testing import CliRunner

    from rotator.cli import main

    prefix = fresh_prefix()
    env = {"ROTATOR_REVOCATION_URL": server.url, "ROTATOR_REVOCATION_PREFIX": prefix}
    out = CliRunner().invoke(main, ["revoke-subject", "amy", "--refresh-max-age", "2d"], env=env)
    assert out.exit_code == 0, out.output
    listed = json.loads(CliRunner().invoke(main, ["revocations", "--json"], env=env).output)["subject_cutoffs"][0]
    assert listed["expires_at"] - listed["not_before"] == 2 * 86400 + 60 + 60  # + grace + clock margin


# -- clocks: times from Redis's clock, a writer off it refused ------------------------------------


@pytest.mark.parametrize("offset", ["-2m", "+2m"])
def test_the_cli_on_a_host_off_redis_clock_writes_nothing(server: RedisServer, offset: str) -> None:
    """`rotator revoke-subject` and `deny-token` under libfaketime two minutes off: exit 7 with
    one line naming both clocks, nothing in Redis; with the right time the same command
    writes a cutoff carrying Redis's time."""
    import shutil

    faketime = shutil.which("faketime")
    assert faketime, "faketime (Debian package faketime) is missing: scripts/test-deps.sh installs it"
    prefix = fresh_prefix()
    env = {**os.environ, "ROTATOR_REVOCATION_URL": server.url, "ROTATOR_REVOCATION_PREFIX": prefix,
           "DONT_FAKE_MONOTONIC": "1"}
    cli = [sys.executable, "-m", "rotator.cli"]
    off = subprocess.run([faketime, "-f", offset, *cli, "revoke-subject", "kim"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert off.returncode == 7 and len(off.stderr.strip().splitlines()) == 1, off.stderr
    side = "behind" if offset.startswith("-") else "ahead of"
    assert f"this host's clock is 120s {side} the clock of redis at 127.0.0.1:{server.port}" in off.stderr
    assert "nothing was written" in off.stderr
    assert list(server.client().scan_iter(match=prefix + "*")) == []
    right = subprocess.run([*cli, "revoke-subject", "kim"], env=env, capture_output=True, text=True, timeout=60)
    assert right.returncode == 0, right.stderr
    raw = server.client().get(prefix + "sub:kim")
    assert isinstance(raw, bytes)
    revoked_at = int(raw.split()[0])
    assert abs(revoked_at - server.client().time()[0]) <= 2


# -- silence: malformed records and a lost dataset are said, counted and shown ------------------


def test_malformed_records_are_logged_once_counted_and_listed(
    server: RedisServer, jwks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Records written by hand (or by another version) that this one cannot read: each is
    logged once however often the replica reloads, counted in the verifier's health and the
    replica, listed by `rotator revocations` with what is wrong, and never applied. Values
    that make no sense (a negative or zero time, times out of order) are malformed too,
    not listed as in force."""
    import logging

    from click.testing import CliRunner

    from rotator.cli import main

    key, srv = jwks
    prefix = fresh_prefix()
    r = server.client()
    bad = {
        "jti:letters": "abc def",
        "sub:negative": "-5 10 20",
        "sub:backwards": "1796000000 1795000000 1797000000",
        "sv:short": "5 6",
        "sv:zero": "0 1796000000 1797000000",
        "weird:kind": "1",
    }
    for suffix, value in bad.items():
        r.set(prefix + suffix, value)
    store = RevocationStore.from_url(server.url, prefix=prefix)
    store.revoke_subject("good")
    try:
        with caplog.at_level(logging.WARNING, logger="rotator.revocation"):
            v = Verifier(srv.url, allow_http=True, revocations=store)
            replica = v.revocations
            assert set(replica.tables.malformed) == set(bad)
            assert "negative" not in replica.tables.cutoffs and "backwards" not in replica.tables.cutoffs
            assert list(replica.tables.cutoffs) == ["good"]
            # One heard in the change log, as an older or newer writer would send it.
            r.xadd(store.link.log, {"r": "sub:heard\nnot numbers"})
            wait_for(lambda: "sub:heard" in replica.tables.malformed, what="the logged malformed record")
            # A full load (the log emptied, the connections dropped) reads them all again: no new log lines.
            loads = replica.loads
            r.xtrim(store.link.log, maxlen=0, approximate=False)
            r.client_kill_filter(_type="normal")
            wait_for(lambda: replica.loads > loads, what="a resync")
        logged = [m for m in caplog.messages if m.startswith("malformed revocation record")]
        assert len(logged) == len(bad) + 1, logged
        assert any(f"'{prefix}sub:negative'" in m and "not 3 non-negative integers" in m for m in logged)
        health = v.health()
        assert f"{len(bad)} malformed revocation record(s) skipped (see `rotator revocations`)" in health
        env = {"ROTATOR_REVOCATION_URL": server.url, "ROTATOR_REVOCATION_PREFIX": prefix}
        listed = CliRunner().invoke(main, ["revocations"], env=env)
        assert listed.exit_code == 0, listed.output
        assert f"1 subject cutoffs, 0 session versions, {len(bad)} malformed records" in listed.output
        assert "malformed  sub:backwards  times out of order" in listed.output
        as_json = json.loads(CliRunner().invoke(main, ["revocations", "--json"], env=env).output)
        assert {m["key"] for m in as_json["malformed"]} == set(bad)
        # A verify still works, and the good record still applies.
        assert rejected(v, token(key, "good", iat=int(time.time()) - 10))
    finally:
        store.close()


@pytest.mark.parametrize("appendonly", [False, True])
def test_a_redis_that_lost_its_dataset_is_said_loudly(
    tmp_path: Path, jwks: Any, caplog: pytest.LogCaptureFixture, appendonly: bool
) -> None:
    """redis-server restarted on the same port: without its data (no append-only file) the
    replica loads every record again and says every revocation was lost (an error in the log, a
    count, the verifier's health); with the append-only file the same restart is silent (a new
    run_id, but the prefix's marker came back with the data) and the replica resumes from the log."""
    import logging

    key, srv = jwks
    redis_srv = RedisServer(tmp_path / "redis", appendonly=appendonly).start()
    prefix = fresh_prefix()
    store = RevocationStore.from_url(redis_srv.url, prefix=prefix)
    try:
        v = Verifier(srv.url, allow_http=True, revocations=store)
        replica = v.revocations
        store.revoke_subject("lost")
        before = replica.run_id
        loads, resumes = replica.loads, replica.resumes
        with caplog.at_level(logging.ERROR, logger="rotator.revocation"):
            redis_srv.stop()
            redis_srv.start()
            wait_for(lambda: replica.loads + replica.resumes > loads + resumes and replica.age() < 1, timeout=15, what="the resync")
        assert replica.run_id != before
        assert (replica.resumes > resumes, replica.loads > loads) == (appendonly, not appendonly)
        lost = [m for m in caplog.messages if "lost its dataset" in m]
        if appendonly:
            assert replica.dataset_losses == 0 and lost == [] and v.health() == []
            assert "lost" in replica.tables.cutoffs
        else:
            assert replica.dataset_losses == 1 and len(lost) == 1
            assert f"run_id {before} -> {replica.run_id}" in lost[0] and "every revocation written before is gone" in lost[0]
            assert any("lost its dataset 1 time(s)" in p for p in v.health())
            assert "lost" not in replica.tables.cutoffs
    finally:
        store.close()
        redis_srv.stop()


def test_deny_claims_takes_the_verified_claims_of_the_callers_token(jwks: Any, server: RedisServer) -> None:
    """A logout endpoint denies the token it just verified, from the claims verify returned:
    that token is rejected at once and another of the same user is not; claims without a
    jti are refused with one line."""
    key, srv = jwks
    store = RevocationStore.from_url(server.url, prefix=fresh_prefix())
    try:
        v = Verifier(srv.url, allow_http=True, revocations=store)
        mine, other = token(key, "lea"), token(key, "lea")
        claims = v.verify(mine)
        assert store.deny_claims(claims) == claims["jti"]
        assert rejected(v, mine) and v.verify(other)["sub"] == "lea"
        with pytest.raises(RevocationError, match="token has no jti claim"):
            store.deny_claims({"sub": "lea", "exp": claims["exp"]})
    finally:
        store.close()


def test_a_replica_follows_redis_in_forked_workers(tmp_path: Path, jwks: Any, server: RedisServer) -> None:
    """A Verifier and a Signer made before the fork (gunicorn --preload), both already in use:
    in each forked worker the replica starts a follower of its own at the first check, so a
    revocation written in the parent after the fork reaches the workers' verifiers and
    signers within a second, as it reaches the parent's (before, the child's replica had
    no thread: it never heard of it, then failed closed past the staleness bound)."""
    key, srv = jwks
    ks, pub, policy = bootstrapped_key_set(tmp_path)
    prefix = fresh_prefix()
    store = RevocationStore.from_url(server.url, prefix=prefix)
    writer = RevocationStore.from_url(server.url, prefix=prefix)
    v = Verifier(srv.url, allow_http=True, revocations=store)
    signer = Signer(ks, policy, passphrase=PASSPHRASE, publisher=pub, revocations=store, watch=False)
    old = token(key, "pat", iat=int(time.time()) - 5)
    assert v.verify(old)["sub"] == "pat" and signer.sign(subject="pat")
    children = []
    for _ in range(2):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # a worker
            os.close(r)
            result = "timeout"
            try:
                v.verify(old)  # the first check starts this process's follower
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:  # the cutoff, then the bump (written in that order)
                    version = jwt.decode(signer.sign(subject="pat"), options={"verify_signature": False}).get("sv")
                    if rejected(v, old) and version is not None:
                        result = f"rejected sv={version}"
                        break
                    time.sleep(0.01)
            except Exception as e:  # noqa: BLE001 - reported to the parent
                result = f"error {type(e).__name__}: {e}"
            os.write(w, result.encode())
            os._exit(0)
        os.close(w)
        children.append((pid, r))
    time.sleep(0.5)  # the workers are checking
    writer.revoke_subject("pat")
    version = writer.bump_session("pat")
    try:
        for pid, r in children:
            _, status = os.waitpid(pid, 0)
            answer = os.read(r, 1000).decode()
            assert status == 0 and answer.startswith("rejected"), answer
            # The worker's signer stamps a version at least the bump's (its replica heard it, or later).
            assert int(answer.split("sv=")[1]) >= version, answer
        assert rejected(v, old)
    finally:
        store.close()
        writer.close()
