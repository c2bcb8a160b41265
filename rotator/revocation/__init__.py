"""Fleet-wide token revocation: records in Redis, a replica in every verifier.

Needs the ``redis`` extra (``pip install 'rotator[redis]'``)::

    from rotator.revocation import RevocationStore

    store = RevocationStore.from_url("redis://redis.internal:6379/0", prefix="rotator:")
    store.deny_token(token)                 # logout from one device
    store.revoke_subject("alice")           # logout everywhere / password reset
    store.revoke_subject("bob", until=t)    # a ban: tokens issued until t are void too
    store.bump_session("carol")             # session versions: older `sv` claims are void

    verifier = Verifier(jwks_url, ..., revocations=store)   # a local replica; no Redis per request

See the README section "Revoking tokens".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Protocol

from ..errors import ConfigError, RevocationError, RevocationInputError
from ._snapshot import SnapshotTarget, snapshot_target
from ._records import (
    MAX_AHEAD,
    MAX_ID_LENGTH,
    Cutoff,
    SessionVersion,
    Tables,
    check_log_retention,
    check_prefix,
    revoked_reason,
)
from ._urls import check_url

if TYPE_CHECKING:
    from ..config import Settings
    from ._replica import Replica
    from ._store import DEFAULT_PREFIX, RevocationStore, token_id

__all__ = [
    "RevocationStore",
    "Replica",
    "RevocationError",
    "RevocationInputError",
    "Cutoff",
    "SessionVersion",
    "Tables",
    "DEFAULT_PREFIX",
    "MAX_AHEAD",
    "MAX_ID_LENGTH",
    "check_url",
    "check_prefix",
    "check_log_retention",
    "revoked_reason",
    "token_id",
    "store_for",
    "replica_of",
    "publish_snapshot",
    "SnapshotTarget",
    "snapshot_target",
    "Hooks",
]


class Hooks(Protocol):
    """What the issuer and the verifier ask of revocation: raise ``rotator.jose.Revoked``
    (an InvalidToken) for claims that must no longer be accepted."""

    def check(self, claims: Mapping[str, Any]) -> None: ...


def replica_of(revocations: Any) -> Any:
    """The in-memory replica of a store, or the replica (or hooks object) it is given.

    Duck-typed, so that the verifier and the issuer never import redis."""
    return revocations.replica() if hasattr(revocations, "replica") else revocations


def store_for(settings: "Settings") -> "RevocationStore":
    """The store the settings name (``rotator.config.Settings``), with the policy's lifetimes:
    what the CLI writes through and the daemon follows."""
    if not settings.revocation_url:
        raise ConfigError("revocation_url is not set (--revocation-url or ROTATOR_REVOCATION_URL)")
    store_class = __getattr__("RevocationStore")
    policy = settings.policy
    store: RevocationStore = store_class.from_url(
        settings.revocation_url,
        password_file=settings.revocation_password_file,
        prefix=settings.revocation_prefix,
        snapshot=snapshot_target(settings.revocation_snapshot, settings.s3_endpoint_url),
        min_replicas=settings.revocation_min_replicas,
        log_retention=settings.revocation_log_retention,
        token_lifetime=policy.token_lifetime,
        grace=max(policy.leeway, policy.refresh_grace),
        session_lifetime=policy.refresh_max_age,
        max_clock_skew=policy.max_clock_skew,
    )
    return store


def publish_snapshot(store: "RevocationStore") -> tuple[int, str]:
    """Take a snapshot of the records in force (its log position first) and publish it where
    the store's settings say; returns (records, position). The daemon does this every
    ``revocation_snapshot_interval``; ``rotator revocation-snapshot`` does it once."""
    from ._snapshot import digest_of, dump, take, vouch_key

    if store.snapshot is None:
        raise ConfigError("revocation_snapshot is not set (--revocation-snapshot or ROTATOR_REVOCATION_SNAPSHOT)")
    snap = store.link.call(take, store.link)
    body = dump(snap)
    # Vouched for in Redis before it is published, so no replica ever reads it unvouched.
    pipe = store.client.pipeline(transaction=False)
    pipe.sadd(vouch_key(store.prefix, snap.position), digest_of(body))
    pipe.expire(vouch_key(store.prefix, snap.position), store.log_retention)
    store.link.call(pipe.execute)
    store.snapshot.write(body)
    return len(snap.records), snap.position


def __getattr__(name: str) -> Any:
    # The Redis parts load on first use, so settings code can validate a URL without redis-py.
    if name in ("RevocationStore", "DEFAULT_PREFIX", "Replica", "token_id"):
        try:
            if name == "Replica":
                from . import _replica as module
            else:
                from . import _store as module  # type: ignore[no-redef]
        except ModuleNotFoundError as e:
            if e.name != "redis":
                raise
            raise RevocationError(
                "revocation needs redis-py: pip install 'rotator[redis]'"
            ) from e
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
