"""The project's systemd units under a real systemd (PID 1 of its own namespaces; see
tests/systemd_boot.py for the isolation). Only ExecStart's path, the environment the
interpreter needs, the timings and the settings change, through drop-ins."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from rotator.state import parse_state

from .helpers import wait_for
from .systemd_boot import ENV, PY, SystemdNamespace, unavailable

WHY = unavailable()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"systemd in namespaces unavailable: {WHY}")

SETTINGS = """keystore = "file:///var/lib/rotator/keystore"
publish = "file:///var/lib/rotator/public"
issuer = "https://auth.example.com"
rotation_period = "4s"
token_lifetime = "2s"
leeway = "1s"
max_age = "2s"
retirement_window = "6s"
private_key_grace = "2s"
max_clock_skew = "1s"
"""
DROPINS = {
    "rotator.service": f"""[Service]
ExecStart=
ExecStart={PY} -m rotator.cli run --config /etc/rotator/rotator.toml --metrics-port 9464
Environment={ENV}
WatchdogSec=3s
RestartSec=1s
TimeoutAbortSec=2s
""",
    "rotator-rotate.service": f"""[Service]
ExecStart=
ExecStart={PY} -m rotator.cli rotate --config /etc/rotator/rotator.toml --metrics-file /var/lib/rotator/metrics/rotator.prom
Environment={ENV}
""",
    "rotator-rotate.timer": """[Timer]
OnBootSec=
OnUnitInactiveSec=
OnActiveSec=1s
OnUnitActiveSec=2s
RandomizedDelaySec=0
""",
}
PROBE = "import os\ntry:\n    os.setpriority(os.PRIO_PROCESS, 0, 5)\n    print('allowed')\nexcept OSError as e:\n    print('errno', e.errno)\n"
SYSCALL_LINES = "\n".join(
    line for line in (Path(__file__).resolve().parents[1] / "systemd" / "rotator.service").read_text().splitlines()
    if line.startswith("SystemCall")
)


def probe_unit(filtered: bool) -> str:
    return (
        "[Service]\nType=oneshot\nDynamicUser=yes\n" + (SYSCALL_LINES + "\n" if filtered else "")
        + f"Environment={ENV}\nExecStart={PY} /run/systemd/system/eperm-probe.py\n"
    )


EXTRA_UNITS = {
    "eperm-probe.py": PROBE,
    "eperm-probe-filtered.service": probe_unit(True),
    "eperm-probe-free.service": probe_unit(False),
}
PASSPHRASE = "systemd test passphrase"
FILES = {
    "rotator/rotator.toml": SETTINGS,
    "rotator/rotator.env": "ROTATOR_LOG_FORMAT=json\nROTATOR_STUCK_AFTER=2s\n",
    # As the README installs it: the passphrase in a root-only file, handed over by LoadCredential=.
    "rotator/passphrase": PASSPHRASE + "\n",
    "sysusers.d/rotator.conf": (Path(__file__).resolve().parents[1] / "systemd" / "rotator.sysusers").read_text(),
}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemdNamespace]:
    marker_tmp = Path(f"/tmp/rotator-systemd-marker-{os.getpid()}")
    marker_varlib = Path(f"/var/lib/rotator-systemd-marker-{os.getpid()}")
    marker_tmp.write_text("must survive")
    marker_varlib.write_text("must survive")
    started = time.monotonic()
    try:
        with SystemdNamespace(tmp_path_factory.mktemp("systemd"), DROPINS, FILES, EXTRA_UNITS) as ns:
            ns.run("chmod", "600", "/etc/rotator/passphrase")
            ns.run("systemd-sysusers")  # what a package's install does with systemd/rotator.sysusers
            yield ns
        # The host's /tmp and /var/lib are untouched after a full boot, the scenarios and poweroff.
        assert marker_tmp.read_text() == "must survive"
        assert marker_varlib.read_text() == "must survive"
        assert not Path("/var/lib/rotator").exists() and not Path("/var/lib/private/rotator").exists()
        assert not Path("/etc/rotator").exists()
        print(f"\n[systemd] boot, scenarios and poweroff took {time.monotonic() - started:.1f}s")
    finally:
        marker_tmp.unlink(missing_ok=True)
        marker_varlib.unlink(missing_ok=True)


def lines_of(system: SystemdNamespace, unit: str) -> list[str]:
    return [line for line in system.run("journalctl", "--no-pager", "-o", "cat", f"_SYSTEMD_UNIT={unit}").stdout.splitlines() if line]


def test_start_reaches_active_after_ready_with_status_and_metrics(system: SystemdNamespace) -> None:
    """Under systemd, the Type=notify service becomes active only after READY=1, with its status
    text and metrics."""
    system.systemctl("start", "rotator.service")  # Type=notify: returns once READY=1 arrived
    shown = system.show("rotator.service", "ActiveState", "SubState", "StatusText", "ExecMainStartTimestampMonotonic",
                        "ActiveEnterTimestampMonotonic", "Type")
    assert shown["Type"] == "notify" and shown["ActiveState"] == "active" and shown["SubState"] == "running"
    assert shown["StatusText"].startswith("active key ")
    assert int(shown["ActiveEnterTimestampMonotonic"]) > int(shown["ExecMainStartTimestampMonotonic"])
    events = [json.loads(line)["event"] for line in lines_of(system, "rotator.service")]
    assert "daemon.step_succeeded" in events  # the first step succeeded before READY=1 made it active
    status = system.systemctl("status", "rotator.service", check=False).stdout
    assert "Status: \"active key" in status
    code, body = system.http("http://127.0.0.1:9464/healthz")
    assert code == 200 and json.loads(body)["status"] == "ok"
    assert "rotator_steps_total" in system.http("http://127.0.0.1:9464/metrics")[1]


def test_logs_reach_the_journal_as_json_objects(system: SystemdNamespace) -> None:
    """The service's logs reach the journal as one JSON object per line."""
    wait_for(lambda: len(lines_of(system, "rotator.service")) >= 3, timeout=20, what="log lines")
    for line in lines_of(system, "rotator.service"):
        record = json.loads(line)  # one object per line
        assert "event" in record


