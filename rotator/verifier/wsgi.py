"""WSGI glue: a middleware for Flask, Django and any WSGI application.

    from rotator.verifier import Verifier
    from rotator.verifier.wsgi import BearerAuth

    app.wsgi_app = BearerAuth(app.wsgi_app, verifier, exclude=("/healthz",))   # Flask

Verified claims are in ``environ["rotator.claims"]``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from ._bearer import BadRequest, Guard, bearer_token, denial_for, excluded
from ._errors import VerifierError

__all__ = ["BearerAuth", "CLAIMS_KEY"]

CLAIMS_KEY = "rotator.claims"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class BearerAuth(Guard[WSGIApp]):
    """Require a valid bearer token on every request except the ``exclude``d paths."""

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if excluded(environ.get("PATH_INFO", ""), self.exclude):
            return self.app(environ, start_response)
        header = environ.get("HTTP_AUTHORIZATION")
        try:
            claims = self.verifier.verify(bearer_token([header] if header is not None else []))
        except (BadRequest, VerifierError) as e:
            denial = denial_for(e, self.realm, self.retry_after)
            headers = [*denial.headers, ("content-length", str(len(denial.body)))]
            start_response(f"{denial.status} {denial.reason}", [(k.title(), v) for k, v in headers])
            return [denial.body]
        environ[CLAIMS_KEY] = claims
        return self.app(environ, start_response)
