"""What the ASGI and WSGI glue share: RFC 6750 bearer-token parsing and the error answers.

Answers name an error code only (RFC 6750 section 3.1), never the verifier's detail:
- no token, or an Authorization header that is not one ``Bearer <token>``: 401,
  ``WWW-Authenticate: Bearer realm="…", error="invalid_request"``;
- a token the verifier rejects: 401, ``error="invalid_token"``;
- keys unavailable (the JWKS host is down past the stale bound): 503 with ``Retry-After``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Iterable, TypeVar

if TYPE_CHECKING:
    from ._verifier import Verifier

AppT = TypeVar("AppT")

__all__ = ["BadRequest", "bearer_token", "Denial", "denial_for", "excluded", "Guard"]

# RFC 6750 section 2.1: credentials = "Bearer" 1*SP b64token
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)")


class BadRequest(Exception):
    """The request carries no usable bearer credentials."""


def bearer_token(values: Iterable[str]) -> str:
    """The token from the request's Authorization header values; BadRequest when there is no
    header, more than one, or one that is not exactly ``Bearer <b64token>``."""
    found = list(values)
    if not found:
        raise BadRequest("no Authorization header")
    if len(found) > 1:
        raise BadRequest("more than one Authorization header")
    match = _BEARER.fullmatch(found[0].strip())
    if match is None:
        raise BadRequest("Authorization is not a Bearer token")
    return match.group(1)


@dataclass(frozen=True)
class Denial:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def reason(self) -> str:
        return {401: "Unauthorized", 503: "Service Unavailable"}[self.status]


def denial_for(error: Exception, realm: str, retry_after: int) -> Denial:
    """The answer for a request the verifier (or the parser) turned down."""
    from ._errors import InvalidToken

    if isinstance(error, BadRequest):
        code = "invalid_request"
    elif isinstance(error, InvalidToken):
        code = "invalid_token"
    else:  # KeysUnavailable and other 503-type errors
        body = json.dumps({"error": "temporarily_unavailable"}).encode()
        return Denial(503, (("content-type", "application/json"), ("retry-after", str(retry_after))), body)
    challenge = f'Bearer realm="{realm}", error="{code}"'
    body = json.dumps({"error": code}).encode()
    return Denial(401, (("content-type", "application/json"), ("www-authenticate", challenge)), body)


def excluded(path: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``path`` is one of the excluded paths, or below one that ends in '/'."""
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in prefixes)


class Guard(Generic[AppT]):
    """What the ASGI and WSGI middlewares hold: the wrapped app, the verifier, the paths
    left open (exact, or a prefix ending in '/'), the realm and the 503 Retry-After."""

    def __init__(
        self, app: AppT, verifier: "Verifier", *, exclude: tuple[str, ...] = (), realm: str = "api", retry_after: int = 5
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.exclude = tuple(exclude)
        self.realm = realm
        self.retry_after = retry_after
