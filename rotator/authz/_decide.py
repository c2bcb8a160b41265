"""The decision: may this request pass? One function for every protocol the sidecar speaks
(nginx, Traefik and Envoy over HTTP, Envoy over gRPC), so they never disagree.

- no bearer credentials: 401 with a bare ``WWW-Authenticate`` challenge (RFC 6750 3.1);
- malformed credentials: 400 ``invalid_request``;
- a token the verifier refuses (expired, revoked, another issuer, ...): 401 ``invalid_token``;
- a rule the token does not satisfy (a scope, a claim value), or a claim that cannot go
  into its header: 403 (``insufficient_scope`` for a scope);
- keys or revocations unavailable: 503, never an allow;
- otherwise 200, with the mapped claims as headers for the upstream.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping

from ..jose import VerifierError
from ..jose import errors as _token_errors
from ..verifier.bearer import BadRequest, NoCredentials, TokenVerifier, bearer_token, denial_for, plain_path
from ._settings import AuthzSettings, Rule

__all__ = ["Decision", "Authorizer", "REASONS", "RESULTS"]

RESULTS = {200: "allow", 400: "bad_request", 401: "deny", 403: "forbidden", 503: "unavailable"}
# Every reason a decision can carry (the metrics' label values, fixed in advance): the
# sidecar's own, and the code of every token error (rotator.jose.errors, their one home).
_TOKEN_CODES = tuple(dict.fromkeys(
    cls.code for cls in (getattr(_token_errors, name) for name in _token_errors.__all__)
    if issubclass(cls, VerifierError) and cls is not VerifierError
))
REASONS = (
    "ok", "no_credentials", "invalid_request", *_TOKEN_CODES,
    "insufficient_scope", "claim_mismatch", "claim_header", "path_not_plain", "no_original_request",
)
_NO_STORE = ("cache-control", "no-store")


class Decision:
    """An answer: its HTTP status, the reason (a metrics label, from REASONS), its headers
    (on allow, for the upstream, and cache-control; otherwise for the client) and body."""

    __slots__ = ("status", "reason", "headers", "body", "encoded", "metric")

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...], body: bytes = b"") -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.encoded: Any = None  # the HTTP layer's encoding of the headers, made once
        self.metric: int | None = None  # its counter's place in the shared metrics, found once

    def __repr__(self) -> str:
        return f"Decision({self.status}, {self.reason!r}, {self.headers!r})"


def _scopes(claims: Mapping[str, Any]) -> set[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return set(scope.split())
    found = claims.get("scp", scope)
    return {s for s in found if isinstance(s, str)} if isinstance(found, list) else set()


def _header_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return " ".join(value)
    return None


class Authorizer:
    """Decides for one worker: its verifier (one issuer or several), the rules and the claim headers."""

    def __init__(self, settings: AuthzSettings, verifier: TokenVerifier, *, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.verifier = verifier
        self.clock = clock
        self._rules: tuple[Rule, ...] = settings.rules
        self._headers = settings.headers
        self._cap = settings.max_header_bytes
        self._bound = settings.decision_max_age
        if settings.revocation_url is not None:
            self._bound = min(self._bound, settings.revocation_max_staleness)
        # Allows by the exact Authorization value (and the request, with rules), each with the
        # verifier's result-cache entry it rests on, asked on every reuse whether it still
        # holds (key, time, revocation: the verifier's own hit checks). Not with decision
        # caching, whose max-age is computed per answer.
        self._memo: dict[str, tuple[Any, Any, Decision]] = {}
        self._memo_size = settings.result_cache_size if self._bound <= 0 else 0

    @property
    def needs_request(self) -> bool:
        """Whether the decision looks at the original method and path (only rules do)."""
        return bool(self._rules)

    def reuse(self, authorization: list[str], method: str | None, path: str | None) -> Decision | None:
        """The answer kept for this exact request, if its token would still be accepted now
        (asked of the verifier each time), or a denial when the token was revoked since;
        None: decide in full (``decide``). Synchronous: no coroutine for the common case."""
        if not self._memo or len(authorization) != 1:
            return None
        memo_key = self._memo_key(authorization[0], method, path)
        hit = self._memo.get(memo_key)
        if hit is None:
            return None
        verifier, entry, decision = hit
        try:
            if verifier.still_holds(entry):
                return decision
        except VerifierError as e:
            return self._denial(e, None)
        self._memo.pop(memo_key, None)
        return None

    def _memo_key(self, authorization: str, method: str | None, path: str | None) -> str:
        return authorization if not self._rules else f"{method} {path} {authorization}"

    async def decide(self, authorization: list[str], method: str | None, path: str | None) -> Decision:
        """``authorization``: the request's Authorization header values; ``method`` and ``path``
        of the original request (None: the proxy did not say)."""
        return self.reuse(authorization, method, path) or await self.decide_in_full(authorization, method, path)

    async def decide_in_full(self, authorization: list[str], method: str | None, path: str | None) -> Decision:
        """``decide`` for a request ``reuse`` found nothing kept for: verify, then apply the
        rules; an allow is kept for reuse."""
        token = None
        try:
            token = bearer_token(authorization)
            claims = await self.verifier.averify(token)
        except (NoCredentials, BadRequest, VerifierError) as e:
            return self._denial(e, token)
        decision = self.allow(claims, method, path)
        if self._memo_size and decision.status == 200 and len(authorization) == 1:
            found = self.verifier.result_of(token)
            if found is not None:
                memo = self._memo
                if len(memo) >= self._memo_size:
                    memo.pop(next(iter(memo)))  # the oldest
                memo[self._memo_key(authorization[0], method, path)] = (*found, decision)
        return decision

    def allow(self, claims: Mapping[str, Any], method: str | None, path: str | None) -> Decision:
        """The decision for a verified token: the rules, then the claim headers."""
        if self._rules:
            if method is None or path is None:
                return Decision(400, "no_original_request", (_NO_STORE,), b'{"error":"invalid_request"}')
            path = path.split("?", 1)[0]
            if not plain_path(path, path):  # dot segments, '//', encoded characters: read alike by no two servers
                return self._forbidden("path_not_plain", "")
            for rule in self._rules:
                if rule.matches(method, path):
                    missing = [s for s in rule.scopes if s not in _scopes(claims)]
                    if missing:
                        return self._forbidden("insufficient_scope", " ".join(rule.scopes))
                    for name, wanted in rule.claims:
                        got = claims.get(name)
                        if got != wanted and not (isinstance(got, list) and wanted in got):
                            return self._forbidden("claim_mismatch", "")
                    break
        headers: list[tuple[str, str]] = []
        for claim, header in self._headers:
            value = claims.get(claim)
            if value is None:
                continue
            text = _header_value(value)
            if text is None or len(text) > self._cap or not (text.isascii() and text.isprintable()):
                return self._forbidden("claim_header", "")
            headers.append((header, text))
        if self._bound > 0:
            headers.append(self._cache_control(claims))
        return Decision(200, "ok", tuple(headers))

    def _cache_control(self, claims: Mapping[str, Any]) -> tuple[str, str]:
        left = math.floor(min(float(claims["exp"]) - self.clock(), self._bound))
        return ("cache-control", f"private, max-age={left}") if left > 0 else _NO_STORE

    def _forbidden(self, reason: str, scope: str) -> Decision:
        challenge = f'Bearer realm="{self.settings.realm}"'
        if reason == "insufficient_scope":
            challenge += f', error="insufficient_scope", scope="{scope}"'
        body = b'{"error":"insufficient_scope"}' if reason == "insufficient_scope" else b'{"error":"forbidden"}'
        return Decision(403, reason, (("www-authenticate", challenge), ("content-type", "application/json"), _NO_STORE), body)

    def _denial(self, error: Exception, token: str | None) -> Decision:
        denial = denial_for(error, self.settings.realm, 5, token)
        if isinstance(error, NoCredentials):
            reason = "no_credentials"
        elif denial.status == 400:
            reason = "invalid_request"
        else:
            reason = error.code if isinstance(error, VerifierError) and error.code in REASONS else "invalid_token"
        return Decision(denial.status, reason, (*denial.headers, _NO_STORE), denial.body)
