"""The change log and the snapshot: a replica that reconnects resumes from the last entry it
applied, and one that starts cold loads the published snapshot, so Redis serves it the
changes since, not every record. Against a real redis-server (and SeaweedFS for S3)."""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from rotator.cli import main
from rotator.revocation import RevocationError, RevocationStore, SnapshotTarget, publish_snapshot
from rotator.verifier import Verifier
from rotator.revocation._redis import entries_of

from .helpers import rejected, token, wait_for
from .jwks_server import JwksServer, SigningKey
from .redis_server import RedisServer, fresh_prefix, module_redis


server = module_redis("server")


def _full_load_commands(server: RedisServer) -> int:
    """SCAN and MGET calls since the last reset: what a full load costs Redis."""
    calls = server.commands()
    return calls.get("scan", 0) + calls.get("mget", 0)


def _drop_connections(server: RedisServer) -> None:
    server.client().client_kill_filter(_type="normal")


def test_a_reconnect_resumes_from_the_log_and_loads_only_when_the_log_lost_its_place(server: RedisServer) -> None:
    """A replica whose connections drop catches up from the log: the write made while it was
    away applies, and Redis runs no SCAN or MGET for it. When the log no longer holds its
    place (trimmed past it, as after a long outage or a failover to a server that never had
    it), it loads every record instead, and still applies what was written."""
    prefix = fresh_prefix()
    store = RevocationStore.from_url(server.url, prefix=prefix, spread=0.2)
    writer = RevocationStore.from_url(server.url, prefix=prefix)
    try:
        replica = store.replica(heartbeat=0.2)
        for i in range(50):
            writer.deny(f"before-{i}", time.time() + 600)
        wait_for(lambda: "before-49" in replica.tables.denied, what="the first writes")
        loads, resumes = replica.loads, replica.resumes
        server.reset_stats()
        _drop_connections(server)
        writer.deny("while-away", time.time() + 600)
        wait_for(lambda: replica.resumes > resumes and "while-away" in replica.tables.denied, what="a resume")
        assert replica.loads == loads and _full_load_commands(server) == 0
        assert replica.tables.denied.keys() >= {f"before-{i}" for i in range(50)}

        server.client().xtrim(store.link.log, maxlen=0, approximate=False)  # the log forgets the replica's place
        _drop_connections(server)
        writer.deny("after-trim", time.time() + 600)
        wait_for(lambda: replica.loads > loads and "after-trim" in replica.tables.denied, what="a full load")
        assert _full_load_commands(server) > 0
        assert len(replica.tables.denied) == 52
    finally:
        store.close()
        writer.close()


def test_the_log_keeps_entries_for_its_retention_by_the_servers_clock(server: RedisServer) -> None:
    """Entries older than log_retention are trimmed as new ones are written (entry ids are the
    server's milliseconds), so the log's size follows the write rate, not the records. The
    trim is Redis's approximate one (whole nodes of the stream), so some old entries may stay;
    none within the retention goes."""
    prefix = fresh_prefix()
    store = RevocationStore.from_url(server.url, prefix=prefix, log_retention=600)
    try:
        client = server.client()
        hour_ago = (int(time.time()) - 3600) * 1000
        for i in range(1000):  # entries stamped an hour ago, as writes then would have left them
            client.xadd(store.link.log, {"r": f"jti:old-{i}\n1 2"}, id=f"{hour_ago}-{i + 1}")
        recent = client.xadd(store.link.log, {"r": "jti:recent\n1 2"})
        store.deny("fresh", time.time() + 600)
        kept = [change.split("\n")[0] for _, change in entries_of([[store.link.log, client.xrange(store.link.log)]])]
        assert kept[-2:] == ["jti:recent", "jti:fresh"]
        assert len(kept) - 2 < 200, f"{len(kept) - 2} of 1000 entries older than the retention were kept"
        assert client.xrange(store.link.log, min=recent, max=recent)
    finally:
        store.close()


def _snapshot_store(server: RedisServer, prefix: str, location: str, **kwargs: object) -> RevocationStore:
    return RevocationStore.from_url(server.url, prefix=prefix, snapshot=location, **kwargs)  # type: ignore[arg-type]


