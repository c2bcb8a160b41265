"""Where the revocations are: a ``revocation_url`` checked, and a Sentinel URL taken apart."""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from ..errors import RevocationInputError

__all__ = ["SentinelURL", "check_url", "is_sentinel", "sentinel_parts"]

SENTINEL_SCHEME = "redis+sentinel"


def is_sentinel(url: str) -> bool:
    """Whether ``url`` finds its primary through Sentinel (``redis+sentinel://``)."""
    return url.lower().startswith(SENTINEL_SCHEME + "://")


def check_url(url: str) -> None:
    if not isinstance(url, str) or not url:
        raise RevocationInputError("revocation_url is empty")
    if is_sentinel(url):
        sentinel_parts(url)
        return
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("redis", "rediss"):
        shown = scheme + "://" if scheme else repr(url[:40])
        raise RevocationInputError(
            f"revocation_url scheme {shown} is not supported: use redis://, rediss:// (TLS) or "
            "redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]"
        )
    parts = urlsplit(url)
    if not parts.hostname:
        raise RevocationInputError("revocation_url names no host (redis://HOST[:PORT][/DB])")
    try:
        parts.port
    except ValueError as e:
        raise RevocationInputError(f"revocation_url has a bad port: {e}") from e


class SentinelURL(NamedTuple):
    sentinels: list[tuple[str, int]]
    service: str  # the primary's name in Sentinel
    db: int
    password: str | None  # the primary's, when the URL carries it
    auth: bool  # the sentinels take the primary's password too (?sentinel_auth=yes)


def sentinel_parts(url: str) -> SentinelURL:
    """``redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB][?sentinel_auth=yes]``."""
    rest, _, query = url.split("://", 1)[1].partition("?")
    netloc, _, path = rest.partition("/")
    password = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        password = unquote(auth.partition(":")[2]) or None
    sentinels: list[tuple[str, int]] = []
    for item in filter(None, netloc.split(",")):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "26379")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RevocationInputError(f"revocation_url sentinel {item!r} is not HOST:PORT")
        sentinels.append((host.strip("[]"), int(port)))
    service, _, db = path.strip("/").partition("/")
    if not sentinels or not service:
        raise RevocationInputError("revocation_url names no sentinel or no service (redis+sentinel://HOST:PORT[,...]/SERVICE[/DB])")
    if db and not (db.isascii() and db.isdigit()):
        raise RevocationInputError(f"revocation_url database {db!r} is not a number")
    sentinel_auth = False
    for name, _, value in (item.partition("=") for item in filter(None, query.split("&"))):
        if name != "sentinel_auth" or value not in ("yes", "no"):
            raise RevocationInputError(
                f"revocation_url option {name}={value} is not known: a sentinel URL takes only sentinel_auth=yes "
                "(the sentinels need the primary's password too)"
            )
        sentinel_auth = value == "yes"
    return SentinelURL(sentinels, service, int(db or 0), password, sentinel_auth)
