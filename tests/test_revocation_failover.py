"""A Redis run for availability: a primary, a replica and Sentinel (real redis-servers), the
primary killed under writers and replicas. Every revocation whose write returned applies at
every replica afterwards, and the replicas resume across the failover."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

from rotator.revocation import RevocationError, RevocationInputError, RevocationStore, check_url
from rotator.revocation._redis import redis_target

from .helpers import wait_for
from .redis_server import RedisServer, SentinelServer


def _write_until_taken(store: RevocationStore, jti: str, deadline: float) -> bool:
    """What a writer does in a failover: write again until the store confirms it (True), or give up."""
    while time.monotonic() < deadline:
        try:
            store.deny(jti, time.time() + 600)
            return True
        except RevocationError:
            time.sleep(0.05)
    return False


def _primary_holds_a_replica(sentinel: SentinelServer) -> bool:
    """Whether the server Sentinel names primary now has a replica linked to it. On a loaded
    machine Sentinel may fail over a second time (to the server that just rejoined), so this asks
    Sentinel which one is primary rather than assuming it."""
    info = redis.Redis(port=sentinel.primary_port(), socket_timeout=2).info("replication")
    return info["role"] == "master" and any(
        isinstance(v, dict) and v.get("state") == "online" for k, v in info.items() if k.startswith("slave")
    )


def test_a_sentinel_failover_loses_no_revocation_whose_write_returned(tmp_path: Path) -> None:
    """Writes before, during and after the primary is SIGKILLed and Sentinel promotes the
    replica, with ``min_replicas=1`` (each write held by a Redis replica before it returns):
    every one that returned is in force at both replicas afterwards, none reports a lost
    dataset, and they caught up from the change log."""
    primary = RedisServer(tmp_path / "primary").start()
    standby = RedisServer(tmp_path / "standby", replicaof=primary.port).start()
    sentinel: SentinelServer | None = None
    stores: list[RevocationStore] = []
    try:
        wait_for(lambda: standby.client().info("replication")["master_link_status"] == "up", what="replication")
        sentinel = SentinelServer(tmp_path / "sentinel", primary.port).start()
        sentinel_client = redis.Redis(port=sentinel.port)
        wait_for(lambda: sentinel_client.sentinel_slaves(sentinel.service), what="sentinel to see the replica")

        def store(**kwargs: object) -> RevocationStore:
            assert sentinel is not None
            made = RevocationStore.from_url(sentinel.url, timeout=1, connect_timeout=1, **kwargs)  # type: ignore[arg-type]
            stores.append(made)
            return made

        writer = store(min_replicas=1)
        readers = [store(spread=0.5).replica(heartbeat=0.2) for _ in range(2)]
        taken: list[str] = []
        for i in range(20):
            assert _write_until_taken(writer, f"before-{i}", time.monotonic() + 10)
            taken.append(f"before-{i}")

        stop = threading.Event()
        attempts = [0]

        def keep_writing() -> None:
            i = 0
            while not stop.is_set():
                attempts[0] += 1
                if _write_until_taken(writer, f"during-{i}", time.monotonic() + 0.5):
                    taken.append(f"during-{i}")
                i += 1

        thread = threading.Thread(target=keep_writing)
        thread.start()
        try:
            wait_for(lambda: any(t.startswith("during-") for t in taken), what="a write during the run")
            primary.kill()
            wait_for(lambda: sentinel is not None and sentinel.primary_port() == standby.port, timeout=30, what="the failover")
            # The old primary comes back as a replica of the new one, so writes can be held twice again.
            primary = RedisServer(tmp_path / "primary-again", port=primary.port, replicaof=standby.port).start()
            wait_for(lambda: sentinel is not None and _primary_holds_a_replica(sentinel), timeout=30, what="the rejoin")
            during = len(taken)
            wait_for(lambda: len(taken) > during + 5, timeout=30, what="writes after the rejoin")
        finally:
            stop.set()
            thread.join()
        for i in range(20):
            assert _write_until_taken(writer, f"after-{i}", time.monotonic() + 10)
            taken.append(f"after-{i}")

        for replica in readers:
            wait_for(lambda: all(t in replica.tables.denied for t in taken), timeout=10, what="every write that returned")
            assert replica.dataset_losses == 0 and replica.age() < 5
            assert replica.resumes + replica.loads >= 2  # it reconnected across the failover
        print(f"failover: {len(taken)} writes returned of {attempts[0] + 40} attempted; "
              f"replicas resumed {[r.resumes for r in readers]} times, loaded {[r.loads for r in readers]}")
    finally:
        for made in stores:
            made.close()
        if sentinel is not None:
            sentinel.stop()
        primary.stop()
        standby.stop()


@pytest.mark.parametrize(
    "url, message",
    [
        ("redis+sentinel:///revocations", "names no sentinel or no service"),
        ("redis+sentinel://127.0.0.1:26379", "names no sentinel or no service"),
        ("redis+sentinel://127.0.0.1:port/revocations", "sentinel '127.0.0.1:port' is not HOST:PORT"),
        ("redis+sentinel://127.0.0.1:26379/revocations/zero", "database 'zero' is not a number"),
        ("redis+sentinel://127.0.0.1:26379/revocations?sentinel_auth=maybe", "option sentinel_auth=maybe is not known"),
        ("redis+sentinel://127.0.0.1:26379/revocations/0?password=x", "option password=x is not known"),
    ],
)
def test_a_bad_sentinel_url_is_one_line(url: str, message: str) -> None:
    """Settings naming Sentinel wrongly are refused before anything connects, in one line."""
    with pytest.raises(RevocationInputError) as e:
        check_url(url)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert redis_target("redis+sentinel://:secret@10.0.0.1:26379,10.0.0.2:26380/auth/2") == (
        "auth (via sentinel 10.0.0.1:26379,10.0.0.2:26380)"
    )


def test_sentinels_that_ask_a_password_take_the_primarys_with_sentinel_auth(tmp_path: Path) -> None:
    """Sentinels run with requirepass (as charts commonly run them, with the primary's
    password): ``?sentinel_auth=yes`` gives them the password from revocation_password_file,
    and writes reach a replica. Without it, or with it and no password, the store says so in
    one line that never shows the password."""
    secret = "s3ntinel-and-primary"
    primary = RedisServer(tmp_path / "primary", password=secret).start()
    sentinel: SentinelServer | None = None
    try:
        sentinel = SentinelServer(tmp_path / "sentinel", primary.port, password=secret).start()
        password_file = tmp_path / "redis-password"
        password_file.write_text(secret + "\n")
        password_file.chmod(0o600)
        store = RevocationStore.from_url(sentinel.url + "?sentinel_auth=yes", password_file=str(password_file))
        try:
            replica = store.replica(heartbeat=0.2)
            store.deny("through-sentinel", time.time() + 600)
            wait_for(lambda: "through-sentinel" in replica.tables.denied, what="the write at the replica")
        finally:
            store.close()

        with pytest.raises(RevocationError) as refused:
            RevocationStore.from_url(sentinel.url, password_file=str(password_file), timeout=1, connect_timeout=1)
        said = str(refused.value)
        assert said.endswith("a sentinel asks for a password; add ?sentinel_auth=yes to revocation_url so the "
                             "sentinels take the primary's") and "\n" not in said and secret not in said, said
        with pytest.raises(RevocationError, match=r"at nope \(via sentinel .*\): no sentinel answered with a primary of that name$"):
            RevocationStore.from_url(sentinel.url.replace("/revocations/", "/nope/") + "?sentinel_auth=yes",
                                     password_file=str(password_file), timeout=1, connect_timeout=1)
        with pytest.raises(RevocationInputError, match="says sentinel_auth=yes but gives no password"):
            RevocationStore.from_url(sentinel.url + "?sentinel_auth=yes")
    finally:
        if sentinel is not None:
            sentinel.stop()
        primary.stop()