def test_sandbox_state_directory_and_read_only_system(system: SystemdNamespace) -> None:
    """The service runs as its sysusers user in its sandbox, with the state directory and
    keystore modes the design requires."""
    main_pid = system.show("rotator.service", "MainPID")["MainPID"]
    uid = system.run("stat", "-c", "%u", f"/proc/{main_pid}").stdout.strip()
    assert uid == system.run("id", "-u", "rotator").stdout.strip() != "0"  # the sysusers user
    assert system.run("stat", "-c", "%a %u", "/var/lib/rotator").stdout.split() == ["755", uid]
    assert system.run("stat", "-c", "%a %u", "/var/lib/rotator/keystore").stdout.split() == ["700", uid]
    # The passphrase reached the service as a credential, never as an environment variable.
    environ = system.run("cat", f"/proc/{main_pid}/environ").stdout.split("\0")
    assert "ROTATOR_KEYSTORE_PASSPHRASE_FILE=/run/credentials/rotator.service/passphrase" in environ
    assert not any(PASSPHRASE in v or v.startswith("ROTATOR_KEYSTORE_PASSPHRASE=") for v in environ)
    assert system.run("stat", "-c", "%a %U", "/etc/rotator/passphrase").stdout.split() == ["600", "root"]
    # A publish outside the state directory fails with rotator's one-line error, and the
    # oneshot unit is failed with the reason in the journal.
    system.systemctl("set-environment", "ROTATOR_PUBLISH=file:///etc/rotator-jwks")
    try:
        system.systemctl("start", "rotator-rotate.service", check=False)
        shown = system.show("rotator-rotate.service", "ActiveState", "Result", "ExecMainStatus")
        assert shown["ActiveState"] == "failed" and shown["ExecMainStatus"] == "4", shown
        errors = [line for line in lines_of(system, "rotator-rotate.service") if line.startswith("rotator: error:")]
        assert errors and "/etc/rotator-jwks" in errors[-1] and "Read-only file system" in errors[-1], errors
    finally:
        system.systemctl("unset-environment", "ROTATOR_PUBLISH")
        system.systemctl("reset-failed", "rotator-rotate.service", check=False)


