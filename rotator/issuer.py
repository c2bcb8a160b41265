"""Token issuers sign with the key the keystore says is active now, and with no other."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Mapping

from cryptography.hazmat.primitives.asymmetric import ec

from ._b64 import b64url_encode
from .config import Policy
from .durations import format_duration
from .errors import NoActiveKey
from .jose import sign_es256
from .keys import private_from_bytes
from .keystore import Keystore
from .sealing import open_sealer
from .state import KeyRecord, State

__all__ = ["Signer"]

_RESERVED = frozenset({"iat", "exp", "iss", "sub", "aud", "jti", "nbf"})


class Signer:
    """Signs claims with the active key.

    The state is re-read whenever the keystore's version token changes (a stat
    for the file keystore), so a retired key stops signing at once.
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
    ) -> None:
        self._kms_key_id = kms_key_id
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
        if self._current is not None and self._current[0].kid == active.kid:
            return self._current
        sealer = open_sealer(state.encryption, self._passphrase, self._allow_plaintext, kms_key_id=self._kms_key_id)
        return active, private_from_bytes(sealer.unseal(active.private, state.keyset, active.kid))

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
        record, private = self._load()
        now = int(self._clock())
        body: dict[str, Any] = dict(claims or {})
        for name in _RESERVED & body.keys():
            if name in ("iat", "exp", "jti", "nbf"):
                raise ValueError(f"claim {name!r} is set by the signer")
        body.update(iat=now, exp=now + int(lifetime), jti=b64url_encode(os.urandom(16)))
        if self._issuer is not None:
            body["iss"] = self._issuer
        if subject is not None:
            body["sub"] = subject
        if audience is not None:
            body["aud"] = audience
        return sign_es256(private, record.kid, body)
