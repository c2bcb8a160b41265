"""The key lifecycle as pure functions of (state, policy, now).

Nothing here reads a clock, a file or the network. New keys come from an
injected factory, so the planner is deterministic for a given factory.

Longer than the project's usual module on purpose: every transition a key can take
(plan, retire, revoke, confirm, adopt, mark damaged, clamp future times) is here, each
a short pure function, so the lifecycle's invariants can be checked in one read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

from .config import Policy
from .errors import LifecycleError, UnknownKey
from .keys import ALG, PublicJWK
from .state import KeyRecord, KeyState, State

__all__ = [
    "Event",
    "Plan",
    "KeyFactory",
    "plan",
    "retire",
    "revoke",
    "record_confirmation",
    "next_due",
    "activation_at",
    "adopt",
    "mark_damaged",
    "future_skew",
    "clamp_future",
]

KeyFactory = Callable[[float], KeyRecord]


@dataclass(frozen=True)
class Event:
    """Something the planner did or noticed; ``name`` is a stable log event name."""

    name: str
    kid: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        parts = [self.name] + ([f"kid={self.kid}"] if self.kid else []) + ([self.detail] if self.detail else [])
        return " ".join(parts)


@dataclass(frozen=True)
class Plan:
    state: State
    events: tuple[Event, ...] = field(default=())

    @property
    def warnings(self) -> tuple[Event, ...]:
        return tuple(e for e in self.events if e.name in _WARNINGS)


_WARNINGS = {
    "rotator.rotation_overdue",
    "rotator.no_active_key",
    "rotator.pending_key_damaged",
    "rotator.clock_skew_repaired",
    "rotator.key_not_adopted",
}


def _effective_now(state: State, now: float) -> float:
    # A planner running late (slow host, skewed clock) must not write times
    # before ones already recorded: state time only moves forward.
    return max(now, state.updated_at)


def _replace_keys(state: State, changed: Iterable[KeyRecord]) -> State:
    by_kid = {k.kid: k for k in changed}
    return state.with_keys(by_kid.pop(k.kid, k) for k in state.keys)


def _promotion_candidate(state: State, now: float, settle: float) -> KeyRecord | None:
    """Oldest pending key whose publication was confirmed at least ``settle`` ago."""
    for key in state.pending:
        if key.published_at is not None and key.published_at + settle <= now:
            return key
    return None


def plan(state: State, policy: Policy, now: float, new_key: KeyFactory, *, force: bool = False) -> Plan:
    """Compute the next state. Idempotent: planning the result again at the same ``now`` changes nothing."""
    now = _effective_now(state, now)
    events: list[Event] = []
    keys = list(state.keys)

    # Private halves of retired keys go after a short grace; nothing signs with them.
    for i, key in enumerate(keys):
        if key.state is KeyState.RETIRED and key.private is not None and key.retired_at is not None:
            if now >= key.retired_at + policy.private_key_grace:
                keys[i] = key.with_(private=None, private_destroyed_at=now)
                events.append(Event("rotator.private_key_destroyed", key.kid))
    # Retired keys leave the JWKS once every token they signed is past exp + L (+ M of caching).
    for i, key in enumerate(keys):
        if key.state is KeyState.RETIRED and key.retired_at is not None:
            if now >= key.retired_at + policy.retirement_window:
                keys[i] = key.with_(removed_at=now, private=None, private_destroyed_at=key.private_destroyed_at or now)
                events.append(Event("rotator.key_removed", key.kid))
    # Metadata of keys gone from the JWKS is kept for audit, then purged.
    kept = []
    for key in keys:
        gone_at = key.revoked_at if key.revoked_at is not None else key.removed_at
        if gone_at is not None and now >= gone_at + policy.audit_retention:
            events.append(Event("rotator.key_purged", key.kid))
            continue
        kept.append(key)
    state = state.with_keys(kept)

    active = state.active
    if active is None:
        # Bootstrap (or recovery after revoking the active key with no published
        # successor): no JWKS copy that verifiers hold can lack a key they have
        # never been sent a token for, so confirmation alone is enough.
        candidate = _promotion_candidate(state, now, 0.0)
        if candidate is not None:
            ever_active = any(k.activated_at is not None for k in state.keys)
            reason = "promotion" if ever_active else "bootstrap"
            state = _replace_keys(state, [candidate.with_(activated_at=now, activation=reason)])
            events.append(Event("rotator.key_activated", candidate.kid, f"reason={reason}"))
        elif state.keys:
            events.append(Event("rotator.no_active_key", None, "waiting for a confirmed publication"))
    else:
        assert active.activated_at is not None
        candidate = _promotion_candidate(state, now, policy.max_age)
        if candidate is None:
            if now >= active.activated_at + policy.rotation_period:
                events.append(
                    Event(
                        "rotator.rotation_overdue",
                        active.kid,
                        "no pending key has been confirmed published for max_age; current key keeps signing",
                    )
                )
        else:
            # The instant the Signer switches at, by the same function: never before it
            # (unless forced), so no token is signed by a key a cached JWKS may lack.
            promote_at = activation_at(active, candidate, policy)
            if force or (promote_at is not None and now >= promote_at):
                state = _replace_keys(
                    state,
                    [
                        active.with_(retired_at=now, retirement="rotation"),
                        candidate.with_(activated_at=now, activation="rotation"),
                    ],
                )
                events.append(Event("rotator.key_retired", active.kid, "reason=rotation"))
                events.append(Event("rotator.key_activated", candidate.kid, "reason=rotation"))

    # Keep a published successor in waiting; with no active key yet, one to
    # activate and one to follow it, so a fresh key set publishes two keys.
    wanted = 1 if state.active is not None else 2
    new = [new_key(now) for _ in range(max(0, wanted - len(state.pending)))]
    for key in new:
        events.append(Event("rotator.key_created", key.kid))
    if new:
        state = state.with_keys(state.keys + tuple(new))

    if any(e.name not in _WARNINGS for e in events):
        state = replace(state, updated_at=now)
    return Plan(state=state, events=tuple(events))


def retire(state: State, kid: str, now: float, policy: Policy) -> Plan:
    """Manual retirement: stop signing now, stay published for the retirement window."""
    now = _effective_now(state, now)
    key = state.get(kid)
    if key is None:
        raise UnknownKey(f"no key with kid {kid!r} in the keystore")
    if key.state not in (KeyState.PENDING, KeyState.ACTIVE):
        raise LifecycleError(f"key {kid} is already {key.state.value}")
    changed = [key.with_(retired_at=now, retirement="manual")]
    events = [Event("rotator.key_retired", kid, "reason=manual")]
    if key.state is KeyState.ACTIVE:
        successor = _promotion_candidate(state, now, policy.max_age)
        if successor is None:
            raise LifecycleError(
                f"cannot retire active key {kid}: no successor has been published for max_age yet; "
                "run `rotator rotate` and retry later, or use `rotator revoke` in an emergency"
            )
        changed.append(successor.with_(activated_at=now, activation="promotion"))
        events.append(Event("rotator.key_activated", successor.kid, "reason=promotion"))
    return Plan(state=replace(_replace_keys(state, changed), updated_at=now), events=tuple(events))


def revoke(state: State, kid: str, now: float) -> Plan:
    """Emergency: out of the JWKS now, private half destroyed, published successor promoted at once."""
    now = _effective_now(state, now)
    key = state.get(kid)
    if key is None:
        raise UnknownKey(f"no key with kid {kid!r} in the keystore")
    if key.state is KeyState.REVOKED:
        return Plan(state=state, events=(Event("rotator.key_already_revoked", kid),))
    was_active = key.state is KeyState.ACTIVE
    changed = [key.with_(revoked_at=now, revocation="manual", private=None,
                         private_destroyed_at=key.private_destroyed_at or now)]
    events = [Event("rotator.key_revoked", kid)]
    if was_active:
        # Verifiers refetch on an unknown kid, so a confirmed publication is enough here.
        successor = _promotion_candidate(state, now, 0.0)
        if successor is not None:
            changed.append(successor.with_(activated_at=now, activation="promotion"))
            events.append(Event("rotator.key_activated", successor.kid, "reason=promotion"))
        else:
            events.append(Event("rotator.no_active_key", None, "no published successor; next rotate creates one"))
    return Plan(state=replace(_replace_keys(state, changed), updated_at=now), events=tuple(events))


def record_confirmation(
    state: State, kids: Iterable[str], digest: str, now: float, etag: str | None = None
) -> Plan:
    """Record that a JWKS with ``digest`` holding ``kids`` was read back from the publish target."""
    now = _effective_now(state, now)
    seen = set(kids)
    changed = [
        k.with_(published_at=now)
        for k in state.keys
        if k.kid in seen and k.published_at is None and k.state in (KeyState.PENDING, KeyState.ACTIVE)
    ]
    events = tuple(Event("rotator.publication_confirmed", k.kid) for k in changed)
    new = _replace_keys(state, changed)
    new = replace(new, published_digest=digest, published_confirmed_at=now, published_etag=etag)
    if changed or state.published_digest != digest or state.published_etag != etag:
        new = replace(new, updated_at=now)
    return Plan(state=new, events=events)


def activation_at(active: KeyRecord, successor: KeyRecord, policy: Policy) -> float | None:
    """When the planner promotes ``successor`` over ``active``: once the active key has served
    its rotation period and the successor's publication has been confirmed for max_age (every
    cached JWKS holds it). The Signer switches keys at this same instant. None while either
    time is unknown."""
    if active.activated_at is None or successor.published_at is None:
        return None
    return max(active.activated_at + policy.rotation_period, successor.published_at + policy.max_age)


def next_due(state: State, policy: Policy) -> float | None:
    """The earliest instant at which planning would change something (None: nothing scheduled)."""
    times: list[float] = []
    active = state.active
    if active is not None and active.activated_at is not None:
        candidate = next((k for k in state.pending if k.published_at is not None), None)
        promoted_at = activation_at(active, candidate, policy) if candidate is not None else None
        times.append(promoted_at if promoted_at is not None else active.activated_at + policy.rotation_period)
    for key in state.keys:
        if key.state is KeyState.RETIRED and key.retired_at is not None:
            if key.private is not None:
                times.append(key.retired_at + policy.private_key_grace)
            times.append(key.retired_at + policy.retirement_window)
        gone_at = key.revoked_at if key.revoked_at is not None else key.removed_at
        if gone_at is not None:
            times.append(gone_at + policy.audit_retention)
    return min(times) if times else None


def adopt(
    state: State,
    served: Sequence[tuple[str, str, PublicJWK]],
    now: float,
    *,
    target_generation: int | None,
    revoked: frozenset[str] = frozenset(),
    alg: str = ALG,
) -> Plan:
    """Recovery of a restored or recreated keystore from what the publish target keeps.

    ``target_generation`` is given when the publish target is ahead of the state (the
    keystore went back in time, or was recreated): every key the served JWKS lists and
    the state lacks is then adopted as retired (public half only: its private half is
    lost), so tokens it signed keep verifying for the retirement window; keys the state
    would publish but the served JWKS no longer lists were removed or revoked since the
    backup, and are revoked; the state's generation moves past the target's, so the next
    publication is accepted. When the target is not ahead, nothing is adopted: a key
    someone else added to the JWKS is not trusted for it.

    Whatever the generations, every kid on the target's ``revoked`` list is revoked here
    too, and never adopted: a restore never brings a revoked key back. Only keys of the key
    set's algorithm ``alg`` are adopted (``served`` lists (kid, alg, public JWK)).
    """
    now = _effective_now(state, now)
    served_kids = {kid for kid, _, _ in served}
    ahead = target_generation is not None
    changed: dict[str, KeyRecord] = {}
    events: list[Event] = []

    def revoke_here(key: KeyRecord, why: str) -> None:
        changed[key.kid] = key.with_(
            revoked_at=now, revocation="recovery", private=None, private_destroyed_at=key.private_destroyed_at or now
        )
        events.append(Event("rotator.key_revoked", key.kid, f"reason=recovery ({why})"))

    for key in state.keys:
        if key.state is KeyState.REVOKED:
            continue
        if key.kid in revoked:
            revoke_here(key, "revoked at the publish target")
        elif ahead and served and key.published and key.kid not in served_kids:
            revoke_here(key, "no longer published")
    new = _replace_keys(state, changed.values())
    known = {k.kid for k in state.keys}
    adopted = [
        KeyRecord(
            kid=kid,
            public=jwk,
            created_at=now,
            published_at=now,
            retired_at=now,
            retirement="recovery",
            private_destroyed_at=now,
            alg=key_alg,
        )
        for kid, key_alg, jwk in (served if ahead else ())
        if kid not in known and kid not in revoked and key_alg == alg
    ]
    events.extend(Event("rotator.key_adopted", k.kid, "published, private half lost: retired") for k in adopted)
    events.extend(
        Event("rotator.key_not_adopted", kid, f"an {key_alg} key; this key set signs {alg}")
        for kid, key_alg, _ in (served if ahead else ())
        if kid not in known and kid not in revoked and key_alg != alg
    )
    if adopted:
        new = new.with_keys(new.keys + tuple(adopted))
    if target_generation is not None:
        new = replace(new, generation=max(new.generation, target_generation))
    if events:
        new = replace(new, updated_at=now)
    return Plan(state=new, events=tuple(events))


def mark_damaged(state: State, kids: Iterable[str], now: float) -> Plan:
    """Pending keys whose sealed private half cannot be decrypted: out of the JWKS, never to
    sign; the next plan creates a replacement."""
    now = _effective_now(state, now)
    damaged = [state.get(kid) for kid in kids]
    changed = [
        k.with_(revoked_at=now, revocation="damaged", private=None, private_destroyed_at=now)
        for k in damaged
        if k is not None
    ]
    events = tuple(
        Event("rotator.pending_key_damaged", k.kid, "its private half cannot be decrypted; replaced")
        for k in changed
    )
    return Plan(state=replace(_replace_keys(state, changed), updated_at=now), events=events)


def _times(state: State) -> Iterable[float]:
    yield state.updated_at
    if state.published_confirmed_at is not None:
        yield state.published_confirmed_at
    for key in state.keys:
        for name in _KEY_TIMES:
            value = getattr(key, name)
            if value is not None:
                yield value


_KEY_TIMES = (
    "created_at",
    "published_at",
    "activated_at",
    "retired_at",
    "private_destroyed_at",
    "removed_at",
    "revoked_at",
)


def future_skew(state: State, now: float) -> float:
    """How far the latest time recorded in ``state`` lies ahead of ``now`` (0 when none does)."""
    return max(0.0, max(_times(state), default=0.0) - now)


def clamp_future(state: State, now: float) -> Plan:
    """Set every recorded time later than ``now`` to ``now``: the repair of a state written
    by a host whose clock was fast.

    Safe for the invariants when ``now`` is right: each recorded event really happened
    no later than ``now``, so keys look published, active and retired for no longer than
    they were, and retired keys stay published a little longer than needed, never less.
    """
    skew = future_skew(state, now)
    if skew <= 0:
        return Plan(state=state)

    def clamp(value: float | None) -> float | None:
        return None if value is None else min(value, now)

    keys = [k.with_(**{name: clamp(getattr(k, name)) for name in _KEY_TIMES}) for k in state.keys]
    new = state.with_keys(
        keys,
        updated_at=min(state.updated_at, now),
        published_confirmed_at=clamp(state.published_confirmed_at),
    )
    detail = f"stored times up to {skew:.0f}s ahead of this host's clock were set to now"
    return Plan(state=new, events=(Event("rotator.clock_skew_repaired", None, detail),))
