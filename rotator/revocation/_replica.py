"""The read side: every record in memory, kept current by following the change log.

One thread per replica. It takes the log's position, loads every record (a snapshot when
one is configured and usable, else SCAN + MGET from Redis), then applies the log's entries
after that position, and every later one, as they come (a blocking XREAD); each entry
carries the record's whole new value, so replaying them on top of any load converges. A
reconnect resumes from the last entry applied when the log still holds it (a restart, a
failover, a network cut shorter than the log's retention): Redis then serves the changes
missed, not every record. Otherwise, or when Redis lost its dataset, it loads again, after
a random delay while what it holds is still within bounds, so a fleet does not load at once.

Currency is confirmed by the reads themselves: an XREAD that returns fewer entries than it
asked for, or none after blocking, proves every change written before it was sent has
been applied. ``age()`` is the time since the last read so confirmed; a verifier refuses to
vouch for tokens when it exceeds its bound. Nothing on the verify path touches the network
or takes a lock.

``Replica`` is one class, longer than the project's usual, on purpose: the follower
thread and the checks share the tables, their lock and the confirmation time, and the
consistency rules (position before load, confirm by read, reload on any doubt) only
read as a whole.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from typing import Any, Callable, Mapping

from redis.exceptions import RedisError

from .._backoff import backoff
from .._fork import on_fork
from ..durations import format_time
from ..errors import RevocationError
from ..jose import RevocationUnavailable, Revoked
from ._records import Tables, revoked_reason
from ._redis import Link, entries_of
from ._snapshot import Snapshot, SnapshotTarget, parse, vouch_key

_READ_COUNT = 5000  # log entries per read

__all__ = ["Replica"]

log = logging.getLogger("rotator.revocation")


class Replica:
    """An in-memory copy of the records under a Link's prefix that follows their changes
    (see the module docstring)."""

    def __init__(
        self,
        link: Link,
        *,
        heartbeat: float = 1.0,
        prune_every: float = 30.0,
        grace: float | None = None,
        snapshot: SnapshotTarget | None = None,
        spread: float = 5.0,
        bound: float = 30.0,
    ) -> None:
        if not heartbeat > 0:
            raise ValueError(f"heartbeat must be > 0, got {heartbeat!r}")
        if not spread >= 0:
            raise ValueError(f"spread must be >= 0, got {spread!r}")
        self.link = link
        self.grace = grace  # the store's: how long past exp its records outlive a token
        self.heartbeat = heartbeat  # the longest a read of the log blocks
        # No answer for this long past a read's block: the connection is dead even if the
        # socket says otherwise.
        self.dead_after = max(4 * heartbeat, 1.0)
        self.snapshot = snapshot
        # A replica that holds records must load them all again: it waits a random part of
        # this first (at most half what is left of its bound), so a fleet spreads its loads.
        self.spread = spread
        # The staleness bound it keeps to (the verifiers' default, tightened by each guard()):
        # for spreading loads, and for starting from a snapshot while Redis cannot be had.
        self.bound = bound
        self._started_from: Snapshot | None = None  # the snapshot start() took before Redis answered
        self._snapshot_read_at_start = False
        self.position: str | None = None  # the log entry last applied (None: load first)
        # Expired records are harmless (they match only expired tokens); dropping them is
        # housekeeping, done rarely because it copies the tables.
        self.prune_every = prune_every
        self.tables = Tables()
        # Held by whoever writes the tables: the replica's thread, and the store applying its
        # own writes (read-your-writes). Readers never take it.
        self.lock = threading.Lock()
        self.confirmed_at = float("-inf")  # time.monotonic() a confirming read of the log was sent
        self.loads = 0  # full loads from Redis
        self.snapshot_loads = 0
        self.resumes = 0  # reconnects that caught up from the log instead of loading
        self.messages = 0  # log entries applied
        self.last_load_seconds: float | None = None
        self.last_error: str | None = None
        # Malformed records already logged (once each, however often they are loaded again).
        self._logged_malformed: set[str] = set()
        # The dataset Redis holds: its run_id and the prefix's marker, as of the last load. A
        # marker that vanished means Redis lost every record (restarted empty, flushed).
        self.run_id: str | None = None
        self.marker: str | None = None
        self.dataset_losses = 0
        self.dataset_lost_at: float | None = None  # wall-clock time the last loss was detected
        self.closed = False
        # Set in a forked child (gunicorn --preload, uWSGI, Celery prefork): the follower thread
        # is the parent's, so the child starts its own at its first check.
        self._forked = False
        self._clock = link.clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fork_lock = threading.Lock()
        on_fork(self)
        # The full loads' own client, made once: a resync reuses its pool.
        self._loader = link.follower_client()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Load every record now (an error, never a hang, when Redis cannot be had), then follow.

        With a snapshot younger than ``bound``, a Redis that cannot be had is no error: the
        replica holds the snapshot's records, confirmed as of when it was taken, and follows
        Redis in the background once it can."""
        deadline = time.monotonic() + timeout
        if self.snapshot is not None:
            self._start_from_snapshot()
        try:
            conn = self._open()
        except RevocationError as e:
            if self.snapshot_loads and self.age() < self.bound:
                log.warning("revocation replica starts from the snapshot (%.0fs old, bound %gs): %s; following "
                            "redis once it answers", self.age(), self.bound, e)
                self.last_error = str(e)
                self._thread = threading.Thread(target=self._run, args=(None,), name="rotator-revocation-replica", daemon=True)
                self._thread.start()
                return
            self.close()
            raise
        if time.monotonic() > deadline:
            conn.disconnect()
            self.close()
            raise RevocationError(f"redis at {self.link.target}: the first load took longer than {timeout}s")
        self._thread = threading.Thread(target=self._run, args=(conn,), name="rotator-revocation-replica", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._loader.close()

    def age(self) -> float:
        """Seconds since the replica last confirmed it holds every change (inf before the first)."""
        return time.monotonic() - self.confirmed_at

    # -- the hot path ------------------------------------------------------------------------

    def check(self, claims: Mapping[str, Any], session_claim: str = "sv") -> None:
        reason = revoked_reason(self.tables, claims, session_claim)
        if reason is not None:
            raise Revoked(reason)

    def staleness(self, max_staleness: float) -> RevocationUnavailable | None:
        """The one staleness rule, for the verifier's guard and the Signer alike: an error when
        the replica has not confirmed it is current within ``max_staleness``, else None."""
        if self._forked:
            self._follow_in_this_process()
        age = self.age()
        if age <= max_staleness:
            return None
        return RevocationUnavailable(
            f"revocations not confirmed current for {age:.1f}s (bound {max_staleness:g}s): "
            f"{self.last_error or 'no answer from redis'}"
        )

    def guard(
        self, *, session_claim: str = "sv", max_staleness: float = 30.0, fail_open: bool = False
    ) -> Callable[[Mapping[str, Any]], None]:
        """The check a Verifier runs on every accepted token: the records, and the staleness bound.

        Past the bound it raises RevocationUnavailable, or with ``fail_open`` logs a warning
        once per outage and applies the records it still has."""
        if not max_staleness > 0:
            raise ValueError(f"revocation_max_staleness must be > 0, got {max_staleness!r}")
        self.bound = min(self.bound, max_staleness)  # the tightest verifier it serves spreads its loads
        outage = [False]

        def check(claims: Mapping[str, Any]) -> None:
            stale = self.staleness(max_staleness)
            if stale is not None:
                if not fail_open:
                    raise stale
                if not outage[0]:
                    outage[0] = True
                    log.warning(
                        "revocation replica not confirmed current for %.1fs (bound %gs): %s; "
                        "fail_open is set, so tokens are checked against the records held as of then",
                        self.age(),
                        max_staleness,
                        self.last_error or "no answer from redis",
                    )
            elif outage[0]:
                outage[0] = False
                log.warning("revocation replica is current again")
            reason = revoked_reason(self.tables, claims, session_claim)
            if reason is not None:
                raise Revoked(reason)

        return check

    # -- fork ------------------------------------------------------------------------------

    def _after_fork(self) -> None:
        """In a forked child: fresh locks (the parent's thread may have held one at the fork),
        and a note to start a follower of this process's own at the first check."""
        self.lock = threading.Lock()
        self._fork_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._forked = not self.closed

    def _follow_in_this_process(self) -> None:
        """Start this process's follower (once): it resubscribes and reloads in the background,
        while checks go on against the records copied from the parent, within the staleness
        bound as always."""
        with self._fork_lock:
            if not self._forked:
                return
            self._forked = False
            self._thread = threading.Thread(target=self._run, args=(None,), name="rotator-revocation-replica", daemon=True)
            self._thread.start()

    # -- the follower thread -----------------------------------------------------------------

    def _open(self) -> Any:
        """Catch up (resuming from the log, or loading first), then return a connection to follow on."""
        conn = self.link.follower_connection()
        try:
            conn.connect()
            lost = self._check_dataset()
            # A snapshot started from is vouched for (or not) before anything resumes from it; it
            # stays to be checked until a connection gets that far. Its check covers the log.
            refused = None
            if self._started_from is not None:
                refused = self._snapshot_problem(self._started_from)
                resume = refused is None
            else:
                resume = self.position is not None and not lost and self.link.resumable(self.position, self._loader)
            if resume:
                self.resumes += 1
            else:
                if refused is not None:
                    self._snapshot_refused(refused)
                self._wait_spread()
                self._load(snapshot=not self._snapshot_read_at_start)
            self._started_from, self._snapshot_read_at_start = None, False
            sent = self._catch_up()
            self.confirmed_at = sent
            if self.last_error is not None:
                log.warning("revocation replica resynchronised with redis at %s", self.link.target)
            self.last_error = None
            return conn
        except (RedisError, OSError) as e:
            conn.disconnect()
            raise self.link.describe(e) from e

    def _wait_spread(self) -> None:
        """Before a full load by a replica that holds records within its bound: a random
        delay, so that a fleet told to load at once does not. A replica with nothing waits not."""
        if self.loads + self.snapshot_loads == 0 or not self.spread:
            return
        left = self.bound - self.age()
        if left > 0:
            self._stop.wait(random.uniform(0, min(self.spread, left / 2)))

    def _load(self, snapshot: bool = True) -> None:
        """Replace the tables with every record in force: from the snapshot when it is usable,
        else from Redis; ``position`` is where the log's entries after them begin."""
        if snapshot and self.snapshot is not None and self._load_snapshot():
            return
        started = time.perf_counter()
        position = self.link.log_end(self._loader)
        tables = self.link.load(self._loader)
        self.last_load_seconds = time.perf_counter() - started
        with self.lock:  # a load replaces: what it lacks, Redis no longer holds
            self.loads += 1  # counted before the tables show, so a reader never sees them uncounted
            self.tables = tables
            self.position = position
        self._log_malformed(tables.malformed)

    def _load_snapshot(self) -> bool:
        """Load the published snapshot if it is of this dataset and the log still holds its
        position; False (said once in the log) when it cannot be used."""
        snap = self._read_snapshot()
        if snap is None:
            return False
        why = self._snapshot_problem(snap)
        if why is None:
            self._install(snap)
            return True
        self._snapshot_refused(why)
        return False

    def _snapshot_problem(self, snap: Snapshot) -> str | None:
        """Why Redis (as the last dataset check found it) cannot vouch for ``snap``, or None."""
        if snap.marker != self.marker:
            return "another dataset's (its marker differs)"
        if not self._loader.sismember(vouch_key(self.link.prefix, snap.position), snap.digest):
            return "not one this prefix's publisher vouched for (its digest is not in redis)"
        if not self.link.resumable(snap.position, self._loader):
            return "older than the change log holds"
        return None

    def _snapshot_refused(self, why: str) -> None:
        assert self.snapshot is not None
        log.warning("revocation snapshot at %s is %s; loading every record from redis at %s",
                    self.snapshot.location, why, self.link.target)

    def _read_snapshot(self) -> Snapshot | None:
        """The published snapshot when it is of this prefix and database, else None (said in one line)."""
        assert self.snapshot is not None
        try:
            body = self.snapshot.read()
            if body is None:
                raise RevocationError(f"no revocation snapshot at {self.snapshot.location} yet")
            snap = parse(body, self.snapshot.location)
        except RevocationError as e:
            log.warning("%s; loading every record from redis at %s", e, self.link.target)
            return None
        if (snap.prefix, snap.db) != (self.link.prefix, self.link.db):
            log.warning("revocation snapshot at %s is another dataset's (prefix %s, database %d); loading every "
                        "record from redis at %s", self.snapshot.location, snap.prefix, snap.db, self.link.target)
            return None
        return snap

    def _install(self, snap: Snapshot) -> None:
        started = time.perf_counter()
        tables = Tables()
        for suffix, value in snap.records:
            tables.apply(suffix, value)
        tables = tables.pruned(self._clock())
        self.last_load_seconds = time.perf_counter() - started
        with self.lock:
            self.snapshot_loads += 1
            self.tables = tables
            self.position = snap.position
        self._log_malformed(tables.malformed)

    def _start_from_snapshot(self) -> None:
        """Before Redis is asked: hold the snapshot's records, confirmed as of when it was taken
        (by this host's clock), so a verifier whose snapshot is within its bound can verify
        while Redis cannot be had. The first connection checks the snapshot is of Redis's
        dataset and resumes from its position, or loads everything."""
        self._snapshot_read_at_start = True  # the first load does not read it again
        snap = self._read_snapshot()
        if snap is None:
            return
        self._install(snap)
        self._started_from = dataclasses.replace(snap, records=[])
        self.confirmed_at = time.monotonic() - max(0.0, self._clock() - snap.taken_at)

    def _catch_up(self) -> float:
        """Apply the log's entries after ``position`` until a read returns fewer than it asked
        for; returns when that read was sent (everything written before it is applied)."""
        while True:
            sent = time.monotonic()
            assert self.position is not None
            entries = self.link.changes(self.position, _READ_COUNT, self._loader)
            self._apply_entries(entries)
            if len(entries) < _READ_COUNT:
                return sent

    def _run(self, conn: Any | None) -> None:
        failures = 0
        while not self._stop.is_set():
            if conn is None:
                try:
                    conn = self._open()
                    failures = 0
                except RevocationError as e:
                    failures += 1
                    self._failed(str(e))
                    # Jittered: replicas that lost Redis together do not all come back at once.
                    self._stop.wait(random.uniform(0.5, 1.0) * backoff(failures, 0.1, 2.0))
                    continue
            try:
                self._follow(conn)
            except (RedisError, OSError) as e:
                self._failed(str(self.link.describe(e)))
            finally:
                conn.disconnect()
                conn = None

    def _failed(self, error: str) -> None:
        if self.last_error is None:
            log.warning("revocation replica lost redis: %s; reconnecting", error)
        self.last_error = error

    def _follow(self, conn: Any) -> None:
        """Block on the log for new entries, a heartbeat at a time; each answer confirms."""
        block_ms = max(1, int(self.heartbeat * 1000))
        next_prune = 0.0
        while not self._stop.is_set():
            sent = time.monotonic()
            conn.send_command("XREAD", "COUNT", _READ_COUNT, "BLOCK", block_ms, "STREAMS", self.link.log, self.position)
            while not conn.can_read(timeout=0.25):
                if self._stop.is_set():
                    return
                waited = time.monotonic() - sent
                if waited > self.heartbeat + self.dead_after:
                    raise RedisError(f"no answer for {waited:.1f}s")
            entries = entries_of(conn.read_response())
            self._apply_entries(entries)
            if len(entries) < _READ_COUNT:
                self.confirmed_at = sent
            wall = self._clock()
            if wall >= next_prune:
                with self.lock:
                    self.tables = self.tables.pruned(wall)
                next_prune = wall + self.prune_every

    def _apply_entries(self, entries: list[tuple[str, str]]) -> None:
        if not entries:
            return
        problems: dict[str, str] = {}
        with self.lock:
            for _, change in entries:
                suffix, _, value = change.partition("\n")
                problem = self.tables.apply(suffix, value)
                if problem is not None:
                    problems[suffix] = problem
            self.position = entries[-1][0]
        self.messages += len(entries)
        self._log_malformed(problems)

    def apply(self, suffix: str, value: str) -> None:
        """Merge one record (a change heard, or the store's own write) by the writers' rule."""
        with self.lock:
            problem = self.tables.apply(suffix, value)
        if problem is not None:
            self._log_malformed({suffix: problem})

    def _log_malformed(self, malformed: Mapping[str, str]) -> None:
        for suffix, problem in malformed.items():
            if suffix not in self._logged_malformed:
                self._logged_malformed.add(suffix)
                log.warning(
                    "malformed revocation record %r at redis %s: %s; skipped (see `rotator revocations`)",
                    self.link.prefix + suffix, self.link.target, problem,
                )

    def _check_dataset(self) -> bool:
        """Before each load: is this the dataset the last load read? Redis's run_id changes on
        every restart; the prefix's marker (a key without expiry) survives one only with the
        data (an append-only file, a replica promoted). A marker gone since the last load
        means every revocation was lost: said loudly, counted, and shown in health. True then."""
        run_id = str(self._loader.info("server").get("run_id", ""))
        marker = self.link.ensure_marker(self._loader)
        lost = self.marker is not None and marker != self.marker
        if lost:
            self.dataset_losses += 1
            self.dataset_lost_at = self._clock()
            log.error(
                "redis at %s lost its dataset (run_id %s -> %s, the marker of prefix %s is gone): every "
                "revocation written before is gone; tokens they voided are accepted again until they expire. "
                "Run redis with appendonly yes, and write the revocations again",
                self.link.target, self.run_id, run_id, self.link.prefix,
            )
        self.run_id, self.marker = run_id, marker
        return lost

    def problems(self, max_staleness: float = 30.0) -> list[str]:
        """What a health check should say about this replica (empty when all is well)."""
        out: list[str] = []
        stale = self.staleness(max_staleness)
        if stale is not None:
            out.append(str(stale))
        if self.dataset_lost_at is not None:
            out.append(
                f"redis at {self.link.target} lost its dataset {self.dataset_losses} time(s), last at "
                f"{format_time(self.dataset_lost_at)}: revocations written before were lost"
            )
        if self.tables.malformed:
            out.append(f"{len(self.tables.malformed)} malformed revocation record(s) skipped (see `rotator revocations`)")
        return out