def test_a_replica_starts_from_the_snapshot_and_catches_up_from_the_log(server: RedisServer, tmp_path: Path) -> None:
    """A replica with a published snapshot loads it and reads only the changes written since
    from Redis (no SCAN, no MGET); the snapshot file is not world-readable."""
    prefix = fresh_prefix()
    location = str(tmp_path / "snapshots" / "revocations.json.gz")
    (tmp_path / "snapshots").mkdir()
    writer = _snapshot_store(server, prefix, location)
    try:
        for i in range(2000):
            writer.deny(f"j{i}", time.time() + 600)
        cut = writer.revoke_subject("mallory")
        assert publish_snapshot(writer)[0] == 2001
        assert stat.S_IMODE(os.stat(location).st_mode) == 0o640
        version = writer.bump_session("after-the-snapshot")
        server.reset_stats()
        reader = _snapshot_store(server, prefix, location)
        try:
            replica = reader.replica()
            assert (replica.snapshot_loads, replica.loads) == (1, 0)
            assert _full_load_commands(server) == 0
            assert len(replica.tables.denied) == 2000 and replica.tables.cutoffs["mallory"] == cut
            assert replica.tables.versions["after-the-snapshot"].version == version
            assert replica.age() < 5
        finally:
            reader.close()
    finally:
        writer.close()


