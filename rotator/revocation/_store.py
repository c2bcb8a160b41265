"""The write side: records in Redis, each write atomic with its change notice (a Lua script)."""

from __future__ import annotations

import math
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import urlsplit

import redis
from redis.commands.core import Script

from .._fs import read_secret_file
from ..clocks import host_clock_error
from ..config import DEFAULT_LOG_RETENTION
from ..errors import RevocationError, RevocationInputError
from ..jose import InvalidToken, decode_segment, parse_claims, split_token
from ._records import (
    HIGH_WATER_KEY,
    Cutoff,
    Tables,
    check_jti,
    check_log_retention,
    check_prefix,
    check_subject,
    check_time,
)
from ._redis import Link, connect, redis_target
from ._scripts import BUMP, CUTOFF, DENY
from ._snapshot import SnapshotTarget
from ._urls import check_url

if TYPE_CHECKING:
    from ._replica import Replica

__all__ = ["RevocationStore", "DEFAULT_PREFIX"]

DEFAULT_PREFIX = "rotator:"

def token_id(token: str) -> tuple[str, Any]:
    """The jti and exp a token carries (its signature unchecked); RevocationInputError when
    it does not parse or lacks either."""
    try:
        claims = parse_claims(decode_segment(split_token(token)[1], "payload"))
    except InvalidToken as e:
        raise RevocationInputError(f"token does not parse: {e}") from e
    return claims_id(claims)


def claims_id(claims: Mapping[str, Any]) -> tuple[str, Any]:
    """The jti and exp of a token's claims; RevocationInputError when either is missing."""
    if "jti" not in claims:
        raise RevocationInputError("token has no jti claim: deny it with revoke-subject or bump-session instead")
    if "exp" not in claims:
        raise RevocationInputError("token has no exp claim")
    return check_jti(claims["jti"]), claims["exp"]


_WAIT_SECONDS = 1.0


def _password(url: str, password: str | None, password_file: str | None) -> tuple[str | None, str | None]:
    """The password to send, and where it came from (for messages; never the password)."""
    if password is None and password_file is None:
        password_file = os.environ.get("ROTATOR_REVOCATION_PASSWORD_FILE") or None
    if password is not None:
        return password, "the password argument"
    if password_file is not None:
        return read_secret_file(password_file, "revocation password file", RevocationError), f"password file {password_file}"
    return None, "the URL" if urlsplit(url).password else None


def _write(client: "redis.Redis", script: Script, call: dict[str, list[Any]], min_replicas: int) -> tuple[Any, int]:
    """Run a write script; with ``min_replicas``, WAIT on the same connection (a pipeline) for
    that many Redis replicas to hold it. Returns the script's answer and the replicas that did."""
    if not min_replicas:
        return script(keys=call["keys"], args=call["args"]), 0
    pipe = client.pipeline(transaction=False)
    script(keys=call["keys"], args=call["args"], client=pipe)
    pipe.wait(min_replicas, int(_WAIT_SECONDS * 1000))
    raw, acked = pipe.execute()
    return raw, int(acked)


