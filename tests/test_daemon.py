"""`rotator run` as a real subprocess: schedule, JWKS, /metrics, /healthz, signals, systemd notify, logs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from rotator._b64 import b64url_encode
from rotator.config import Policy
from rotator.errors import KeystoreError, PublishError
from rotator.health import health_problems
from rotator.reconcile import failure_stage
from rotator.sdnotify import Notifier
from rotator.sealing import open_sealer
from rotator.state import State
from rotator.verifier import parse_jwks, verify_token

from .daemon_harness import (
    ROTATOR,
    NotifySocket,
    RunningDaemon,
    http_get,
    metrics,
    prom_values,
)
from .helpers import PASSPHRASE, ec_private, wait_for
from .ports import free_port


def private_scalars(state: State | None) -> set[str]:
    """Every encoding of every private scalar in the state that a log line could carry."""
    if state is None:
        return set()
    sealer = open_sealer(state.encryption, PASSPHRASE, False)
    found: set[str] = set()
    for key in state.keys:
        if key.private is None:
            continue
        private = ec_private(sealer.unseal(key.private, state.keyset, key.kid))
        d = private.private_numbers().private_value
        raw = d.to_bytes(32, "big")
        found |= {b64url_encode(raw), raw.hex(), str(d), key.private[:40]}
    return found


# -- the whole daemon, end to end ------------------------------------------------------------


def test_run_rotates_on_schedule_serves_metrics_and_health_and_stops_on_sigterm(daemon_factory: Callable[..., RunningDaemon]) -> None:
    """rotator run rotates on schedule, serves /metrics and /healthz, notifies systemd, never
    logs a private key, and stops cleanly on SIGTERM."""
    d = daemon_factory()
    wait_for(lambda: d.notify.has("READY=1"), what="READY=1")
    actives: list[str] = []
    scalars: set[str] = set()
    deadline = time.monotonic() + 14
    while time.monotonic() < deadline:
        d.notify.drain()
        state = d.state()
        scalars |= private_scalars(state)
        if state is not None and state.active is not None and (not actives or actives[-1] != state.active.kid):
            actives.append(state.active.kid)
            # The JWKS follows: whenever a key signs, it is published.
            published = wait_for(lambda: {k["kid"] for k in d.jwks()["keys"]}, what="a JWKS")
            assert state.active.kid in published
        time.sleep(0.1)
    # P = 4 s over 14 s: the first key plus three rotations, give or take one wake-up.
    assert len(actives) >= 4, actives
    assert len(set(actives)) == len(actives)

    m = metrics(d.port)
    state = d.state()
    assert state is not None and state.active is not None
    assert m['rotator_keys{state=active}'] == 1
    assert m["rotator_steps_total"] >= len(actives)
    assert sum(v for k, v in m.items() if k.startswith("rotator_step_failures_total")) == 0
    assert 0 <= m["rotator_active_key_age_seconds"] <= 4 + 1 + 2
    assert -1 <= m["rotator_next_due_seconds"] <= 4
    assert abs(m["rotator_last_success_timestamp_seconds"] - time.time()) < 5
    assert abs(m["rotator_publication_confirmed_timestamp_seconds"] - time.time()) < 6
    assert m["rotator_healthy"] == 1
    jwks_keys = len(d.jwks()["keys"])
    assert m["rotator_jwks_keys"] in (jwks_keys - 1, jwks_keys, jwks_keys + 1)  # a rotation may land between reads
    assert m["rotator_jwks_bytes"] > 200

    status, body = http_get(f"http://127.0.0.1:{d.port}/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["problems"] == []
    assert http_get(f"http://127.0.0.1:{d.port}/nope")[0] == 404

    assert d.notify.has("WATCHDOG=1")
    assert any(line.startswith("STATUS=active key ") for line in d.notify.drain())

    start = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    code = d.proc.wait(timeout=20)
    took = time.monotonic() - start
    print(f"\n[daemon] {len(actives)} active keys in 14 s at P=4s; SIGTERM to exit {took:.2f}s")
    assert code == 0 and took < 5
    assert d.notify.has("STOPPING=1")
    log = d.log()
    events = [json.loads(line)["event"] for line in log.splitlines() if line.startswith("{")]
    assert events[0] == "daemon.metrics_listening" and "daemon.started" in events
    # A step in progress at SIGTERM finishes before the daemon stops; none starts after it.
    after = events[events.index("daemon.stopping") + 1:]
    assert after[-1] == "daemon.stopped" and set(after[:-1]) <= {"daemon.step_succeeded"} and len(after) <= 2, after
    assert {"rotator.key_created", "rotator.key_activated", "rotator.key_retired", "daemon.step_succeeded"} <= set(events)

    # Key material never reaches the log.
    scalars |= private_scalars(d.state())
    assert scalars, "no private keys were collected to search for"
    assert "BEGIN" not in log and "PRIVATE" not in log
    for secret in scalars:
        assert secret not in log
    assert PASSPHRASE not in log


def test_publish_target_failing_then_recovering(daemon_factory: Callable[..., RunningDaemon], tmp_path: Path) -> None:
    """A publish target that fails is counted by stage and retried with backoff; when it
    recovers the daemon publishes again and health clears."""
    d = daemon_factory(log_format="human")
    wait_for(lambda: d.notify.has("READY=1"), what="READY=1")
    wait_for(lambda: metrics(d.port)["rotator_steps_total"] >= 2, what="two steps")

    # Break the publish target: its directory becomes a plain file.
    saved = tmp_path / "public-before-outage"
    shutil.move(d.public, saved)
    d.public.write_text("not a directory")
    served_before = parse_jwks((saved / "jwks.json").read_bytes())

    def unhealthy() -> dict[str, Any] | None:
        status, body = http_get(f"http://127.0.0.1:{d.port}/healthz")
        return json.loads(body) if status == 503 else None

    health = wait_for(unhealthy, timeout=20, what="/healthz to report the outage")
    assert any("successful reconcile step" in p or "not been confirmed" in p for p in health["problems"]), health
    assert d.proc.poll() is None, "the daemon died during the outage"
    # A rotation falls due during the outage, so its successor's publication fails too.
    m = wait_for(lambda: (lambda m: m if m["rotator_step_failures_total{stage=publish}"] >= 1 else None)(metrics(d.port)), what="a failed publication")
    assert m["rotator_step_failures_total{stage=confirm}"] >= 1  # re-reading the JWKS while nothing was due
    assert m["rotator_healthy"] == 0

    # The current key keeps signing, and its tokens verify against what verifiers hold.
    token = d.cli("sign", "--sub", "alice", "--aud", "api", "--ttl", "2s")
    assert token.returncode == 0, token.stderr
    claims = verify_token(token.stdout.strip(), served_before, now=time.time(), audience="api", leeway=1)
    assert claims["sub"] == "alice"

    # Recovery: everything converges.
    d.public.unlink()
    shutil.move(saved, d.public)
    wait_for(lambda: http_get(f"http://127.0.0.1:{d.port}/healthz")[0] == 200, timeout=20, what="health to recover")
    state = d.state()
    assert state is not None and state.active is not None
    published = {k["kid"] for k in d.jwks()["keys"]}
    assert state.active.kid in published and all(k.kid in published for k in state.pending)
    failures = {k: v for k, v in metrics(d.port).items() if k.startswith("rotator_step_failures_total")}
    time.sleep(3)
    assert {k: v for k, v in metrics(d.port).items() if k.startswith("rotator_step_failures_total")} == failures
    log = d.log()
    assert re.search(r"error +daemon\.step_failed stage=publish .*retry_in=", log), log[-2000:]
    assert re.search(r"error +daemon\.step_failed stage=confirm .*Not a directory", log), log[-2000:]
    assert d.stop() == 0


def test_sighup_reloads_settings_and_keeps_running_on_a_bad_file(daemon_factory: Callable[..., RunningDaemon], tmp_path: Path) -> None:
    """SIGHUP reloads the settings; a bad settings file is logged and the old settings kept."""
    config = tmp_path / "rotator.toml"
    config.write_text('audit_retention = "1d"\n')
    d = daemon_factory("--config", str(config))
    wait_for(lambda: d.notify.has("READY=1"), what="READY=1")

    config.write_text('audit_retention = "2d"\n')
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: '"event":"daemon.reloaded"' in d.log(), what="the reload")
    reloaded = next(json.loads(line) for line in d.log().splitlines() if '"daemon.reloaded"' in line)
    assert reloaded["changed"] == "policy"

    config.write_text("rotation_period = \n")
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: '"event":"daemon.reload_failed"' in d.log(), what="the failed reload")
    failed = next(json.loads(line) for line in d.log().splitlines() if '"daemon.reload_failed"' in line)
    assert "not valid TOML" in failed["error"]

    config.write_text("audit_retention = [1, 2]\n")  # a wrong type: one line, not a traceback
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.log().count('"event":"daemon.reload_failed"') == 2, what="the second failed reload")
    failed = [json.loads(line) for line in d.log().splitlines() if '"daemon.reload_failed"' in line][-1]
    assert failed["error"].startswith("invalid audit_retention [1, 2]") and "Traceback" not in d.log()
    time.sleep(1)
    assert d.proc.poll() is None
    assert http_get(f"http://127.0.0.1:{d.port}/healthz")[0] == 200
    assert d.stop() == 0


SIGHUP_RUNS = int(os.environ.get("ROTATOR_SIGHUP_RUNS", "3"))  # `make soak` runs 20


@pytest.mark.parametrize("run", range(SIGHUP_RUNS))
def test_sighup_bursts_coalesce_and_sigterm_still_stops(daemon_factory: Callable[..., RunningDaemon], run: int) -> None:
    """10,000 SIGHUPs in 20 bursts: the daemon keeps stepping, reloads about once a burst
    (never once a signal), and stops on SIGTERM within 2 s. Handlers that took a lock
    (Event.set) deadlocked the main thread on a nested signal: steps stopped and SIGTERM
    was ignored."""
    d = daemon_factory()
    wait_for(lambda: d.notify.has("READY=1"), what="READY=1")
    for burst in range(20):
        for _ in range(500):
            os.kill(d.proc.pid, signal.SIGHUP)
        time.sleep(0.05)
    steps = metrics(d.port)["rotator_steps_total"]
    # Still stepping: the next scheduled or reload-triggered step happens and is counted.
    wait_for(lambda: metrics(d.port)["rotator_steps_total"] > steps, timeout=15, what="a step after the bursts")
    wait_for(lambda: '"event":"daemon.reloaded"' in d.log(), what="a reload")
    reloads = d.log().count('"event":"daemon.reloaded"')
    assert 1 <= reloads <= 25, f"{reloads} reloads for 10,000 SIGHUPs in 20 bursts over about 2 s"
    assert http_get(f"http://127.0.0.1:{d.port}/healthz")[0] == 200
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=2) == 0, "SIGTERM did not stop the daemon within 2 s"
    d.stop()


def test_bad_settings_refused_before_starting(tmp_path: Path) -> None:
    """Bad settings are refused before the daemon starts, with one line and exit 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_")}
    env.update(ROTATOR_KEYSTORE=f"file://{tmp_path / 'ks'}", ROTATOR_PUBLISH=f"file://{tmp_path / 'pub'}")
    result = subprocess.run(
        [*ROTATOR, "run", "--rotation-period", "4s"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and result.stderr.startswith("rotator: error:") and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "ks").exists()


# -- one-shot metrics ------------------------------------------------------------------------


def test_rotate_writes_a_metrics_textfile_also_on_failure(tmp_path: Path) -> None:
    """rotate --metrics-file writes the textfile on success and on failure, keeping the last
    success time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_")}
    env.update(
        ROTATOR_KEYSTORE=f"file://{tmp_path / 'ks'}",
        ROTATOR_PUBLISH=f"file://{tmp_path / 'pub'}",
        ROTATOR_KEYSTORE_PASSPHRASE=PASSPHRASE,
    )
    prom = tmp_path / "textfile" / "rotator.prom"
    prom.parent.mkdir()

    def rotate() -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ROTATOR, "rotate", "--metrics-file", str(prom)], env=env, capture_output=True, text=True, timeout=60)

    def read() -> dict[str, float]:
        return prom_values(prom.read_text())

    assert rotate().returncode == 0
    first = read()
    assert first["rotator_keys{state=active}"] == 1 and first["rotator_keys{state=pending}"] == 1
    assert first["rotator_steps_total"] == 1 and first["rotator_jwks_keys"] == 2
    success_at = first["rotator_last_success_timestamp_seconds"]
    assert abs(success_at - time.time()) < 30

    (tmp_path / "pub").rename(tmp_path / "pub-away")
    (tmp_path / "pub").write_text("not a directory")
    failed = rotate()
    assert failed.returncode != 0
    after = read()
    # Nothing changed, so the step only read back the JWKS, and that failed.
    assert after["rotator_step_failures_total{stage=confirm}"] + after["rotator_step_failures_total{stage=publish}"] == 1
    assert after["rotator_last_success_timestamp_seconds"] == success_at
    assert after["rotator_keys{state=active}"] == 1
    assert not list(prom.parent.glob("*.tmp*")), "the textfile was not written atomically"


# -- pieces ----------------------------------------------------------------------------------


def test_failure_stage_names() -> None:
    """A failed step is named by the stage after its last checkpoint, publish errors by what
    they were doing."""
    assert failure_stage(None, KeystoreError("x")) == "load"
    assert failure_stage("loaded", ValueError("x")) == "plan"
    assert failure_stage("loaded", PublishError("read-back")) == "confirm"
    assert failure_stage("planned", KeystoreError("x")) == "write_state"
    assert failure_stage("planned", PublishError("x")) == "publish"
    assert failure_stage("state_written", PublishError("x")) == "publish"
    assert failure_stage("published", PublishError("x")) == "confirm"
    assert failure_stage("confirmed", KeystoreError("x")) == "record"


def test_health_problems(make_rotator: Callable[..., Any], clock: Any) -> None:
    """Health reports a missing key set, no step yet, an overdue active key and a stale JWKS,
    and nothing when all is well."""
    policy = Policy()
    rotator = make_rotator(policy)
    state = rotator.step().state
    now = clock.now
    assert health_problems(state, policy, now, last_success=now, since=now) == []
    assert health_problems(None, policy, now, last_success=now, since=now) == ["no key set stored yet"]
    # Not ready before the first successful step, however recent the start (the readiness probe).
    assert health_problems(state, policy, now + 1, last_success=None, since=now) == [
        "no successful reconcile step yet (1s since start)"
    ]
    late = now + 900 + 300 + 450 + 10
    problems = health_problems(state, policy, late, last_success=late, since=now)
    assert len(problems) == 1 and "overdue for rotation by 10s" in problems[0]
    stale = health_problems(state, policy, now + 901, last_success=now, since=now)
    assert any("no successful reconcile step for 901s" in p for p in stale)


def test_notifier_never_blocks_on_a_receiver_that_does_not_read(tmp_path: Path) -> None:
    """systemd notifications never block on a receiver that does not read: extra messages are
    dropped."""
    receiver = NotifySocket(tmp_path / "full.sock")  # never drained
    notifier = Notifier({"NOTIFY_SOCKET": str(receiver.path)})
    sent = [notifier.notify("WATCHDOG=1") for _ in range(500)]  # a blocking send would hang here
    assert sent[0] is True and sent[-1] is False  # the queue filled up and later messages were dropped
    receiver.close()


def test_notifier_speaks_to_an_abstract_socket() -> None:
    """Notifications reach an abstract-namespace notify socket."""
    name = f"rotator-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(2)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "3000000"})
        assert notifier.enabled and notifier.watchdog_interval == 1.5
        notifier.ready("up")
        assert server.recv(1024) == b"READY=1\nSTATUS=up"
    assert not Notifier({}).enabled and Notifier({}).notify("READY=1") is False
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_watchdog_pings_stop_when_the_step_loop_is_wedged(make_rotator: Callable[..., Any], dirs: tuple[Path, Path]) -> None:
    """Watchdog pings stop when a step hangs past stuck_after or no step has been scheduled for
    too long."""
    from rotator.config import Settings
    from rotator.daemon import Daemon, DaemonOptions

    keystore, public = dirs
    settings = Settings(keystore=f"file://{keystore}", publish=f"file://{public}", passphrase=PASSPHRASE)
    daemon = Daemon(lambda: settings, lambda s: make_rotator(), DaemonOptions(max_sleep=60, stuck_after=300))
    now = time.monotonic()
    runner = daemon.sets["default"]
    runner._last_tick = now
    assert daemon.watchdog_ok(now + 10)
    runner._step_started = now
    assert daemon.watchdog_ok(now + 299)
    assert not daemon.watchdog_ok(now + 301)  # one step has hung for over five minutes
    runner._step_started = None
    assert daemon.watchdog_ok(now + 300)
    assert not daemon.watchdog_ok(now + 60 + 300 + 1)  # no step has even started for too long


def _http_daemon(make_rotator: Callable[..., Any], dirs: tuple[Path, Path], addr: str) -> Any:
    from rotator.config import Settings
    from rotator.daemon import Daemon, DaemonOptions
    from rotator.exposition import serve_metrics

    keystore, public = dirs
    settings = Settings(keystore=f"file://{keystore}", publish=f"file://{public}", passphrase=PASSPHRASE)
    options = DaemonOptions(metrics_port=free_port(), metrics_addr=addr, http_timeout=0.5)
    daemon = Daemon(lambda: settings, lambda s: make_rotator(), options)
    daemon._http = serve_metrics(lambda: daemon.sets, addr, options.metrics_port or 0, timeout=0.5, log=daemon.log)
    return daemon


def test_metrics_endpoint_drops_idle_half_requests_and_never_prints_tracebacks(
    make_rotator: Callable[..., Any], dirs: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """An idle, half-sent request is dropped after the per-connection timeout instead of holding
    a thread forever; 64 connections at once are all answered (the backlog is not 5); clients
    that reset mid-request leave no traceback among the logs."""
    daemon = _http_daemon(make_rotator, dirs, "127.0.0.1")
    port = daemon.options.metrics_port
    try:
        idle = socket.create_connection(("127.0.0.1", port))
        idle.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
        idle.settimeout(10)
        assert idle.recv(1024) == b"", "the half-sent request was not dropped"
        idle.close()

        many = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
        for conn in many:
            conn.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        for conn in many:
            conn.settimeout(10)
            assert conn.recv(64).startswith(b"HTTP/1.0 "), "a queued connection went unanswered"
            conn.close()

        for _ in range(50):
            conn = socket.create_connection(("127.0.0.1", port))
            conn.sendall(b"GET /metr")
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # a reset mid-request
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] in (200, 503)
        time.sleep(0.2)
        assert "Traceback" not in capfd.readouterr().err
    finally:
        assert daemon._http is not None
        daemon._http.shutdown()
        daemon._http.server_close()


def test_metrics_endpoint_listens_on_ipv6(make_rotator: Callable[..., Any], dirs: tuple[Path, Path]) -> None:
    """--metrics-addr :: (or ::1) listens on IPv6, as an IPv6-only cluster needs."""
    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6 loopback; the IPv6 listener cannot be shown")
    daemon = _http_daemon(make_rotator, dirs, "::1")
    try:
        assert http_get(f"http://[::1]:{daemon.options.metrics_port}/metrics")[0] == 200
    finally:
        assert daemon._http is not None
        daemon._http.shutdown()
        daemon._http.server_close()


def test_metrics_endpoint_on_every_address_answers_ipv4_and_ipv6(make_rotator: Callable[..., Any], dirs: tuple[Path, Path]) -> None:
    """--metrics-addr '*' (the chart's): one dual-stack socket, so the same port answers over
    IPv4 and IPv6, on an IPv4-only, dual-stack or IPv6-only cluster alike."""
    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6 loopback; the dual-stack listener cannot be shown")
    daemon = _http_daemon(make_rotator, dirs, "*")
    try:
        port = daemon.options.metrics_port
        assert http_get(f"http://127.0.0.1:{port}/metrics")[0] == 200
        assert http_get(f"http://[::1]:{port}/metrics")[0] == 200
    finally:
        assert daemon._http is not None
        daemon._http.shutdown()
        daemon._http.server_close()


def test_daemon_follows_the_revocation_redis_in_metrics_and_health(
    daemon_factory: Callable[..., RunningDaemon], tmp_path: Path
) -> None:
    """With revocation_url set, the daemon follows the revocation Redis: its replica's age,
    malformed records and dataset losses are metrics, and its problems are /healthz
    warnings (200 still: restarting the daemon mends neither). A redis-server restarted
    without its data shows as a loss."""
    from rotator.revocation import RevocationStore
    from rotator.revocation._snapshot import parse as parse_snapshot

    from .redis_server import RedisServer

    redis_srv = RedisServer(tmp_path / "redis").start()
    try:
        snapshot = tmp_path / "revocations.json.gz"
        d = daemon_factory(env={
            "ROTATOR_REVOCATION_URL": redis_srv.url, "ROTATOR_REVOCATION_PREFIX": "d:",
            "ROTATOR_REVOCATION_SNAPSHOT": str(snapshot), "ROTATOR_REVOCATION_SNAPSHOT_INTERVAL": "1s",
        })
        wait_for(lambda: d.notify.has("READY=1"), what="READY=1")
        # It publishes the records' snapshot every interval: a revocation shows in a later one.
        written = time.time()
        RevocationStore.from_url(redis_srv.url, prefix="d:").revoke_subject("in-the-snapshot")
        wait_for(lambda: snapshot.exists() and any(
            k == "sub:in-the-snapshot" for k, _ in parse_snapshot(snapshot.read_bytes(), "test").records
        ), timeout=10, what="the revocation in a published snapshot")
        values = metrics(d.port)
        assert values["rotator_revocation_snapshot_interval_seconds"] == 1
        # Published after the revocation it holds was written (the metric is the latest publication).
        assert values["rotator_revocation_snapshot_published_timestamp_seconds"] >= written
        assert values["rotator_revocation_dataset_losses"] == 0 and values["rotator_revocation_malformed_records"] == 0
        assert values["rotator_revocation_replica_age_seconds"] < 5
        redis_srv.stop()
        redis_srv.start()
        wait_for(lambda: metrics(d.port)["rotator_revocation_dataset_losses"] == 1, timeout=20, what="the loss counted")
        status, body = http_get(f"http://127.0.0.1:{d.port}/healthz")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok"
        assert any("lost its dataset 1 time(s)" in w for w in health["warnings"]), health
        # A record another writer version wrote, announced as writers do.
        redis_srv.client().set("d:sub:bad", "x y z")
        redis_srv.client().xadd("d:log", {"r": "sub:bad\nx y z"})
        wait_for(lambda: metrics(d.port)["rotator_revocation_malformed_records"] == 1, timeout=20, what="the malformed record")
        assert any("1 malformed revocation record(s)" in w for w in json.loads(http_get(f"http://127.0.0.1:{d.port}/healthz")[1])["warnings"])
        assert '"event":"daemon.revocations_unavailable"' not in d.log()
        assert d.stop() == 0
    finally:
        redis_srv.stop()