@pytest.mark.parametrize("case", ["another-prefix", "older-than-the-log", "damaged", "missing", "tampered"])
def test_a_snapshot_that_cannot_be_trusted_is_not_used(
    server: RedisServer, tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot of another prefix, one older than the log holds, a damaged file, no file at
    all, and one rewritten by whoever can write the file (a revocation dropped, everything else
    kept): each is said in one warning line, and the replica loads every record from Redis."""
    prefix = fresh_prefix()
    location = str(tmp_path / "revocations.json.gz")
    writer = _snapshot_store(server, prefix, location)
    try:
        writer.deny("held", time.time() + 600)
        if case == "another-prefix":
            other = _snapshot_store(server, fresh_prefix(), location)
            publish_snapshot(other)
            other.close()
        elif case == "older-than-the-log":
            publish_snapshot(writer)
            writer.deny("later", time.time() + 600)
            server.client().xtrim(writer.link.log, maxlen=0, approximate=False)
        elif case == "damaged":
            Path(location).write_bytes(b"\x1f\x8b not really gzip")
        elif case == "tampered":
            from rotator.revocation._snapshot import dump, parse

            publish_snapshot(writer)
            snap = parse(Path(location).read_bytes(), location)
            Path(location).write_bytes(dump(dataclasses.replace(snap, records=[r for r in snap.records if "held" not in r[0]])))
        reader = _snapshot_store(server, prefix, location)
        try:
            with caplog.at_level(logging.WARNING, logger="rotator.revocation"):
                replica = reader.replica()
            assert replica.loads == 1 and replica.resumes == 0
            assert "held" in replica.tables.denied
            assert ("later" in replica.tables.denied) == (case == "older-than-the-log")
        finally:
            reader.close()
    finally:
        writer.close()
    said = [m for m in caplog.messages if "snapshot" in m]
    expected = {
        "another-prefix": "another dataset's",
        "older-than-the-log": "older than the change log holds",
        "damaged": "is not usable",
        "missing": "no revocation snapshot at",
        "tampered": "not one this prefix's publisher vouched for",
    }[case]
    assert len(said) == 1 and expected in said[0] and "\n" not in said[0], said


def test_a_snapshot_on_s3_seaweedfs(server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Published to S3 (a real SeaweedFS) and read back from there by a starting replica."""
    from .seaweed import SeaweedServer

    weed = SeaweedServer(tmp_path / "weed").start()
    try:
        weed.client().create_bucket(Bucket="revocations")
        # Through monkeypatch, so that no server started later in this process inherits them
        # (weed mini takes credentials in its environment as an identity and turns auth on).
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
        from rotator._aws import S3Options

        def target() -> SnapshotTarget:
            return SnapshotTarget("s3://revocations/prod/revocations.json.gz", S3Options(endpoint_url=weed.endpoint))

        prefix = fresh_prefix()
        writer = RevocationStore.from_url(server.url, prefix=prefix, snapshot=target())
        try:
            writer.revoke_subject("on-s3")
            assert publish_snapshot(writer) == (1, writer.link.log_end())
            server.reset_stats()
            reader = RevocationStore.from_url(server.url, prefix=prefix, snapshot=target())
            replica = reader.replica()
            assert (replica.snapshot_loads, replica.loads) == (1, 0) and "on-s3" in replica.tables.cutoffs
            assert _full_load_commands(server) == 0
            reader.close()
        finally:
            writer.close()
    finally:
        weed.stop()


def test_cli_publishes_a_snapshot_and_refuses_a_bad_location_in_one_line(server: RedisServer, tmp_path: Path) -> None:
    """`rotator revocation-snapshot` publishes and says what; a location it cannot use is one line."""
    prefix = fresh_prefix()
    env = {"ROTATOR_REVOCATION_URL": server.url, "ROTATOR_REVOCATION_PREFIX": prefix}
    store = RevocationStore.from_url(server.url, prefix=prefix)
    store.revoke_subject("cli")
    store.close()
    location = tmp_path / "snap.json.gz"
    out = CliRunner().invoke(main, ["revocation-snapshot", "--revocation-snapshot", str(location)], env=env)
    assert out.exit_code == 0, out.output
    assert out.output.startswith("published 1 records at log position ") and str(location) in out.output
    assert location.stat().st_size > 0
    for bad, message in [
        ("s3:///key", "names no bucket"),
        ("https://cdn.example/snap.json.gz", "is read-only here"),
    ]:
        out = CliRunner().invoke(main, ["revocation-snapshot", "--revocation-snapshot", bad], env=env)
        assert out.exit_code != 0 and message in out.output and out.output.count("\n") == 1, out.output
    out = CliRunner().invoke(main, ["revocation-snapshot"], env=env)
    assert out.exit_code == 2 and "revocation_snapshot is not set" in out.output


def test_a_recent_snapshot_lets_a_verifier_start_while_redis_is_down(tmp_path: Path, key: SigningKey, jwks: JwksServer) -> None:
    """A verifier starting while Redis cannot be had, with a snapshot younger than its bound:
    it starts, rejects what the snapshot revokes, and once Redis is back resumes from the
    snapshot's place in the log (no full load) and applies what was written since. With a
    snapshot older than the bound the same start is the usual one-line error."""
    from rotator.revocation._snapshot import dump, parse

    jwks_server = jwks
    redis_srv = RedisServer(tmp_path / "redis", appendonly=True).start()
    location = tmp_path / "revocations.json.gz"
    prefix = fresh_prefix()
    stores: list[RevocationStore] = []
    try:
        writer = RevocationStore.from_url(redis_srv.url, prefix=prefix, snapshot=str(location))
        stores.append(writer)
        writer.revoke_subject("banned")
        publish_snapshot(writer)
        fresh = location.read_bytes()
        redis_srv.kill()

        def reader() -> RevocationStore:
            made = RevocationStore.from_url(redis_srv.url, prefix=prefix, snapshot=str(location), check=False,
                                            connect_timeout=0.5, timeout=0.5)
            stores.append(made)
            return made

        store = reader()
        verifier = Verifier(jwks_server.url, allow_http=True, revocations=store)
        replica = verifier.revocations
        assert rejected(verifier, token(key, "banned", iat=int(time.time()) - 60))
        verifier.verify(token(key, "someone-else"))
        assert replica.snapshot_loads == 1 and replica.last_error is not None and replica.age() < 30

        later = token(key, "later", iat=int(time.time()) - 60)  # issued before the cutoff below
        verifier.verify(later)
        redis_srv.start()
        RevocationStore.from_url(redis_srv.url, prefix=prefix).revoke_subject("later")
        wait_for(lambda: rejected(verifier, later), timeout=15, what="the change written after the snapshot")
        assert (replica.resumes, replica.loads) == (1, 0)

        redis_srv.kill()
        snap = parse(fresh, "test")
        location.write_bytes(dump(dataclasses.replace(snap, taken_at=time.time() - 31)))
        with pytest.raises(RevocationError) as e:
            Verifier(jwks_server.url, allow_http=True, revocations=reader())
        assert str(e.value).startswith(f"redis at 127.0.0.1:{redis_srv.port}") and "\n" not in str(e.value)
    finally:
        for made in stores:
            made.close()
        redis_srv.stop()


@pytest.mark.parametrize("verifier_bound, longest", [(None, 3.0), (2.0, 1.0)])
def test_a_replica_that_must_load_again_waits_a_random_part_of_its_spread(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch, verifier_bound: float | None, longest: float
) -> None:
    """A replica holding records whose place in the log is gone draws its wait before the load
    from [0, min(spread, half what is left of its bound)], so a fleet told to load at once
    spreads out and none passes its bound waiting; it keeps its records meanwhile. The bound
    is the tightest of the verifiers it serves (30 s by default, here 2 s for one)."""
    import random

    drawn: list[tuple[float, float]] = []
    real_uniform = random.uniform

    def recording_uniform(a: float, b: float) -> float:
        drawn.append((a, b))
        return real_uniform(a, b)

    prefix = fresh_prefix()
    store = RevocationStore.from_url(server.url, prefix=prefix, spread=3.0)
    try:
        replica = store.replica(heartbeat=0.2)
        if verifier_bound is not None:
            replica.guard(max_staleness=verifier_bound)
        store.deny("held", time.time() + 600)
        wait_for(lambda: "held" in replica.tables.denied and replica.age() < 0.5, what="the replica current")
        loads = replica.loads
        monkeypatch.setattr(random, "uniform", recording_uniform)
        server.client().xtrim(store.link.log, maxlen=0, approximate=False)
        _drop_connections(server)
        wait_for(lambda: replica.loads > loads, timeout=15, what="the full load")
        assert "held" in replica.tables.denied
    finally:
        store.close()
    spreads = [(a, b) for a, b in drawn if a == 0]
    assert len(spreads) == 1, drawn
    assert 0 < spreads[0][1] <= longest


def test_a_tampered_snapshot_started_from_while_redis_is_down_is_dropped_when_redis_answers(
    tmp_path: Path, key: SigningKey, jwks: JwksServer
) -> None:
    """A snapshot rewritten without a revocation, started from while Redis is down, is
    trusted only until Redis answers: Redis does not vouch for it, so the replica loads every
    record and the revocation it dropped applies again."""
    from rotator.revocation._snapshot import dump, parse

    redis_srv = RedisServer(tmp_path / "redis", appendonly=True).start()
    location = tmp_path / "revocations.json.gz"
    prefix = fresh_prefix()
    writer = RevocationStore.from_url(redis_srv.url, prefix=prefix, snapshot=str(location))
    reader: RevocationStore | None = None
    try:
        writer.revoke_subject("banned")
        publish_snapshot(writer)
        snap = parse(location.read_bytes(), str(location))
        location.write_bytes(dump(dataclasses.replace(snap, records=[])))
        redis_srv.kill()
        reader = RevocationStore.from_url(redis_srv.url, prefix=prefix, snapshot=str(location), check=False,
                                          connect_timeout=0.5, timeout=0.5)
        verifier = Verifier(jwks.url, allow_http=True, revocations=reader)
        banned = token(key, "banned", iat=int(time.time()) - 60)
        verifier.verify(banned)  # what the rewritten file says, for at most the bound
        redis_srv.start()
        wait_for(lambda: rejected(verifier, banned), timeout=15, what="the dropped revocation back in force")
        assert (verifier.revocations.loads, verifier.revocations.resumes) == (1, 0)
    finally:
        writer.close()
        if reader is not None:
            reader.close()
        redis_srv.stop()


def test_the_log_retention_setting_is_what_writers_trim_by(server: RedisServer) -> None:
    """ROTATOR_REVOCATION_LOG_RETENTION reaches every write the CLI makes: with 10m, entries
    stamped 20 minutes ago go (Redis trims whole stream nodes, so a few may stay) and those
    from 5 minutes ago stay; with the default (1h) all stay. A retention under 1s, or under
    twice the snapshot interval, is one line."""
    prefix = fresh_prefix()
    store = RevocationStore.from_url(server.url, prefix=prefix)
    client = server.client()
    now_ms = int(time.time()) * 1000

    def stamp_and_write(retention: str | None) -> tuple[int, int]:
        """How many of 1,000 entries from 20 minutes ago and of 10 from 5 minutes ago stay."""
        client.delete(store.link.log)
        for minutes, count in ((20, 1000), (5, 10)):  # as writes that long ago would have left them
            for i in range(count):
                client.xadd(store.link.log, {"r": f"sub:{minutes}m\n1"}, id=f"{now_ms - minutes * 60_000}-{i + 1}")
        env = {"ROTATOR_REVOCATION_URL": server.url, "ROTATOR_REVOCATION_PREFIX": prefix}
        if retention is not None:
            env["ROTATOR_REVOCATION_LOG_RETENTION"] = retention
        out = CliRunner().invoke(main, ["revoke-subject", "someone"], env=env)
        assert out.exit_code == 0, out.output
        kept = [change.split("\n")[0] for _, change in entries_of([[store.link.log, client.xrange(store.link.log)]])]
        assert kept[-1] == "sub:someone"
        return kept.count("sub:20m"), kept.count("sub:5m")

    try:
        old, recent = stamp_and_write("10m")
        assert old < 200 and recent == 10, (old, recent)
        assert stamp_and_write(None) == (1000, 10)
        for env, message in [
            ({"ROTATOR_REVOCATION_LOG_RETENTION": "0.5s"}, "revocation log retention must be at least 1s, got 0.5"),
            ({"ROTATOR_REVOCATION_LOG_RETENTION": "30s", "ROTATOR_REVOCATION_SNAPSHOT": "/tmp/unused.json.gz"},
             "revocation_log_retention (30s) must be at least twice revocation_snapshot_interval (20s)"),
        ]:
            out = CliRunner().invoke(main, ["revoke-subject", "someone"], env={"ROTATOR_REVOCATION_URL": server.url, **env})
            assert out.exit_code == 2 and message in out.output and out.output.count("\n") == 1, out.output
    finally:
        store.close()
