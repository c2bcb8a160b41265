"""What the ASGI and WSGI glue share: RFC 6750 bearer-token parsing, the error answers, the
paths left open and the CORS preflights let through.

Answers follow RFC 6750 section 3.1 and name an error code only, never the verifier's detail:
- no credentials (no Authorization header, or another scheme such as ``Basic``): 401 with
  ``WWW-Authenticate: Bearer realm="…"`` and no error code, as the RFC asks of a request
  that carries no authentication information;
- a malformed request (a ``Bearer`` header without one b64token, or several Authorization
  headers): 400, ``error="invalid_request"``;
- a token the verifier rejects: 401, ``error="invalid_token"``;
- keys unavailable (the JWKS host is down past the stale bound) or revocations not
  confirmed current: 503 with ``Retry-After``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

AppT = TypeVar("AppT")

__all__ = [
    "TokenVerifier", "BadRequest", "NoCredentials", "bearer_token", "well_formed", "Denial", "denial_for", "plain_path",
    "excluded", "is_preflight", "Guard",
]

# RFC 6750 section 2.1: credentials = "Bearer" 1*SP b64token
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class TokenVerifier(Protocol):
    """What the glue needs of a verifier: a ``Verifier``, or an ``Issuers`` routing among several."""

    def verify(self, token: str) -> dict[str, Any]: ...

    async def averify(self, token: str) -> dict[str, Any]: ...

    def health(self) -> list[str]: ...

    def result_of(self, token: str) -> Any: ...


class NoCredentials(Exception):
    """The request carries no bearer credentials: no Authorization header, or another scheme."""


class BadRequest(Exception):
    """The request's bearer credentials are malformed, or it carries several Authorization headers."""


def bearer_token(values: list[str]) -> str:
    """The token from the request's Authorization header values: NoCredentials when there is no
    header or its scheme is not Bearer; BadRequest when there is more than one header, or a
    Bearer header with no token after its spaces.

    The token's characters are checked only if the verifier rejects it (``denial_for``): a
    token the verifier accepts is base64url and dots, so always a b64token; this keeps a
    regular expression off the hot path."""
    if len(values) != 1:
        if values:
            raise BadRequest("more than one Authorization header")
        raise NoCredentials("no Authorization header")
    value = values[0].strip()
    if value[:7].lower() == "bearer ":
        return value[7:].lstrip(" ")  # not empty: the value was stripped
    scheme = value.split(None, 1)[0] if value else ""
    if scheme.lower() != "bearer":
        raise NoCredentials("Authorization is not a Bearer credential")
    raise BadRequest("Authorization: Bearer without a token, or not followed by a space")


def well_formed(token: str) -> bool:
    """Whether ``token`` is one b64token (RFC 6750 section 2.1)."""
    return _B64TOKEN.fullmatch(token) is not None


@dataclass(frozen=True)
class Denial:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    code: str  # the RFC 6750 error code, or "" where none is sent

    @property
    def reason(self) -> str:
        return {400: "Bad Request", 401: "Unauthorized", 503: "Service Unavailable"}[self.status]


_JSON = ("content-type", "application/json")


def denial_for(error: Exception, realm: str, retry_after: int, token: str | None = None) -> Denial:
    """The answer for a request the verifier (or the parser) turned down; ``token`` is what
    ``bearer_token`` gave, if anything: a rejected token that is not one b64token makes the
    request malformed (400), not the token invalid (401)."""
    from ..jose import InvalidToken

    if isinstance(error, NoCredentials):
        return Denial(401, (("www-authenticate", f'Bearer realm="{realm}"'),), b"", "")
    if isinstance(error, BadRequest) or (isinstance(error, InvalidToken) and token is not None and not well_formed(token)):
        status, code = 400, "invalid_request"
    elif isinstance(error, InvalidToken):
        status, code = 401, "invalid_token"
    else:  # KeysUnavailable, RevocationUnavailable and other 503-type errors
        code = "temporarily_unavailable"
        return Denial(503, (_JSON, ("retry-after", str(retry_after))), json.dumps({"error": code}).encode(), code)
    challenge = f'Bearer realm="{realm}", error="{code}"'
    return Denial(status, (_JSON, ("www-authenticate", challenge)), json.dumps({"error": code}).encode(), code)


def plain_path(path: str, raw: str | bytes | None) -> bool:
    """Whether a request path means what it says to every downstream: absolute, with no
    empty, dot or dot-parameter (``..;``) segment, no backslash, and no encoded slash,
    backslash, dot or percent sign in the bytes the client sent. A path that is not plain
    is never excluded: some server, proxy or framework behind may resolve it elsewhere."""
    if not path.startswith("/") or "\\" in path or "%" in path:
        return False
    for segment in path[1:].split("/")[:-1] if path.endswith("/") else path[1:].split("/"):
        if segment.split(";", 1)[0] in ("", ".", ".."):
            return False
    if raw is not None:
        if isinstance(raw, bytes):
            raw = raw.decode("latin-1")
        lowered = raw.split("?", 1)[0].lower()
        if any(code in lowered for code in ("%2f", "%5c", "%2e", "%25")):
            return False
    return True


def excluded(path: str, prefixes: tuple[str, ...], raw: str | bytes | None = None) -> bool:
    """Whether ``path`` is one of the excluded paths, or below one that ends in '/'; never when
    the path is not plain (dot segments, '//', encoded slashes and dots: see ``plain_path``).
    ``raw`` is the request target as the client sent it, where the server gives it (ASGI
    ``raw_path`` bytes, WSGI ``RAW_URI`` or ``REQUEST_URI``); a query string is ignored."""
    if not any(path == p or (p.endswith("/") and path.startswith(p)) for p in prefixes):
        return False
    return plain_path(path, raw)


def is_preflight(method: str, has_request_method: bool) -> bool:
    """A CORS preflight: ``OPTIONS`` with ``Access-Control-Request-Method``. Browsers send it
    without credentials (Fetch standard), so it passes to the app's CORS handling."""
    return method == "OPTIONS" and has_request_method


class Guard(Generic[AppT]):
    """What the ASGI and WSGI middlewares hold: the wrapped app, the verifier, the paths
    left open (exact, or a prefix ending in '/'), the realm and the 503 Retry-After."""

    def __init__(
        self, app: AppT, verifier: TokenVerifier, *, exclude: tuple[str, ...] = (), realm: str = "api", retry_after: int = 5
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.exclude = tuple(exclude)
        self.realm = realm
        self.retry_after = retry_after
