"""Several trusted issuers behind one object, and issuers given by their URL alone (OpenID
Connect discovery).

``Issuers`` routes a token by its ``iss`` claim to that issuer's own ``Verifier`` (its key
cache, single-flight fetch, cooldown, stale bound, algorithms, audience, leeway and
revocation). The claim is read from the unverified payload only to choose among the
configured issuers: a token naming any other is refused before any fetch, and nothing
from a token ever becomes a URL. The chosen Verifier then checks everything, ``iss``
included, as it does alone.
"""

from __future__ import annotations

import ssl
from typing import Any, Mapping

from .._strict import strict_json
from ..jose import InvalidToken, WrongIssuer, decode_segment, parse_claims, split_token
from ._http import FetchError, check_url, fetch
from ._keycache import CacheStats
from ._results import CachedResult
from ._verifier import Verifier

__all__ = ["Issuers", "discover"]

_DISCOVERY_BYTES = 64 * 1024
_WELL_KNOWN = "/.well-known/openid-configuration"


class Issuers:
    """Verify tokens of several issuers (see the module docstring): ``Issuers({iss: Verifier})``.

    It has the Verifier's interface (``verify``, ``averify``, ``refresh``, ``health``,
    ``stats``), so the ASGI and WSGI glue take it as they take a Verifier. ``health`` names
    the issuer in front of each problem; ``stats`` is by issuer."""

    def __init__(self, verifiers: Mapping[str, Verifier]) -> None:
        if not verifiers:
            raise ValueError("Issuers needs at least one issuer")
        for iss, verifier in verifiers.items():
            if verifier.issuer != iss:
                raise ValueError(f"the Verifier for issuer {iss!r} checks issuer {verifier.issuer!r}: they must be the same")
        self.verifiers = dict(verifiers)

    def _route(self, token: str) -> Verifier:
        claims = parse_claims(decode_segment(split_token(token)[1], "payload"))
        iss = claims.get("iss")
        verifier = self.verifiers.get(iss) if isinstance(iss, str) else None
        if verifier is None:
            raise WrongIssuer("token issuer is not one this service trusts")
        return verifier

    def verify(self, token: str) -> dict[str, Any]:
        return self._route(token).verify(token)

    async def averify(self, token: str) -> dict[str, Any]:
        return await self._route(token).averify(token)

    def result_of(self, token: str) -> "tuple[Verifier, CachedResult] | None":
        """The issuer's Verifier and its result-cache entry for an accepted ``token``."""
        try:
            return self._route(token).result_of(token)
        except InvalidToken:
            return None

    def refresh(self) -> None:
        for verifier in self.verifiers.values():
            verifier.refresh()

    def health(self) -> list[str]:
        return [f"{iss}: {problem}" for iss, v in self.verifiers.items() for problem in v.health()]

    def stats(self) -> dict[str, CacheStats]:
        return {iss: v.stats() for iss, v in self.verifiers.items()}


def discover(
    issuer: str,
    *,
    allow_http: bool = False,
    connect_timeout: float = 2.0,
    timeout: float = 5.0,
    ssl_context: ssl.SSLContext | None = None,
    **options: Any,
) -> Verifier:
    """A Verifier for the issuer at ``issuer`` from its OpenID discovery document
    (``{issuer}/.well-known/openid-configuration``), read with the JWKS fetch's hygiene
    (https, deadlines, a size cap, no redirects). The document's ``issuer`` must equal
    ``issuer`` exactly and its ``jwks_uri`` must pass the JWKS URL rules; ``options`` go
    to the Verifier. ValueError, naming why, when the document cannot be fetched or does
    not qualify."""
    url = issuer.rstrip("/") + _WELL_KNOWN
    check_url(url, allow_http=allow_http)
    try:
        response = fetch(url, None, connect_timeout=connect_timeout, timeout=timeout, max_bytes=_DISCOVERY_BYTES,
                         ssl_context=ssl_context)
    except FetchError as e:
        raise ValueError(f"OpenID discovery for {issuer}: {e}") from e
    try:
        doc = strict_json(response.body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"OpenID discovery document at {url} is not strict JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ValueError(f"OpenID discovery document at {url} is not a JSON object")
    if doc.get("issuer") != issuer:
        raise ValueError(f"OpenID discovery document at {url} names issuer {doc.get('issuer')!r}, not {issuer!r}")
    jwks_uri = doc.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise ValueError(f"OpenID discovery document at {url} has no jwks_uri")
    check_url(jwks_uri, allow_http=allow_http)
    return Verifier(jwks_uri, issuer=issuer, allow_http=allow_http, connect_timeout=connect_timeout, timeout=timeout,
                    ssl_context=ssl_context, **options)
