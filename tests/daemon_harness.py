"""The daemon as a real subprocess, for the tests that run `rotator run`: its policy in
seconds, its /metrics and /healthz over HTTP, a stand-in for systemd's notify socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from rotator.keystore import FileKeystore
from rotator.state import State

from .helpers import PASSPHRASE
from .ports import free_port

# A policy in seconds: P=4 s, M=1 s, T=2 s, L=1 s, W=6 s.
SHORT = [
    "--rotation-period", "4s", "--max-age", "2s", "--token-lifetime", "2s",
    "--leeway", "1s", "--retirement-window", "6s", "--private-key-grace", "2s",
]
ROTATOR = [sys.executable, "-m", "rotator.cli"]


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def prom_values(text: str, key_set: str = "default") -> dict[str, float]:
    """Prometheus exposition text as {'name{label=value,...}': value}, labels sorted: the
    samples of ``key_set``, without that label (every sample carries one)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            assert "key_set" in labels, sample
            if labels.pop("key_set") != key_set:
                continue
            label = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            values[f"{sample.name}{{{label}}}" if label else sample.name] = sample.value
    return values


def metrics(port: int, key_set: str = "default") -> dict[str, float]:
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return prom_values(body.decode(), key_set)


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.extend(self.sock.recv(4096).decode().splitlines())
            except (TimeoutError, BlockingIOError):
                return self.messages

    def has(self, line: str) -> bool:
        return line in self.drain()

    def close(self) -> None:
        self.sock.close()


class RunningDaemon:
    def __init__(
        self, tmp: Path, *extra: str, log_format: str = "json", watchdog_usec: int = 1_000_000, env: dict[str, str] | None = None,
        locations: bool = True,
    ) -> None:
        """``locations``: set ROTATOR_KEYSTORE and ROTATOR_PUBLISH to this test's directories
        (off for a settings file that names key sets, each with its own)."""
        self.tmp = tmp
        self.keystore = tmp / "keystore"
        self.public = tmp / "public"
        self.port = free_port()
        self.notify = NotifySocket(tmp / "notify.sock")
        self.log_path = tmp / "daemon.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTATOR_", "NOTIFY_", "WATCHDOG_"))}
        self.env.update(
            ROTATOR_KEYSTORE=f"file://{self.keystore}",
            ROTATOR_PUBLISH=f"file://{self.public}",
            ROTATOR_KEYSTORE_PASSPHRASE=PASSPHRASE,
            ROTATOR_ISSUER="https://issuer.test",
            NOTIFY_SOCKET=str(self.notify.path),
            WATCHDOG_USEC=str(watchdog_usec),
        )
        self.env.update(env or {})
        if not locations:
            del self.env["ROTATOR_KEYSTORE"], self.env["ROTATOR_PUBLISH"]
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [*ROTATOR, "run", *SHORT, "--metrics-port", str(self.port), "--log-format", log_format, *extra],
            env=self.env, stdout=self.log_file, stderr=subprocess.STDOUT,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ROTATOR, *args, *SHORT], env=self.env, capture_output=True, text=True, timeout=60)

    def state(self) -> State | None:
        return FileKeystore(self.keystore).load()

    def jwks(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.public / "jwks.json").read_text())
        return doc

    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=20)
        self.log_file.close()
        self.notify.close()
        return code
