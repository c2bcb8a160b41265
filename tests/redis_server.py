"""A real redis-server (Debian's package) on a free loopback port, in a temporary directory.

Started and stopped by the tests; faults are real signals: SIGKILL, SIGSTOP/SIGCONT."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import redis

from .orphans import die_with_parent
from .ports import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def module_redis(name: str) -> Any:
    """A module-scoped pytest fixture called ``name``: one RedisServer for the module's tests,
    stopped after the last (``server = module_redis("server")``)."""
    import pytest  # only the tests make fixtures; the benchmarks import this module too

    @pytest.fixture(scope="module", name=name)
    def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
        srv = RedisServer(tmp_path_factory.mktemp(name)).start()
        try:
            yield srv
        finally:
            srv.stop()

    return running


def fresh_prefix() -> str:
    """A key prefix of one test's own, so tests sharing a server never see each other's records."""
    return f"t{uuid.uuid4().hex[:8]}:"


class RedisServer:
    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        password: str | None = None,
        appendonly: bool = False,
        tls: tuple[str, str] | None = None,
        replicaof: int | None = None,
        fsync: str = "always",
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.password = password
        self.appendonly = appendonly
        self.tls = tls  # (certificate, key) PEM files: TLS only, no plain port
        self.replicaof = replicaof  # the port of a primary on 127.0.0.1 to replicate
        self.fsync = fsync  # appendfsync, with appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls[0]}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        args = [
            REDIS_SERVER,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.dir),
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.fsync,
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.replicaof:
            args += ["--replicaof", "127.0.0.1", str(self.replicaof)]
            if self.password:
                args += ["--masterauth", self.password]
        if self.tls:
            cert, key = self.tls
            args[args.index("--port") + 1] = "0"
            args += ["--tls-port", str(self.port), "--tls-cert-file", cert, "--tls-key-file", key,
                     "--tls-ca-cert-file", cert, "--tls-auth-clients", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
                time.sleep(0.02)

    def client(self, **kwargs: Any) -> "redis.Redis":
        if self.tls:
            kwargs.update(ssl=True, ssl_ca_certs=self.tls[0])
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2, protocol=2, **kwargs
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait()

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        _stop(self.proc)

    def commands(self) -> dict[str, int]:
        """Calls per command since the last CONFIG RESETSTAT, from INFO commandstats."""
        stats = self.client().info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

    def cpu_seconds(self) -> float:
        """The server's CPU time since it started (user + system, from INFO cpu)."""
        cpu = self.client().info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def reset_stats(self) -> None:
        self.client().config_resetstat()


class SentinelServer:
    """One redis-server in Sentinel mode watching the primary ``service`` on 127.0.0.1:``primary``:
    it calls the primary down after ``down_after_ms`` without an answer and promotes a replica.
    The default leaves room for the pauses of a loaded test machine: at 1 s, a Sentinel or
    primary held up that long made Sentinel fail over a second time, to a server still
    empty."""

    def __init__(
        self, directory: Path, primary: int, service: str = "revocations", down_after_ms: int = 5000,
        password: str | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.service = service
        self.primary = primary
        self.down_after_ms = down_after_ms
        self.password = password  # asked of clients, and given to the primary and its replicas
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "SentinelServer":
        config = self.dir / "sentinel.conf"  # Sentinel rewrites it as it learns the topology
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile {self.dir / 'sentinel.log'}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary} 1\n"
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.service} 10000\n"
        )
        if self.password:
            with config.open("a") as f:
                f.write(f"requirepass {self.password}\nsentinel auth-pass {self.service} {self.password}\n")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.primary_port() == self.primary:
                    return self
            except redis.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis sentinel did not start on port {self.port}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}/0"

    def primary_port(self) -> int:
        asking = redis.Redis(port=self.port, socket_timeout=2, password=self.password)
        host_port: Any = asking.sentinel_get_master_addr_by_name(self.service)
        return int(host_port[1])

    def stop(self) -> None:
        _stop(self.proc)


def _stop(proc: "subprocess.Popen[bytes] | None") -> None:
    """Terminate a server (woken first, if it was stopped), killing it after 10 s."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
