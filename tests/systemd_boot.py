"""Boot a real systemd as PID 1 of its own PID, mount, UTS, IPC and network namespaces,
isolated from the machine before it starts, and drive it with nsenter + systemctl.

Isolation, done by the boot script before systemd runs (the mount namespace is private,
so none of it is seen outside):
- tmpfs on /run, /tmp and /var/tmp; temporary directories bound over /var/lib and
  /var/log; /etc an overlay whose writes land in a temporary directory;
- the root filesystem remounted read-only in the namespace;
- a target that pulls in journald and nothing else: no tmpfiles, no getty, none of
  the image's services. systemd-tmpfiles on the default target would empty the real
  /tmp; here it never runs, and /tmp is a tmpfs anyway.

The checkout, the virtual environment's site-packages and the Python installation are
bound under /run, so the units' sandbox (ProtectHome, DynamicUser) can reach them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
PYTHON_HOME = Path(sys.base_prefix)
SITE = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
PY = f"/run/rotator-python/bin/python{sys.version_info.major}.{sys.version_info.minor}"
# The interpreter's own libpython lies under its installation (hidden by ProtectHome where it was).
ENV = "PYTHONPATH=/run/rotator-src:/run/rotator-site LD_LIBRARY_PATH=/run/rotator-python/lib"

TARGET = """[Unit]
Description=rotator test target: journald and nothing else
DefaultDependencies=no
Wants=systemd-journald.socket systemd-journald.service
AllowIsolate=yes
"""


def unavailable() -> str | None:
    """Why systemd in namespaces cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root to create mount and PID namespaces"
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/lib/systemd/systemd").exists():
        return "/lib/systemd/systemd is not installed (Debian package systemd)"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--mount-proc", "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        return f"cannot create namespaces: {probe.stderr.decode().strip()}"
    return None


class SystemdNamespace:
    def __init__(
        self, work: Path, dropins: dict[str, str], files: dict[str, str], extra_units: dict[str, str] | None = None
    ) -> None:
        self.work = work
        for name in ("varlib", "varlog", "etc-upper", "etc-work", "units"):
            (work / name).mkdir(parents=True, exist_ok=True)
        units = work / "units"
        for unit in ("rotator.service", "rotator-rotate.service", "rotator-rotate.timer"):
            shutil.copy(UNITS / unit, units / unit)
        (units / "rotator-test.target").write_text(TARGET)
        for name, text in (extra_units or {}).items():  # test-only units (and their scripts), beside the project's
            (units / name).write_text(text)
        for unit, text in dropins.items():
            d = units / f"{unit}.d"
            d.mkdir(exist_ok=True)
            (d / "test.conf").write_text(text)
        for rel, text in files.items():  # under /etc, through the overlay
            path = work / "etc-upper" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        boot = work / "boot.sh"
        boot.write_text(f"""#!/bin/sh
set -eu
mount --make-rprivate /
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/systemd/system /run/rotator-src /run/rotator-site /run/rotator-python
cp -r {units}/. /run/systemd/system/
mount --bind -o ro {ROOT} /run/rotator-src
mount --bind -o ro {SITE} /run/rotator-site
mount --bind -o ro {PYTHON_HOME} /run/rotator-python
mount --bind {work}/varlib /var/lib
mount --bind {work}/varlog /var/log
mount -t overlay overlay -o lowerdir=/etc,upperdir={work}/etc-upper,workdir={work}/etc-work /etc
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/tmp
mount -o remount,bind,ro /
mount -t cgroup2 none /sys/fs/cgroup
# Shared again, as systemd expects of a booted system (credentials are mounted in a child
# namespace and must propagate back): new peer groups inside this namespace only, since
# everything was made private from the machine first.
mount --make-rshared /
ip link set lo up 2>/dev/null || true
exec /lib/systemd/systemd --system --unit=rotator-test.target
""")
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--net", "--mount-proc", "sh", str(boot)],
            stdout=open(work / "boot.log", "w"), stderr=subprocess.STDOUT,
        )
        self.pid = self._pid1()
        self._wait_running()

    def _pid1(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            except OSError:
                children = []
            if children:
                pid = int(children[0])
                try:
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return pid
                except OSError:
                    pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"the boot script failed: {(self.work / 'boot.log').read_text()}")
            time.sleep(0.05)
        raise RuntimeError("systemd did not start")

    def _wait_running(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"systemd is not running: {state}")

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command inside every namespace of the booted system."""
        result = subprocess.run(["nsenter", "-t", str(self.pid), "-a", *args], capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}: {result.stdout}{result.stderr}")
        return result

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"-p{p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit).stdout

    def http(self, url: str) -> tuple[int, str]:
        code = (
            "import sys, urllib.request, urllib.error\n"
            "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=5); print(r.status); print(r.read().decode())\n"
            "except urllib.error.HTTPError as e: print(e.code); print(e.read().decode())\n"
        )
        out = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-n", sys.executable, "-c", code, url], capture_output=True, text=True, timeout=30
        ).stdout
        status, _, body = out.partition("\n")
        return int(status or 0), body

    def poweroff(self) -> None:
        if self.proc.poll() is None:
            self.run("systemctl", "poweroff", check=False, timeout=30)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "SystemdNamespace":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.poweroff()
