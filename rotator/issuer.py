"""Token issuers sign with the key the keystore says is active now, and with no other."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Callable, Mapping

from cryptography.hazmat.primitives.asymmetric import ec

from ._b64 import b64url_encode
from .config import Policy
from .durations import format_duration
from .errors import NoActiveKey, RotatorError
from .jose import sign_es256
from .keys import private_from_bytes
from .keystore import Keystore
from .publish import Publisher, jwks_kids
from .sealing import open_sealer
from .state import KeyRecord, State

__all__ = ["Signer"]

_SIGNER_CLAIMS = ("iat", "exp", "nbf", "jti", "orig_iat")


def _check_claims(claims: Mapping[str, Any], set_elsewhere: Mapping[str, object]) -> None:
    """Refuse, never drop: claims the signer sets, claims also given by argument or by the
    signer's issuer, and values that are not plain finite JSON."""
    for name in _SIGNER_CLAIMS:
        if name in claims:
            raise ValueError(f"claim {name!r} is set by the signer")
    for name, value in set_elsewhere.items():
        if name in claims and value is not None:
            raise ValueError(f"claim {name!r} is given twice: as a claim and by the signer's {name} setting")
    try:
        json.dumps(claims, allow_nan=False)
    except ValueError as e:
        raise ValueError(f"claims hold a number that is not finite ({e})") from e
    except TypeError as e:
        raise ValueError(f"claims hold a value that is not JSON ({e})") from e


class Signer:
    """Signs claims with the active key.

    The state is re-read whenever the keystore's version token changes (a stat
    for the file keystore), so a retired key stops signing at once. Given the
    ``publisher``, each new state's active key is also looked up in the JWKS the
    publish target serves, and a key it lacks (a keystore restored from an old
    backup) never signs.
    """

    def __init__(
        self,
        keystore: Keystore,
        policy: Policy,
        *,
        passphrase: str | None = None,
        allow_plaintext: bool = False,
        issuer: str | None = None,
        clock: Callable[[], float] = time.time,
        kms_key_id: str | None = None,
        publisher: Publisher | None = None,
        passphrase_source: str = "ROTATOR_KEYSTORE_PASSPHRASE",
    ) -> None:
        self._passphrase_source = passphrase_source
        self._kms_key_id = kms_key_id
        self._publisher = publisher
        self._keystore = keystore
        self._policy = policy
        self._passphrase = passphrase
        self._allow_plaintext = allow_plaintext
        self._issuer = issuer
        self._clock = clock
        self._lock = threading.Lock()
        self._version: object = object()
        self._current: tuple[KeyRecord, ec.EllipticCurvePrivateKey] | None = None

    def _load(self) -> tuple[KeyRecord, ec.EllipticCurvePrivateKey]:
        with self._lock:
            version = self._keystore.version()
            if version != self._version or self._current is None:
                self._current = self._active_key(self._keystore.load())
                self._version = version
            return self._current

    def _active_key(self, state: State | None) -> tuple[KeyRecord, ec.EllipticCurvePrivateKey]:
        where = self._keystore.location
        active = state.active if state else None
        if state is None or active is None:
            raise NoActiveKey(f"no active signing key in {where}: run `rotator rotate` first")
        if active.published_at is None or active.private is None:
            raise NoActiveKey(f"active key {active.kid} in {where} is unconfirmed or has no private half")
        self._check_published(active)
        if self._current is not None and self._current[0].kid == active.kid:
            return self._current
        sealer = open_sealer(
            state.encryption,
            self._passphrase,
            self._allow_plaintext,
            kms_key_id=self._kms_key_id,
            passphrase_source=self._passphrase_source,
        )
        return active, private_from_bytes(sealer.unseal(active.private, state.keyset, active.kid))

    def _check_published(self, active: KeyRecord) -> None:
        if self._publisher is None:
            return
        try:
            body = self._publisher.read_back()
        except RotatorError:
            return  # a publish outage: the state's own record of the confirmed publication stands
        try:
            served = jwks_kids(body) if body is not None else []
        except (ValueError, KeyError, TypeError):
            served = []
        if active.kid not in served:
            raise NoActiveKey(
                f"active key {active.kid} is not in the JWKS served at {self._publisher.location}: the keystore "
                "may have been restored from a backup or recreated; run `rotator recover`"
            )

    @property
    def kid(self) -> str:
        return self._load()[0].kid

    def sign(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        subject: str | None = None,
        audience: str | list[str] | None = None,
        ttl: float | None = None,
    ) -> str:
        """Sign ``claims`` plus iat, exp, jti (and iss, sub, aud when given)."""
        lifetime = self._policy.token_lifetime if ttl is None else ttl
        if not 0 < lifetime <= self._policy.token_lifetime:
            raise ValueError(
                f"ttl {format_duration(lifetime)} must be positive and at most token_lifetime "
                f"({format_duration(self._policy.token_lifetime)}), which the retirement window is sized for"
            )
        if lifetime != int(lifetime):
            raise ValueError(f"ttl {format_duration(lifetime)}: token lifetimes are whole seconds (exp is an integer)")
        body: dict[str, Any] = dict(claims or {})
        _check_claims(body, {"iss": self._issuer, "sub": subject, "aud": audience})
        record, private = self._load()
        now = int(self._clock())
        body.update(iat=now, exp=now + int(lifetime), jti=b64url_encode(os.urandom(16)))
        if self._issuer is not None:
            body["iss"] = self._issuer
        if subject is not None:
            body["sub"] = subject
        if audience is not None:
            body["aud"] = audience
        return sign_es256(private, record.kid, body)
