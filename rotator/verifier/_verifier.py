"""Verifier: JWT verification against a JWKS fetched over HTTPS (ES256 by default).

``Verifier`` is one class, past the project's usual size, on purpose: its hot paths (a
full verify, a result-cache hit, the sidecar's reuse check) read its own attributes with
no layer between, and every call saved shows in bench/verify_callgrind.py's count."""

from __future__ import annotations

import ssl
import time
from functools import partial
from typing import Any, Callable, Collection, Container, Mapping


from ..jose import UnsupportedAlgorithm, check_claims, parse_header, split_token, verified_claims
from ..keys import ALGORITHMS, PublicKey
from ._http import check_url, fetch
from ._jwks import MAX_JWKS_BYTES
from ._keycache import CacheStats, KeyCache
from ._results import CachedResult, ResultCache, copy_json
from ._revocation import JtiDenylist, revocation_check

__all__ = ["Verifier"]

_HEADER_CACHE = 256


def _check_options(
    algorithms: tuple[str, ...],
    *,
    leeway: float,
    connect_timeout: float,
    timeout: float,
    default_max_age: float,
    min_max_age: float,
    max_max_age: float,
    max_stale: float,
    unknown_kid_cooldown: float,
    result_cache_size: int,
    result_cache_ttl: float,
    jti_denylist: Container[str] | None,
) -> None:
    """ValueError naming the first option out of range."""
    if not algorithms or any(a not in ALGORITHMS for a in algorithms):
        raise ValueError(f"algorithms {algorithms!r}: each must be one of {', '.join(ALGORITHMS)}")
    for name, value in (
        ("connect_timeout", connect_timeout),
        ("timeout", timeout),
        ("default_max_age", default_max_age),
        ("min_max_age", min_max_age),
    ):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    for name, value in (
        ("leeway", leeway),
        ("max_stale", max_stale),
        ("unknown_kid_cooldown", unknown_kid_cooldown),
        ("result_cache_size", result_cache_size),
        ("result_cache_ttl", result_cache_ttl),
    ):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    if max_max_age < min_max_age:
        raise ValueError(f"max_max_age ({max_max_age}) is below min_max_age ({min_max_age})")
    if isinstance(jti_denylist, JtiDenylist) and jti_denylist.grace < leeway:
        raise ValueError(f"jti_denylist grace ({jti_denylist.grace}s) must cover the leeway ({leeway}s)")


