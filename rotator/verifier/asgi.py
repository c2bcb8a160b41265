"""ASGI glue: a pure ASGI middleware (Starlette, FastAPI, Litestar, Quart, …) and a
FastAPI/Starlette dependency. No framework is imported unless the dependency is used.

    from rotator.verifier import Verifier
    from rotator.verifier.asgi import BearerAuth

    verifier = Verifier("https://auth.example.com/.well-known/jwks.json",
                        issuer="https://auth.example.com", audience="orders-api")
    app = BearerAuth(app, verifier, exclude=("/healthz",))

``verifier`` is a ``Verifier`` or an ``Issuers`` (several trusted issuers). Verified
claims are in ``scope["rotator.claims"]``. Verification awaits ``averify``:
a JWKS fetch never blocks the event loop.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, MutableMapping

from .bearer import BadRequest, Guard, NoCredentials, TokenVerifier, bearer_token, denial_for, excluded, is_preflight
from ..jose import VerifierError

__all__ = ["BearerAuth", "CLAIMS_KEY", "bearer_claims"]

CLAIMS_KEY = "rotator.claims"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _preflight(scope: Scope) -> bool:
    return is_preflight(
        scope["method"], any(k.lower() == b"access-control-request-method" for k, _ in scope["headers"])
    )


class BearerAuth(Guard[ASGIApp]):
    """Require a valid bearer token on every HTTP request (and websocket handshake) except
    the ``exclude``d paths (exact, or a prefix ending in '/'; never a path with dot segments,
    '//' or encoded slashes) and CORS preflights, which go to the app (and its CORS handling)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        if self.exclude and excluded(scope.get("path", ""), self.exclude, scope.get("raw_path")):
            await self.app(scope, receive, send)
            return
        if kind == "http" and scope["method"] == "OPTIONS" and _preflight(scope):
            await self.app(scope, receive, send)
            return
        values = []
        for name, value in scope["headers"]:
            if name == b"authorization":  # names come in lower case: the ASGI spec requires it
                values.append(value.decode("latin-1"))
        token = None
        try:
            token = bearer_token(values)
            claims = await self.verifier.averify(token)
        except (NoCredentials, BadRequest, VerifierError) as e:
            await self._deny(e, scope, send, token)
            return
        scope[CLAIMS_KEY] = claims
        await self.app(scope, receive, send)

    async def _deny(self, error: Exception, scope: Scope, send: Send, token: str | None) -> None:
        denial = denial_for(error, self.realm, self.retry_after, token)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in denial.headers]
        headers.append((b"content-length", str(len(denial.body)).encode()))
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008 if denial.status == 401 else 1013})
            return
        await send({"type": "http.response.start", "status": denial.status, "headers": headers})
        await send({"type": "http.response.body", "body": denial.body})


def bearer_claims(verifier: TokenVerifier, *, realm: str = "api", retry_after: int = 5) -> Callable[..., Awaitable[dict[str, Any]]]:
    """A FastAPI/Starlette dependency giving the verified claims (``Depends(bearer_claims(verifier))``).

    Uses the claims BearerAuth already put in the scope, or verifies the request's token
    itself; raises ``HTTPException`` with the same answers as the middleware.
    """
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    async def claims(request: Request) -> dict[str, Any]:
        found = request.scope.get(CLAIMS_KEY)
        if found is not None:
            return dict(found)
        token = None
        try:
            token = bearer_token(request.headers.getlist("authorization"))
            return await verifier.averify(token)
        except (NoCredentials, BadRequest, VerifierError) as e:
            denial = denial_for(e, realm, retry_after, token)
            headers = {k: v for k, v in denial.headers if k != "content-type"}
            raise HTTPException(status_code=denial.status, detail=denial.code or "unauthorized", headers=headers) from None

    # This module defers annotations and imports Request lazily: give the framework the class.
    claims.__annotations__ = {"request": Request, "return": dict}
    return claims
