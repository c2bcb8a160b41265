"""A step against its publish target: whether the target takes what the step would
publish (its marker and its revoked list), the one-line refusals, what ``rotator
recover`` takes from the target, and the repair of stored times a fast clock wrote.
"""

from __future__ import annotations

from dataclasses import replace

from .errors import ClockSkewError, PublicationGuardError, PublishTargetAhead
from .lifecycle import Event, Plan, adopt, clamp_future
from .publish import Marker, Publisher, build_jwks, jwks_digest, published_keys, refusal
from .keys import ALG
from .state import State, new_lineage

__all__ = ["refusal_of", "with_lineage", "refusal_message", "check_target", "adopt_published", "repair_clock"]


def refusal_of(marker: Marker | None, state: State) -> str | None:
    """Why the publish target marked ``marker`` refuses the JWKS of ``state`` (None: it takes it)."""
    return refusal(marker, state.generation, state.lineage, jwks_digest(build_jwks(state)))


def with_lineage(state: State, marker: Marker | None) -> State:
    """``state`` with a lineage: its own; for a state from before lineages, the publish
    target's, or a new one when the target has none."""
    if state.lineage is not None:
        return state
    return replace(state, lineage=marker.lineage if marker is not None and marker.lineage else new_lineage())


def refusal_message(target: str, why: str, marker: Marker, state: State) -> str:
    """The one line for a publish target that refuses ``state`` (``why``: see ``refusal``)."""
    if why == "lineage":
        return (
            f"{target} publishes the JWKS of another key set (lineage {marker.lineage}, this keystore's "
            f"{state.lineage}): the keystore was lost and started afresh, or two key sets share one publish "
            "location; if the keystore was lost, run `rotator recover --other-lineage` to adopt the keys "
            "published there, otherwise give this key set a publish location of its own; nothing was written"
        )
    if why == "diverged":
        return (
            f"{target} holds a JWKS of state generation {marker.generation} with other keys than this "
            f"keystore's generation {state.generation}: the keystore was restored from a backup or recreated; "
            "run `rotator recover` to adopt the keys it still publishes and publish again"
        )
    return (
        f"{target} holds the JWKS of state generation {marker.generation}, above this keystore's "
        f"generation {state.generation}: the keystore was restored from a backup or recreated; "
        "run `rotator recover` to adopt the keys it still publishes and publish again"
    )


def check_target(publisher: Publisher, saved: State, state: State) -> tuple[State, str | None]:
    """Before a step writes anything: the publish target must take what this step would
    publish. Its marker refuses a state of another lineage, of a later generation than
    the one loaded (the keystore went back: a restored backup, a lost keystore), or of
    the served generation with other keys; its revoked list refuses a state that holds
    a key revoked there. Refused without a write, so a state that cannot publish never
    advances its generation, and `rotator recover` is the way on.

    Returns ``state`` with a lineage (a state from before lineages takes the target's), and
    why the marker refuses ``saved`` (None: it takes it; the caller raises)."""
    marker = publisher.marker()
    why = refusal_of(marker, saved)
    if why is not None:
        return state, why
    # A target still serving what this state last confirmed has had no revocation
    # published since; anything else (nothing there, another document) may have.
    confirmed_here = marker is not None and marker.digest is not None and marker.digest == saved.published_digest
    revoked = frozenset() if confirmed_here else publisher.revoked()
    live = sorted(k.kid for k in state.keys if k.published and k.kid in revoked)
    if live:
        raise PublishTargetAhead(
            f"{publisher.location} records key(s) {', '.join(live)} as revoked, but this keystore "
            "still holds them live: it was restored from a backup older than their revocation; run "
            "`rotator recover` to revoke them here too; nothing was written"
        )
    return with_lineage(state, marker), None


def adopt_published(publisher: Publisher, state: State, now: float, other_lineage: bool, alg: str = ALG) -> Plan:
    """What recovery takes from the publish target: its revoked list always; when the
    target is ahead of ``state`` (or holds another lineage and ``other_lineage`` says to
    take it), the keys of ``alg`` it serves and its generation."""
    marker = publisher.marker()
    events: list[Event] = []
    try:
        served, skipped = published_keys(publisher.read_back())
    except PublicationGuardError as e:
        served, skipped = [], []
        events.append(Event("rotator.key_not_adopted", None, f"nothing adopted: {e}"))
    why = refusal_of(marker, state)
    if why == "lineage":
        assert marker is not None
        if not other_lineage:
            raise PublishTargetAhead(refusal_message(publisher.location, "lineage", marker, state))
        state = replace(state, lineage=marker.lineage)
    state = with_lineage(state, marker)
    ahead = why is not None
    adopted = adopt(
        state,
        served,
        now,
        target_generation=marker.generation if ahead and marker is not None else None,
        revoked=publisher.revoked(),
        alg=alg,
    )
    skipped_events = tuple(
        Event("rotator.key_not_adopted", kid, "not a public key of its alg with its thumbprint as kid") for kid in skipped
    )
    return Plan(adopted.state, tuple(events) + adopted.events + (skipped_events if ahead else ()))


def repair_clock(
    stored: State, now: float, skew: float, *, recover: bool, tolerance: float, storage_clock: bool, location: str
) -> Plan:
    """Stored times ``skew`` seconds ahead of this host's clock: repaired when the store's own
    record of the write shows the writer's clock was fast, refused when this host may be the
    one behind."""
    if skew <= tolerance:
        return Plan(stored)
    stored_at = stored.stored_at if storage_clock else None
    writer_was_fast = stored_at is not None and stored_at <= now + tolerance
    if recover or writer_was_fast:
        return clamp_future(stored, now)
    raise ClockSkewError(
        f"{location} holds times up to {skew:.0f}s ahead of this host's clock "
        f"(tolerance {tolerance:.0f}s) and the store cannot tell which clock is wrong: fix this "
        "host's time if it is behind; if it is right, run `rotator recover` to set those times "
        "to now; nothing was written",
        skew,
    )