class Verifier:
    """Verify JWTs against the JWKS at ``jwks_url``: of the ``algorithms`` allowed (ES256 by
    default), each with a key whose JWK allows that algorithm (its ``alg``, or its type,
    curve and size when it names none; RSA keys under 2048 bits or with an exponent other
    than 65537 are skipped).

    One Verifier per JWKS URL, shared by every thread and coroutine of the process:
    it holds one key snapshot, read without locks, and runs at most one fetch at a time.

    ``verify`` returns a copy of the claims or raises a subclass of ``InvalidToken``
    (answer 401); it raises ``KeysUnavailable`` when no usable key set can be had
    (answer 503), and ``RevocationUnavailable`` (also 503) when ``revocations`` (a
    ``rotator.revocation`` store) cannot confirm its replica is current within
    ``revocation_max_staleness``. See the README sections "Verifying tokens" and
    "Revoking tokens" for every parameter.
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str | None = None,
        audience: str | Collection[str] | None = None,
        algorithms: Collection[str] = ("ES256",),
        leeway: float = 60.0,
        allow_http: bool = False,
        max_lifetime: float | None = None,
        connect_timeout: float = 2.0,
        timeout: float = 5.0,
        max_jwks_bytes: int = MAX_JWKS_BYTES,
        max_keys: int = 256,
        default_max_age: float = 300.0,
        min_max_age: float = 30.0,
        max_max_age: float = 3600.0,
        max_stale: float = 3600.0,
        unknown_kid_cooldown: float = 30.0,
        result_cache_size: int = 0,
        result_cache_ttl: float = 300.0,
        subject_not_before: Callable[[str], float | None] | None = None,
        session_version: Callable[[Mapping[str, Any]], Any] | None = None,
        session_claim: str = "sv",
        jti_denylist: Container[str] | None = None,
        revocations: Any = None,
        revocation_max_staleness: float = 30.0,
        revocation_fail_open: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        check_url(jwks_url, allow_http=allow_http)
        algorithms = tuple(algorithms)
        _check_options(
            algorithms, leeway=leeway, connect_timeout=connect_timeout, timeout=timeout, default_max_age=default_max_age,
            min_max_age=min_max_age, max_max_age=max_max_age, max_stale=max_stale,
            unknown_kid_cooldown=unknown_kid_cooldown, result_cache_size=result_cache_size,
            result_cache_ttl=result_cache_ttl, jti_denylist=jti_denylist,
        )
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience: str | frozenset[str] | None = (
            audience if audience is None or isinstance(audience, str) else frozenset(audience)
        )
        self.algorithms = algorithms
        self.leeway = float(leeway)
        self.max_lifetime = max_lifetime
        self._now = clock or time.time
        self._keys = KeyCache(
            url=jwks_url,
            fetcher=partial(
                fetch,
                jwks_url,
                connect_timeout=connect_timeout,
                timeout=timeout,
                max_bytes=max_jwks_bytes,
                ssl_context=ssl_context,
            ),
            clock=clock or time.monotonic,
            fetch_wait=timeout + 0.5,
            fetch_deadline=timeout + 0.5,
            max_stale=max_stale,
            unknown_kid_cooldown=unknown_kid_cooldown,
            min_ttl=min_max_age,
            max_ttl=max_max_age,
            default_ttl=default_max_age,
            max_keys=max_keys,
            algorithms=algorithms,
        )
        self._check_revocation, self.revocations = revocation_check(
            subject_not_before=subject_not_before,
            session_version=session_version,
            session_claim=session_claim,
            jti_denylist=jti_denylist,
            revocations=revocations,
            max_staleness=revocation_max_staleness,
            fail_open=revocation_fail_open,
            leeway=leeway,
        )
        self._revocation_max_staleness = revocation_max_staleness
        self._headers: dict[str, tuple[str, str]] = {}  # header segment -> (kid, alg)
        self._results = ResultCache(result_cache_size, result_cache_ttl, self.leeway) if result_cache_size else None
        # The hot path reads the entries directly (one dict lookup, no method call).

    # -- public API --------------------------------------------------------------------

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims (a copy), or InvalidToken / KeysUnavailable."""
        if self._results is not None:
            hit = self._from_cache(token)
            if hit.__class__ is CachedResult:  # cached, but its key needs a lookup that may fetch
                hit = self._revalidate(hit, self._keys.get(hit.kid))
            if hit is not None:
                return hit  # type: ignore[return-value]
        kid, alg, parts = self._split(token)
        return self._finish(kid, alg, self._keys.get(kid), parts)

    async def averify(self, token: str) -> dict[str, Any]:
        """``verify`` for asyncio: a needed fetch is awaited, never blocking the event loop."""
        keys = self._keys
        if self._results is not None:
            hit = self._from_cache(token)
            if hit.__class__ is CachedResult:
                # The key lookup may wait on a fetch (the set expired while idle, or the kid
                # left it): await it like the full path does, never block the loop.
                hit = self._revalidate(hit, await keys.aget(hit.kid))
            if hit is not None:
                return hit  # type: ignore[return-value]
        kid, alg, parts = self._split(token)
        return self._finish(kid, alg, keys.peek(kid) or await keys.aget(kid), parts)

    def refresh(self) -> None:
        """Fetch the JWKS now (or join the fetch in flight) and wait for it, within the timeout."""
        self._keys.refresh()

    def stats(self) -> CacheStats:
        """Fetch counters and the key set's age; for metrics and health checks."""
        return self._keys.stats()

    def health(self) -> list[str]:
        """What a health check should report (empty: all is well): the last JWKS fetch error
        while no key set has been had yet or the one held is stale, and the revocation
        replica's problems (not confirmed current, a Redis that lost its dataset, malformed
        records skipped)."""
        out: list[str] = []
        stats = self._keys.stats()
        if stats.fresh_for is None and stats.last_error:
            out.append(f"no key set yet: {stats.last_error}")
        elif stats.fresh_for is not None and stats.fresh_for < 0 and stats.last_error:
            out.append(f"key set stale for {-stats.fresh_for:.0f}s: {stats.last_error}")
        if self.revocations is not None and hasattr(self.revocations, "problems"):
            out.extend(self.revocations.problems(self._revocation_max_staleness))
        return out

    # -- internals ---------------------------------------------------------------------

    def _split(self, token: str) -> tuple[str, str, list[str]]:
        parts = split_token(token)
        known = self._headers.get(parts[0])
        if known is None:
            header = parse_header(parts[0], self.algorithms)
            return header["kid"], header["alg"], parts
        return known[0], known[1], parts

    def _finish(self, kid: str, alg: str, key: PublicKey, parts: list[str]) -> dict[str, Any]:
        header, _, signature_segment = parts
        if alg not in self._keys.algs(kid):  # strict pairing: only what the key's JWK allows
            raise UnsupportedAlgorithm(f"alg {alg} is not one key {kid} is published for")
        claims, signing_input = verified_claims(key, parts, alg, True)  # fitted: the KeySet read the key for alg
        now = self._now()
        check_claims(
            claims,
            now=now,
            leeway=self.leeway,
            audience=self.audience,
            issuer=self.issuer,
            max_lifetime=self.max_lifetime,
        )
        if self._check_revocation is not None:
            self._check_revocation(claims)
        if header not in self._headers and len(self._headers) < _HEADER_CACHE:
            self._headers[header] = (kid, alg)
        if self._results is not None:
            self._results.put(signing_input, signature_segment, kid, key, claims, now)
        return claims

    def _from_cache(self, token: Any) -> dict[str, Any] | CachedResult | None:
        """A repeat of an accepted token (same signing input, byte-identical signature), without
        waiting: its claims when the entry holds and its key is in a fresh snapshot; the entry
        when the key needs a lookup that may fetch (the caller finishes with ``_revalidate``,
        sync or awaited); None on a miss or an entry that no longer holds (the full path
        gives the precise reason).

        Entries are keyed by the SHA-256 of the signing input and hold the signature they
        were verified with; a token that reuses a cached signing input with any other
        signature misses and takes the full path, so the cache never vouches for a
        signature it has not checked.
        """
        if token.__class__ is not str:
            return None
        entry = self._results.entry_for(token)  # type: ignore[union-attr]
        if entry is None:
            return None
        key = self._keys.peek(entry.kid)
        return entry if key is None else self._revalidate(entry, key)

    def _revalidate(self, entry: CachedResult, key: PublicKey) -> dict[str, Any] | None:
        """The cached claims if the entry still holds now (``_holds``), the caller's own copy.
        None sends the token down the full path, which gives the precise reason."""
        if not self._holds(entry, key):
            return None
        return dict(entry.claims) if entry.flat else copy_json(entry.claims)

    def _holds(self, entry: CachedResult, key: PublicKey | None) -> bool:
        """Whether a cached result still holds now: the key must still be published (a
        revoked key's results stop at once) and the time checks pass again (an entry that
        fails either is dropped); then the revocation hooks run, raising Revoked."""
        now = self._now()
        if now >= entry.drop_at or (entry.nbf is not None and now + self.leeway < entry.nbf):
            self._results.drop(entry.digest)  # type: ignore[union-attr]
            return False
        if key is not entry.key and key != entry.key:
            self._results.drop(entry.digest)  # type: ignore[union-attr]
            return False
        if self._check_revocation is not None:
            self._check_revocation(entry.claims)
        return True

    # -- for callers that keep their own answers (the sidecar) ---------------------------------

    def result_of(self, token: str) -> "tuple[Verifier, CachedResult] | None":
        """This verifier and the result-cache entry an accepted ``token`` left (None: no
        cache, or not there). A caller that keeps an answer derived from the token must ask
        ``still_holds`` before each reuse."""
        entry = self._results.entry_for(token) if self._results is not None else None
        return (self, entry) if entry is not None else None

    def still_holds(self, entry: "CachedResult") -> bool:
        """Whether the accepted token behind ``entry`` would still be accepted now, by the very
        checks of a result-cache hit (``_holds``), without waiting on a fetch: False when its
        key is not in a fresh snapshot or its time is up; Revoked or RevocationUnavailable as
        ``verify`` raises them."""
        key = self._keys.peek(entry.kid)
        if key is None:
            return False
        return self._holds(entry, key)
