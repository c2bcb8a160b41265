"""File publisher: ``jwks.json`` written atomically, never rolled back to an older generation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .._fs import atomic_write, locked, path_from_url, remove_stale_temp_files
from ..errors import PublishError
from .jwks import jwks_digest
from .target import Marker, dump_marker, dump_revoked, parse_marker, parse_revoked, refusal

__all__ = ["FilePublisher"]


class FilePublisher:
    """Publishes to ``<dir>/jwks.json``, or to the file itself when the URL ends in ``.json``."""

    def __init__(self, path: Path) -> None:
        if path.suffix != ".json":
            path = path / "jwks.json"
        self.path = path
        self.location = f"file://{path.absolute()}"
        self._generation_path = path.with_name(f".{path.name}.generation")
        self._lock_path = path.with_name(f".{path.name}.lock")
        self._revoked_path = path.with_name(f".{path.name}.revoked")

    @classmethod
    def from_url(cls, url: str) -> "FilePublisher":
        return cls(path_from_url(url, "publish location"))

    etag: str | None = None  # files have no version tags; the lock and generation file do that work

    def _prepare_directory(self) -> None:
        """Create the directory 0755 whatever the umask; refuse one that others can write to,
        where anyone could replace the key set verifiers trust."""
        d = self.path.parent
        if not d.exists():
            d.mkdir(parents=True, mode=0o755)
            os.chmod(d, 0o755)
        mode = stat.S_IMODE(os.stat(d).st_mode)
        if mode & 0o002:
            raise PublishError(
                f"publish directory {d} is writable by everyone (mode {mode:04o}), so anyone "
                f"could replace the JWKS; run: chmod o-w {d}"
            )

    def marker(self) -> Marker | None:
        """Generation, lineage and digest of what is published here (None: nothing recorded)."""
        try:
            data = self._generation_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise PublishError(f"cannot read {self._generation_path}: {e.strerror}") from e
        return parse_marker(data, str(self._generation_path))

    def write(self, body: bytes, generation: int, lineage: str | None, previous_etag: str | None = None) -> bool:
        """Write ``body`` unless the marker refuses it (``target.refusal``). True if written."""
        digest = jwks_digest(body)
        try:
            self._prepare_directory()
            with locked(self._lock_path):
                remove_stale_temp_files(self.path)
                remove_stale_temp_files(self._generation_path)
                if refusal(self.marker(), generation, lineage, digest) is not None:
                    return False
                # Marker first: a crash between the two leaves a newer marker beside an
                # older document, which only the same or a newer state can overwrite.
                atomic_write(self._generation_path, dump_marker(Marker(generation, lineage, digest)), 0o644)
                atomic_write(self.path, body, 0o644)
                return True
        except OSError as e:
            raise PublishError(f"cannot write {self.path}: {e.strerror}") from e

    def revoked(self) -> frozenset[str]:
        """Every kid recorded here as revoked."""
        try:
            return parse_revoked(self._revoked_path.read_bytes(), str(self._revoked_path))
        except FileNotFoundError:
            return frozenset()
        except OSError as e:
            raise PublishError(f"cannot read {self._revoked_path}: {e.strerror}") from e

    def record_revoked(self, kids: frozenset[str]) -> None:
        """Add ``kids`` to the revoked list (never removes one)."""
        try:
            self._prepare_directory()
            with locked(self._lock_path):
                known = self.revoked()
                if not kids <= known:
                    remove_stale_temp_files(self._revoked_path)
                    atomic_write(self._revoked_path, dump_revoked(known | kids), 0o644)
        except OSError as e:
            raise PublishError(f"cannot write {self._revoked_path}: {e.strerror}") from e

    def write_discovery(self, body: bytes) -> None:
        try:
            atomic_write(self.path.with_name("openid-configuration"), body, 0o644)
        except OSError as e:
            raise PublishError(f"cannot write discovery document beside {self.path}: {e.strerror}") from e

    def document(self) -> bytes | None:
        return self.read_back()

    def read_back(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise PublishError(f"cannot read back {self.path}: {e.strerror}") from e
