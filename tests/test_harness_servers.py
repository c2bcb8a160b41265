"""The servers the tests start do not outlive a test process that is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]

START = {
    "redis-server": "from tests.redis_server import RedisServer as S",
    "weed": "from tests.seaweed import SeaweedServer as S",
}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has died


@pytest.mark.parametrize("server", sorted(START))
def test_server_dies_with_a_killed_test_process(tmp_path: Path, server: str) -> None:
    """A test server started by a test process dies with it when that process is killed."""
    code = f"{START[server]}; import sys, time; s = S(sys.argv[1]).start(); print(s.proc.pid, flush=True); time.sleep(120)"
    parent = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "data")], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert _alive(pid) and server in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        wait_for(lambda: not _alive(pid), timeout=10, what=f"{server} (pid {pid}) to die with its parent")
    finally:
        parent.kill()
        parent.wait()
