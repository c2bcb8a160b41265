"""File keystore: ``state.json`` in a private directory, compare-and-swap under a lock."""

from __future__ import annotations

import contextlib
import os
import stat
import time
from dataclasses import replace
from pathlib import Path

from .._fs import atomic_write, locked, path_from_url, remove_stale_temp_files
from ..errors import ConflictError, KeystoreError
from ..state import State, dump_state, parse_state

__all__ = ["FileKeystore"]

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"


def _check_owner(st: os.stat_result, what: str) -> None:
    if st.st_uid != os.geteuid():
        raise KeystoreError(
            f"{what} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}): "
            "run rotator as its owner, or chown it"
        )


# The filesystem's clock is read (a touch of the lock file) at most this often.
_TOUCH_EVERY = 30.0


class FileKeystore:
    """The embedded default. The directory must be 0700 and its files 0600."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.location = f"file://{directory.absolute()}"
        self._state_path = directory / STATE_FILE
        self._lock_path = directory / LOCK_FILE
        self._checked = False
        self._touched: tuple[float, float] | None = None  # (monotonic, filesystem time) of the last touch

    @classmethod
    def from_url(cls, url: str) -> "FileKeystore":
        return cls(path_from_url(url, "keystore location"))

    def _check_permissions(self, create: bool) -> None:
        d = self.directory
        try:
            st = os.stat(d)
        except FileNotFoundError:
            if not create:
                return
            try:
                os.makedirs(d, mode=0o700, exist_ok=True)  # another rotator may be creating it too
                os.chmod(d, 0o700)
            except OSError as e:
                raise KeystoreError(f"cannot create keystore directory {d}: {e.strerror}") from e
            st = os.stat(d)
        except OSError as e:
            raise KeystoreError(f"cannot access keystore directory {d}: {e.strerror}") from e
        if not stat.S_ISDIR(st.st_mode):
            raise KeystoreError(f"keystore path {d} is not a directory")
        _check_owner(st, f"keystore directory {d}")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeystoreError(
                f"keystore directory {d} is accessible to group or others (mode {mode:04o}); "
                f"run: chmod 700 {d}"
            )
        for name in (STATE_FILE, LOCK_FILE):
            path = d / name
            try:
                fst = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(fst.st_mode):
                raise KeystoreError(
                    f"keystore file {path} is a symbolic link; rotator writes it in place: "
                    "replace the link with the file it points to"
                )
            if not stat.S_ISREG(fst.st_mode):
                raise KeystoreError(f"keystore file {path} is not a regular file")
            _check_owner(fst, f"keystore file {path}")
            fmode = stat.S_IMODE(fst.st_mode)
            if fmode & 0o077:
                raise KeystoreError(
                    f"keystore file {path} is accessible to group or others (mode {fmode:04o}); "
                    f"run: chmod 600 {path}"
                )
        self._checked = True

    def _read(self) -> State | None:
        try:
            fd = os.open(self._state_path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise KeystoreError(f"cannot read {self._state_path}: {e.strerror}") from e
        try:
            with os.fdopen(fd, "rb") as fh:
                data = fh.read()
                stored_at = os.fstat(fh.fileno()).st_mtime
        except OSError as e:
            raise KeystoreError(f"cannot read {self._state_path}: {e.strerror}") from e
        return replace(parse_state(data, str(self._state_path)), stored_at=stored_at)

    def load(self) -> State | None:
        self._check_permissions(create=False)
        if any(self.directory.glob(f".{STATE_FILE}.*.tmp")):
            # A writer crashed between its temp file and its rename. Wait for any writer
            # still at work (it holds the lock), then remove what crashed ones left.
            with contextlib.suppress(OSError), locked(self._lock_path):
                remove_stale_temp_files(self._state_path)
        return self._read()

    def storage_time(self) -> float | None:
        """The filesystem's clock now (the file server's, on a network filesystem): the
        lock file's time as the filesystem sets it on a touch. None before the key set exists.

        A touch is a write, so one is made at most every ``_TOUCH_EVERY`` seconds; in between,
        the last reading is carried forward on this host's monotonic clock (which a change of
        the wall clock does not move), so a signer reloading every 2 s does not write every 2 s."""
        now = time.monotonic()
        last = self._touched
        if last is not None and now - last[0] < _TOUCH_EVERY:
            return last[1] + (now - last[0])
        try:
            os.utime(self._lock_path)
            reading = os.stat(self._lock_path).st_mtime
        except OSError:
            self._touched = None
            return None
        self._touched = (time.monotonic(), reading)
        return reading

    def _version(self) -> object:
        try:
            st = os.stat(self._state_path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load_if_changed(self, token: object) -> tuple[object, State | None] | None:
        """A stat; the document is read only when its inode, time or size changed."""
        version = self._version()
        if version == token:
            return None
        return version, self.load()

    def save(self, state: State, expected_generation: int) -> State:
        self._check_permissions(create=True)
        try:
            with locked(self._lock_path):
                # Temp files of writers that crashed before their rename hold sealed
                # private halves of keys that may since have been destroyed.
                remove_stale_temp_files(self._state_path)
                current = self._read()
                current_generation = current.generation if current else 0
                if current_generation != expected_generation:
                    raise ConflictError(
                        f"{self._state_path} changed underneath (generation {current_generation}, "
                        f"expected {expected_generation})"
                    )
                # A state may carry a generation above the stored one (recovery adopts the
                # publish target's), so a restored keystore can overtake what is published.
                stored = replace(state, generation=max(expected_generation, state.generation) + 1)
                atomic_write(self._state_path, dump_state(stored), 0o600)
                return stored
        except OSError as e:
            raise KeystoreError(f"cannot write {self._state_path}: {e.strerror}") from e