def test_oneshot_and_timer(system: SystemdNamespace) -> None:
    """The oneshot unit runs from its timer."""
    system.systemctl("start", "rotator-rotate.timer")

    def runs() -> int:
        return sum(1 for line in system.journal("rotator-rotate.service").splitlines() if "Finished" in line or "Deactivated successfully" in line)

    before = runs()
    wait_for(lambda: runs() >= before + 2, timeout=30, what="the timer to fire the oneshot twice")
    shown = system.show("rotator-rotate.service", "Result", "ExecMainStatus")
    assert shown["Result"] == "success" and shown["ExecMainStatus"] == "0"
    system.systemctl("stop", "rotator-rotate.timer")
    # What others may read (a web server, node_exporter: here the nobody user), and may not.
    as_nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    metrics = system.run(*as_nobody, "cat", "/var/lib/rotator/metrics/rotator.prom").stdout
    assert "rotator_steps_total" in metrics
    assert '"keys"' in system.run(*as_nobody, "cat", "/var/lib/rotator/public/jwks.json").stdout
    denied = system.run(*as_nobody, "cat", "/var/lib/rotator/keystore/state.json", check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    denied = system.run(*as_nobody, "cat", "/etc/rotator/passphrase", check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr


def test_reload_rereads_settings_and_keeps_them_on_a_bad_file(system: SystemdNamespace) -> None:
    """systemctl reload rereads the settings, and keeps the old ones on a bad file."""
    def events() -> list[dict[str, Any]]:
        return [json.loads(line) for line in lines_of(system, "rotator.service")]

    system.run("sh", "-c", f"printf '%s' '{SETTINGS}audit_retention = \"2d\"\n' > /etc/rotator/rotator.toml")
    system.systemctl("reload", "rotator.service")
    wait_for(lambda: any(e["event"] == "daemon.reloaded" for e in events()), timeout=20, what="the reload")
    assert next(e for e in events() if e["event"] == "daemon.reloaded")["changed"] == "policy"
    system.run("sh", "-c", "printf 'rotation_period = \\n' > /etc/rotator/rotator.toml")
    system.systemctl("reload", "rotator.service")
    wait_for(lambda: any(e["event"] == "daemon.reload_failed" for e in events()), timeout=20, what="the failed reload")
    assert system.show("rotator.service", "ActiveState")["ActiveState"] == "active"
    system.run("sh", "-c", f"printf '%s' '{SETTINGS}' > /etc/rotator/rotator.toml")


def test_watchdog_restarts_a_daemon_whose_step_hangs(system: SystemdNamespace) -> None:
    """Another process holds the keystore's lock, so the next step that writes the state
    hangs in flock. After --stuck-after (2 s) the daemon withholds its WATCHDOG=1 pings, and
    systemd kills and restarts it once WatchdogSec (3 s) passes without one."""
    import subprocess

    shown = system.show("rotator.service", "MainPID", "NRestarts")
    hung = shown["MainPID"]
    # The lock holder lets go by itself after 20 s (nsenter forks into the PID namespace, so
    # killing it would leave the holder running).
    holder = subprocess.Popen(
        ["nsenter", "-t", str(system.pid), "-a", "flock", "/var/lib/rotator/keystore/state.lock", "sleep", "20"]
    )
    started = time.monotonic()
    try:
        wait_for(lambda: system.show("rotator.service", "MainPID")["MainPID"] not in ("0", hung),
                 timeout=20, what="systemd to restart the hung service")
        took = time.monotonic() - started
    finally:
        holder.wait(30)
    wait_for(lambda: system.show("rotator.service", "ActiveState")["ActiveState"] == "active", timeout=30, what="active again")
    assert int(system.show("rotator.service", "NRestarts")["NRestarts"]) >= int(shown["NRestarts"]) + 1
    journal = system.journal("rotator.service")
    assert "Watchdog timeout" in journal, journal[-2000:]
    withheld = [json.loads(line) for line in lines_of(system, "rotator.service") if "daemon.watchdog_withheld" in line]
    assert withheld, "the daemon did not log why it stopped pinging"
    # The longest path: the next rotation (P = 4 s), stuck_after, WatchdogSec, TimeoutAbortSec, RestartSec.
    assert took < 4 + 2 + 3 + 2 + 1 + 10
    print(f"\n[systemd] hung step: restarted {took:.1f}s after the lock was taken")


def test_stop_exits_0_in_time_with_a_whole_state(system: SystemdNamespace) -> None:
    """systemctl stop ends the service with exit 0 and a whole state file."""
    started = time.monotonic()
    system.systemctl("stop", "rotator.service")
    took = time.monotonic() - started
    shown = system.show("rotator.service", "ActiveState", "Result", "ExecMainStatus")
    assert shown["ActiveState"] == "inactive" and shown["Result"] == "success" and shown["ExecMainStatus"] == "0", shown
    assert took < 60  # TimeoutStopSec
    raw = system.run("cat", "/var/lib/rotator/keystore/state.json").stdout.encode()
    assert parse_state(raw, "state.json").active is not None
    leftovers = system.run("sh", "-c", "ls -a /var/lib/rotator/keystore").stdout.split()
    assert not [f for f in leftovers if f.endswith(".tmp")]


def test_a_syscall_outside_the_filter_fails_with_eperm_not_a_crash(system: SystemdNamespace) -> None:
    """rotator itself makes no call outside @system-service minus @privileged and @resources
    (every other scenario runs it under the filter), so a probe unit with the service's own
    SystemCall* lines makes one: raising its own nice value (setpriority, in @resources),
    which any user may do unfiltered. The call fails with EPERM; the process is not killed."""
    for unit, expected in (("eperm-probe-filtered.service", "errno 1"), ("eperm-probe-free.service", "allowed")):
        system.systemctl("start", unit, check=False)
        shown = system.show(unit, "Result", "ExecMainStatus", "ExecMainCode")
        assert shown["Result"] == "success" and shown["ExecMainStatus"] == "0", (unit, shown)  # exited, no SIGSYS
        assert lines_of(system, unit)[-1] == expected, (unit, lines_of(system, unit))
