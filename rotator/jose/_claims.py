"""Claims checks (RFC 7519 section 4.1): times, issuer, audience, lifetime."""

from __future__ import annotations

from typing import Any, Collection, Mapping

from .._instants import LATEST, is_instant
from .errors import Expired, InvalidLifetime, MalformedToken, MissingClaim, NotYetValid, WrongAudience, WrongIssuer

__all__ = ["check_claims", "MAX_TIME"]

MAX_TIME = LATEST

# NumericDate claims must be real instants (``is_instant``): from the epoch to the end of
# year 9999. This refuses a float that overflowed to infinity (1e999), NaN and absurd
# magnitudes alike.


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value: Any = claims.get(name)
    if is_instant(value):
        return value  # type: ignore[no-any-return]
    if type(value) is int or type(value) is float:  # bool is not a number here (type, not isinstance)
        raise MalformedToken(f"claim {name!r} is not a time between 1970 and 9999")
    if value is None:
        return None
    raise MalformedToken(f"claim {name!r} is not a number")


def check_claims(
    claims: Mapping[str, Any],
    *,
    now: float,
    leeway: float,
    audience: str | Collection[str] | None,
    issuer: str | None,
    max_lifetime: float | None = None,
) -> None:
    """exp required; nbf/iat with leeway; exact iss; aud must name one of ``audience``.

    A token that names an audience is refused by a verifier configured without one.
    """
    exp = _number(claims, "exp")
    if exp is None:
        raise MissingClaim("token has no exp")
    if now > exp + leeway:
        raise Expired("token has expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and now + leeway < nbf:
        raise NotYetValid("token is not valid yet (nbf)")
    iat = _number(claims, "iat")
    if iat is not None and now + leeway < iat:
        raise NotYetValid("token was issued in the future (iat)")
    if "orig_iat" in claims:
        orig_iat = _number(claims, "orig_iat")
        if orig_iat is not None and now + leeway < orig_iat:
            raise NotYetValid("token's session began in the future (orig_iat)")
    if max_lifetime is not None:
        start = iat if iat is not None else nbf
        if start is None or exp - start > max_lifetime:
            raise InvalidLifetime("token lifetime exceeds the allowed maximum")
    if issuer is not None and claims.get("iss") != issuer:
        raise WrongIssuer("token issuer does not match")
    aud = claims.get("aud")
    if audience is None:
        if aud is not None:
            raise WrongAudience("token names an audience but no audience is configured to accept")
    elif type(aud) is str:
        if aud != audience if type(audience) is str else aud not in audience:
            raise WrongAudience("token audience does not match")
    else:
        wanted = (audience,) if type(audience) is str else audience
        auds = aud if type(aud) is list else ()
        if not any(type(a) is str and a in wanted for a in auds):
            raise WrongAudience("token audience does not match")
