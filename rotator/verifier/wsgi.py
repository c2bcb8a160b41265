"""WSGI glue: a middleware for Flask, Django and any WSGI application.

    from rotator.verifier import Verifier
    from rotator.verifier.wsgi import BearerAuth

    app.wsgi_app = BearerAuth(app.wsgi_app, verifier, exclude=("/healthz",))   # Flask

``verifier`` is a ``Verifier`` or an ``Issuers`` (several trusted issuers). Verified
claims are in ``environ["rotator.claims"]``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from .bearer import BadRequest, Guard, NoCredentials, bearer_token, denial_for, excluded, is_preflight
from ..jose import VerifierError

__all__ = ["BearerAuth", "CLAIMS_KEY"]

CLAIMS_KEY = "rotator.claims"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class BearerAuth(Guard[WSGIApp]):
    """Require a valid bearer token on every request except the ``exclude``d paths (never a
    path with dot segments, '//' or encoded slashes) and CORS preflights."""

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self.exclude and excluded(
            # the request target as sent, where the server says (gunicorn; uWSGI, mod_wsgi and others)
            environ.get("PATH_INFO", ""), self.exclude, environ.get("RAW_URI") or environ.get("REQUEST_URI")
        ):
            return self.app(environ, start_response)
        if is_preflight(environ.get("REQUEST_METHOD", ""), "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ):
            return self.app(environ, start_response)
        header = environ.get("HTTP_AUTHORIZATION")
        token = None
        try:
            token = bearer_token([header] if header is not None else [])
            claims = self.verifier.verify(token)
        except (NoCredentials, BadRequest, VerifierError) as e:
            denial = denial_for(e, self.realm, self.retry_after, token)
            headers = [*denial.headers, ("content-length", str(len(denial.body)))]
            start_response(f"{denial.status} {denial.reason}", [(k.title(), v) for k, v in headers])
            return [denial.body]
        environ[CLAIMS_KEY] = claims
        return self.app(environ, start_response)