class RevocationStore:
    """Revocation records in Redis: what the CLI and issuers write, what replicas follow.

    ``token_lifetime`` is the longest lifetime of a token this store revokes,
    ``session_lifetime`` the longest refresh chain (``refresh_max_age``; defaults to the
    token lifetime), ``grace`` the verifiers' leeway (or the issuers' refresh grace, if
    longer); together they decide when a record can no longer affect a live token or
    chain, and Redis drops it.

    ``log_retention``: how long the change log keeps an entry (a replica away longer loads
    every record). ``snapshot``, ``spread``: the replica's snapshot to start from, and the most
    it waits at random before loading everything again while it holds records (``Replica``).
    """

    def __init__(
        self,
        client: "redis.Redis",
        *,
        prefix: str = DEFAULT_PREFIX,
        token_lifetime: float = 3600.0,
        grace: float = 60.0,
        clock: Callable[[], float] = time.time,
        target: str = "redis",
        password_source: str | None = None,
        session_lifetime: float | None = None,
        max_clock_skew: float = 60.0,
        log_retention: float = DEFAULT_LOG_RETENTION,
        snapshot: SnapshotTarget | None = None,
        spread: float = 5.0,
        min_replicas: int = 0,
    ) -> None:
        check_prefix(prefix)
        self.log_retention, self.snapshot, self.spread = check_log_retention(log_retention), snapshot, spread
        self.min_replicas = min_replicas  # Redis replicas that must hold a write before it returns (WAIT)
        if not token_lifetime > 0 or not grace >= 0:
            raise RevocationInputError("token_lifetime must be > 0 and grace >= 0")
        self.link = Link(client, prefix, target, password_source, clock)
        self.client = client
        self.prefix = prefix
        self.channel = self.link.channel
        self.token_lifetime = math.ceil(token_lifetime)
        # A cutoff or a session version must outlive every refresh chain it voids (a chain
        # lives until orig_iat + refresh_max_age), not just one token: a refresh minted by a
        # signer that had not heard it yet would otherwise outlive the record.
        self.session_lifetime = max(self.token_lifetime, math.ceil(session_lifetime or 0))
        self.grace = math.ceil(grace)
        # Times come from the Redis server's clock; a writer whose own clock is further off
        # than this is refused (the rule rotating steps and signers use), and every record
        # lives this much longer, for readers whose clocks are off by up to as much.
        self.max_clock_skew = max_clock_skew
        self.margin = math.ceil(max_clock_skew)
        self.target = target
        self.password_source = password_source
        self._clock = clock
        self._deny = client.register_script(DENY)
        self._cutoff = client.register_script(CUTOFF)
        self._bump = client.register_script(BUMP)
        self._replica: "Replica | None" = None
        self._replica_lock = threading.Lock()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        password: str | None = None,
        password_file: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        token_lifetime: float = 3600.0,
        grace: float = 60.0,
        session_lifetime: float | None = None,
        max_clock_skew: float = 60.0,
        log_retention: float = DEFAULT_LOG_RETENTION,
        snapshot: SnapshotTarget | str | None = None,
        spread: float = 5.0,
        min_replicas: int = 0,
        connect_timeout: float = 2.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.time,
        check: bool = True,
    ) -> "RevocationStore":
        """A store on the Redis at ``url`` (redis://, rediss:// or redis+sentinel://); with ``check``, one PING now,
        so a wrong URL or password is an error here and not at the first revocation."""
        check_url(url)
        password, source = _password(url, password, password_file)
        store = cls(
            connect(url, password=password, connect_timeout=connect_timeout, timeout=timeout),
            prefix=prefix,
            token_lifetime=token_lifetime,
            grace=grace,
            session_lifetime=session_lifetime,
            max_clock_skew=max_clock_skew,
            log_retention=log_retention,
            snapshot=SnapshotTarget(snapshot) if isinstance(snapshot, str) else snapshot,
            spread=spread,
            min_replicas=min_replicas,
            clock=clock,
            target=redis_target(url),
            password_source=source,
        )
        if check:
            store.ping()
        return store

    # -- writes ------------------------------------------------------------------------------

    def deny(self, jti: str, exp: float) -> int:
        """Deny the token with id ``jti`` until its ``exp`` (plus grace); returns when Redis
        drops the record. A token already past exp + grace needs nothing and writes nothing."""
        jti = check_jti(jti)
        now = self.server_time()
        exp_s = check_time(exp, "exp", now)
        expires_at = exp_s + self.grace + self.margin
        if expires_at <= now:
            return expires_at
        self._run(self._deny, f"jti:{jti}", exp_s, expires_at)
        return expires_at

    def deny_token(self, token: str) -> str:
        """Deny a token by its own jti and exp; returns the jti. The signature is not checked
        (denying a token is harmless); the token must parse and carry both claims."""
        jti, exp = token_id(token)
        self.deny(jti, exp)
        return jti

    def deny_claims(self, claims: Mapping[str, Any]) -> str:
        """Deny a token by the claims ``Verifier.verify`` returned for it: its own verified
        ``jti`` and ``exp``. What a logout endpoint calls with the caller's token, so nobody
        can deny a token they could not present; returns the jti."""
        jti, exp = claims_id(claims)
        self.deny(jti, exp)
        return jti

    def revoke_subject(self, subject: str, *, until: float | None = None) -> Cutoff:
        """Void every token of ``subject`` issued until now, or until ``until`` (a ban):
        tokens whose session started (orig_iat, else iat) before the cutoff are revoked."""
        subject = check_subject(subject)
        now = self.server_time()
        revoked_at = math.ceil(now)
        not_before = revoked_at if until is None else max(revoked_at, check_time(until, "until", now))
        expires_at = not_before + self.session_lifetime + self.grace + self.margin
        value = self._run(self._cutoff, f"sub:{subject}", revoked_at, not_before, expires_at)
        r, n, x = (int(f) for f in value.split())
        return Cutoff(subject, r, n, x)

    def bump_session(self, subject: str) -> int:
        """Make ``subject``'s current session version obsolete; returns the new version, which
        new tokens must carry (``Signer`` stamps it). Versions increase but are not consecutive."""
        subject = check_subject(subject)
        value = self._run(self._bump, f"sv:{subject}", self.session_lifetime + self.grace + self.margin, extra_keys=(HIGH_WATER_KEY,))
        return int(value.split()[0])

    def session_version(self, subject: str) -> int | None:
        """The subject's current session version, or None when no bump is in force."""
        subject = check_subject(subject)
        raw = self._call(self.client.get, self.prefix + f"sv:{subject}")
        return int(raw.split()[0]) if raw else None

    def server_time(self) -> float:
        """The Redis server's clock, which every record's times come from (as a bump's do), after
        checking this host's clock agrees with it within ``max_clock_skew``: a host minutes
        slow would leave tokens minted just before a password reset alive, a fast one would
        skip denials of tokens still valid. Refused with the rule writers and signers use."""
        seconds, micros = self._call(self.client.time)
        server = float(seconds) + float(micros) / 1e6
        error = host_clock_error(self._clock(), server, self.max_clock_skew, f"redis at {self.target}", "nothing was written")
        if error is not None:
            raise RevocationError(str(error))
        return server

    # -- reads -------------------------------------------------------------------------------

    def ping(self) -> None:
        self._call(self.client.ping)

    def records(self) -> Tables:
        """Every record in force, read from Redis now (for the CLI and admin code)."""
        return self.link.call(self.link.load)

    # -- the read side -----------------------------------------------------------------------

    def replica(self, *, heartbeat: float = 1.0, start_timeout: float = 10.0) -> "Replica":
        """This store's replica (one per store, started on first use; see ``Replica``)."""
        from ._replica import Replica  # loaded on first use: writers (the CLI) never need it

        with self._replica_lock:
            if self._replica is None or self._replica.closed:
                replica = Replica(
                    self.link, heartbeat=heartbeat, grace=self.grace, snapshot=self.snapshot, spread=self.spread
                )
                replica.start(timeout=start_timeout)
                self._replica = replica
            return self._replica

    def close(self) -> None:
        with self._replica_lock:
            if self._replica is not None:
                self._replica.close()
                self._replica = None
        self.client.close()

    # -- internals ---------------------------------------------------------------------------

    def _run(self, script: Script, suffix: str, *args: int, extra_keys: tuple[str, ...] = ()) -> str:
        """Run a write script on the record ``{prefix}{suffix}`` (and ``{prefix}{key}`` for each
        of ``extra_keys``); returns the record's new value, which this store's replica holds
        before this returns (read-your-writes: a Signer on this store signs by it at once)."""
        call = self.script_call(suffix, *args, extra_keys=extra_keys)
        raw, acked = self._call(_write, self.client, script, call, self.min_replicas)
        value = raw.decode("ascii") if isinstance(raw, bytes) else str(raw)
        replica = self._replica
        if replica is not None and not replica.closed:
            replica.apply(suffix, value)
        if acked < self.min_replicas:
            raise RevocationError(
                f"redis at {self.target} holds the revocation, but {acked} of the {self.min_replicas} replica(s) "
                f"required confirmed it within {_WAIT_SECONDS:g}s: a failover now could lose it; write it again"
            )
        return value

    def script_call(self, suffix: str, *args: int, extra_keys: tuple[str, ...] = ()) -> dict[str, list[Any]]:
        """The keys and arguments a write script takes for the record ``{prefix}{suffix}``
        (see ``_scripts``); for loading records in bulk through a pipeline as well."""
        keys = [self.prefix + suffix, self.channel, self.link.log, *(self.prefix + k for k in extra_keys)]
        return {"keys": keys, "args": [suffix, self.log_retention, *args]}

    def _call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.link.call(func, *args, **kwargs)
