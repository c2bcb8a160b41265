"""Crash-safe file writes and advisory locks for the file backends."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_write", "locked", "path_from_url", "read_secret_file", "remove_stale_temp_files"]


def read_secret_file(path: str, what: str, error: type[Exception]) -> str:
    """A secret kept in a file: UTF-8, trailing newlines dropped, not empty, and neither
    readable by others nor writable by its group or others (0600, or 0640/0440 for a group
    the service runs in: a Kubernetes Secret mounted with defaultMode 0440, a systemd
    credential). Failures raise ``error`` with one line naming ``what`` and the path,
    never the content."""
    try:
        with open(path, "rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            if mode & 0o027:
                raise error(
                    f"{what} {path} is {'readable by others' if mode & 0o004 else 'open to others'} "
                    f"(mode {mode:04o}): run chmod 600 {path} (or 640 for a group the service runs in)"
                )
            text = f.read().decode("utf-8")
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not UTF-8 text") from e
    secret = text.rstrip("\r\n")
    if not secret:
        raise error(f"{what} {path} is empty")
    return secret


def path_from_url(url: str, what: str = "location") -> Path:
    """``file:///abs``, ``file://localhost/abs`` (RFC 8089), ``file://./rel`` or a bare path, as a Path."""
    from .errors import ConfigError

    is_url = url.startswith("file://")
    rest = url[len("file://"):] if is_url else url
    if not rest.strip():
        raise ConfigError(f"{what} is empty: give a file:// URL or a path")
    if is_url:
        if rest.startswith("localhost/"):
            rest = rest[len("localhost"):]
        elif not rest.startswith(("/", "./", "../")) and rest not in (".", ".."):
            host = rest.split("/", 1)[0]
            raise ConfigError(
                f"{what} {url!r} names the host {host!r}: file:// URLs must be local "
                "(file:///path, file://localhost/path, or file://./relative/path)"
            )
    return Path(rest)


def remove_stale_temp_files(path: Path) -> None:
    """Remove temp files ``atomic_write`` left for ``path`` when a writer crashed before
    its rename. Call only while holding the lock every writer of ``path`` takes."""
    with contextlib.suppress(OSError):
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a part.

    Temp file in the same directory, fsync, rename over, fsync the directory.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_path`` (created 0600) for the block."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
