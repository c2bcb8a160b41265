"""The Redis plumbing both sides share: one dataset under one prefix (``Link``), its client,
the one-line description of a redis-py error, the full load, the change log's positions
and the dataset marker.

The store writes through a Link and the replica follows one; neither imports the other's
module for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from ..errors import RevocationError, RevocationInputError
from ._records import DATASET_MARKER_KEY, LOG_KEY, Tables
from ._urls import is_sentinel, sentinel_parts

__all__ = ["Link", "describe", "redis_target", "connect", "position_key", "START"]

_SCAN_COUNT = 5000
_MGET_BATCH = 5000
T = TypeVar("T")
START = "0-0"  # the position before the log's first entry


def position_key(position: str) -> tuple[int, int]:
    """A stream id (``<ms>-<seq>``) as a pair that sorts as Redis orders them."""
    ms, _, seq = position.partition("-")
    return int(ms), int(seq or 0)


def redis_target(url: str) -> str:
    """host:port of a redis URL, for messages (never the password)."""
    if is_sentinel(url):
        named = sentinel_parts(url)
        return f"{named.service} (via sentinel {','.join(f'{h}:{p}' for h, p in named.sentinels)})"
    parts = urlsplit(url)
    try:
        port: int | str = parts.port or 6379
    except ValueError:
        port = "?"
    return f"{parts.hostname or 'localhost'}:{port}"


def describe(error: Exception, target: str, password_source: str | None) -> RevocationError:
    """One line for a redis-py error."""
    if isinstance(error, AuthenticationError) or (
        isinstance(error, ResponseError) and str(error).startswith(("WRONGPASS", "NOAUTH"))
    ):
        where = f" (from {password_source})" if password_source else " (none given)"
        return RevocationError(f"redis at {target} refused the password{where}")
    if isinstance(error, MasterNotFoundError):  # redis-py lists each sentinel's client in it: too long
        if "AuthenticationError" in str(error):
            return RevocationError(
                f"redis at {target}: a sentinel asks for a password; add ?sentinel_auth=yes to revocation_url "
                "so the sentinels take the primary's"
            )
        return RevocationError(f"redis at {target}: no sentinel answered with a primary of that name")
    text = " ".join(str(error).split()).rstrip(".") or type(error).__name__
    return RevocationError(f"redis at {target}: {text}")


def connect(url: str, *, password: str | None, connect_timeout: float, timeout: float) -> "redis.Redis":
    """A client for ``url`` (checked already) with these timeouts; nothing is sent yet."""
    options: dict[str, Any] = {"socket_connect_timeout": connect_timeout, "socket_timeout": timeout, "protocol": 2}
    if is_sentinel(url):
        named = sentinel_parts(url)
        password = password or named.password
        if named.auth and password is None:
            raise RevocationInputError(
                "revocation_url says sentinel_auth=yes but gives no password (revocation_password_file or the URL)"
            )
        # The sentinels answer without a password unless the URL says they take the primary's.
        asking: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": connect_timeout}
        if named.auth:
            asking["password"] = password
        sentinel = Sentinel(named.sentinels, sentinel_kwargs=asking)  # type: ignore[no-untyped-call]
        client: redis.Redis = sentinel.master_for(named.service, db=named.db, password=password, **options)  # type: ignore[no-untyped-call]
        return client
    if password is not None:
        options["password"] = password
    try:
        pool = redis.ConnectionPool.from_url(url, **options)
    except (ValueError, RedisError) as e:
        raise RevocationError(f"revocation_url is not a valid redis URL: {e}") from e
    return redis.Redis(connection_pool=pool)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@dataclass(frozen=True)
class Link:
    """One Redis dataset under one prefix: the client, the change channel, and how to name
    the server in messages (``target``, and where its password came from)."""

    client: "redis.Redis"
    prefix: str
    target: str
    password_source: str | None
    clock: Callable[[], float]
    channel: str = field(init=False)
    log: str = field(init=False)
    db: int = field(init=False)

    def __post_init__(self) -> None:
        # Redis pub/sub ignores the database number: the channel names it, so a write in
        # database 1 never reaches the replicas of database 0 under the same prefix. (The log
        # is a key, in its database like the records.)
        db = int(self.client.connection_pool.connection_kwargs.get("db", 0) or 0)
        object.__setattr__(self, "db", db)
        object.__setattr__(self, "channel", f"{self.prefix}changes@db{db}")
        object.__setattr__(self, "log", self.prefix + LOG_KEY)

    def describe(self, error: Exception) -> RevocationError:
        return describe(error, self.target, self.password_source)

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func(*args, **kwargs)``, with a redis or socket error as one RevocationError line."""
        try:
            return func(*args, **kwargs)
        except (RedisError, OSError) as e:
            raise self.describe(e) from e

    def follower_client(self) -> "redis.Redis":
        """A client of its own on the same server, for a replica's full loads."""
        return redis.Redis(
            connection_pool=redis.ConnectionPool(
                connection_class=self.client.connection_pool.connection_class, **self.follower_kwargs()
            )
        )

    def follower_connection(self) -> Any:
        """A bare connection for a subscription."""
        return self.client.connection_pool.connection_class(**self.follower_kwargs())

    def follower_kwargs(self) -> dict[str, Any]:
        """The client's connection settings (URL, TLS, password, timeouts), without retries:
        a failure here means a reconnect and a full resync, never a silent retry."""
        kwargs = dict(self.client.connection_pool.connection_kwargs)
        kwargs["retry"] = Retry(NoBackoff(), 0)
        kwargs["protocol"] = 2
        return kwargs

    def load(self, client: "redis.Redis | None" = None) -> Tables:
        """Every record in force (SCAN + MGET)."""
        tables = Tables()
        for suffix, value in self.records(client):
            tables.apply(suffix, value)
        return tables

    def records(self, client: "redis.Redis | None" = None) -> Iterator[tuple[str, str]]:
        """(suffix, value) of every string key under the prefix, as stored."""
        client = client or self.client
        skip = len(self.prefix)
        for keys in self._scan(client):
            values: list[bytes | None] = client.mget(keys)  # type: ignore[assignment]
            for key, value in zip(keys, values):
                if value is not None:
                    yield key[skip:].decode("utf-8", "replace"), value.decode("ascii", "replace")

    # -- the change log ------------------------------------------------------------------

    def log_end(self, client: "redis.Redis | None" = None) -> str:
        """The position of the log's last entry (START when it has none): taken before a load,
        so the entries after it, applied on top, cover every write the load may have missed."""
        entries = (client or self.client).xrevrange(self.log, count=1)
        return _text(entries[0][0]) if entries else START

    def resumable(self, position: str, client: "redis.Redis | None" = None) -> bool:
        """Does the log still hold every entry after ``position``? It is trimmed from its start
        only, so it does when it holds the entry at ``position`` itself. From START: when it
        never dropped an entry (Redis 7's ``max-deleted-entry-id``; older servers say no).
        A log that lost the entry (trimmed past it, or a failover to a replica that never had
        it) means a full load."""
        client = client or self.client
        if position != START:
            return bool(client.xrange(self.log, min=position, max=position, count=1))
        try:
            info = client.xinfo_stream(self.log)
        except ResponseError:
            return True  # no log: nothing was ever written or dropped (a lost dataset shows by its marker)
        deleted = info.get("max-deleted-entry-id")
        return deleted is not None and position_key(_text(deleted)) == (0, 0)

    def changes(self, position: str, count: int, client: "redis.Redis | None" = None) -> list[tuple[str, str]]:
        """Up to ``count`` log entries after ``position``: (id, "<suffix>\\n<value>")."""
        reply = (client or self.client).xread({self.log: position}, count=count)
        return entries_of(reply)

    def _scan(self, client: "redis.Redis") -> Iterator[list[bytes]]:
        pattern = _glob_escape(self.prefix) + "*"
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= _MGET_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    def ensure_marker(self, client: "redis.Redis | None" = None) -> str:
        """The prefix's dataset marker (``{prefix}dataset``, no expiry), made if missing: a
        replica that finds it gone since its last load knows Redis lost every record."""
        client = client or self.client
        key = self.prefix + DATASET_MARKER_KEY
        client.set(key, os.urandom(12).hex(), nx=True)
        value = client.get(key)
        return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def entries_of(reply: Any) -> list[tuple[str, str]]:
    """The entries of an XREAD reply on one stream (RESP2, parsed by redis-py's client or bare
    from a connection): [(id, change)], nothing for a reply with none."""
    out: list[tuple[str, str]] = []
    if not reply:
        return out
    streams = reply.items() if isinstance(reply, dict) else reply
    for stream in streams:
        for entry_id, fields in stream[1]:
            if isinstance(fields, dict):
                change = fields.get(b"r", fields.get("r"))
            else:
                pairs = dict(zip(fields[::2], fields[1::2]))
                change = pairs.get(b"r", pairs.get("r"))
            out.append((_text(entry_id), _text(change) if change is not None else ""))
    return out
