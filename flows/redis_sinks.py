"""Where the engine's serving state goes: Redis, one sink per kind of record.

Every Redis sink writes each batch whole, in one pipeline, and waits out an outage: the
batch is retried with capped backoff for as long as Redis is unreachable (``RedisRetry``),
errors that retrying cannot fix stop the dataflow, which resumes from its snapshot. Writes
are absolute values keyed by event time (or replace-if-newer), so the replay after a
restart rewrites the same values.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from redis.exceptions import RedisClusterException

from connectors.records import ProfileLatency
from connectors.schemas import (
    FootfallMinute,
    MemberErased,
    MemberProfile,
    MemberVisits,
    PeopleCount,
    StoreHealth,
    StoreHour,
    StoreMembers,
    VisitsErased,
)
from state.redis import Backoff, is_retryable
from storepulse import health, metrics

if TYPE_CHECKING:
    from state.profiles import Applied

log = logging.getLogger(__name__)

T = TypeVar("T")


class RedisRetry:
    """The Redis outage loop the Redis sinks and the alert outbox share: ``run`` a call
    until Redis answers, retrying whole with capped backoff for as long as Redis is
    unreachable; readiness ``name`` down meanwhile, ``storepulse_redis_up`` 0, the failure
    and retry counters counting; one warning when an outage starts and one when it ends.
    Errors retrying cannot fix (``state.redis.is_retryable``) are raised, to stop the
    dataflow, which resumes from its last snapshot."""

    def __init__(
        self,
        name: str,
        *,
        readiness: health.Readiness,
        backoff: Backoff,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name  # the readiness condition, e.g. "redis[0]"
        self.readiness = readiness
        self.backoff = backoff
        self.sleep = sleep
        self.clock = clock
        self.outage_since: float | None = None  # clock() of the first failure of this outage
        self.outage_failures = 0
        readiness.up(name, "connected")  # connect() PINGed before this was built
        metrics.REDIS_UP.set(1)

    def run(self, what: str, call: Callable[[], T]) -> T:
        """``call()`` once it succeeds; ``what`` names it in the log ("write of 3 records")."""
        attempt = 0
        while True:
            try:
                result = call()
            except (redis.RedisError, RedisClusterException, OSError) as exc:
                metrics.REDIS_WRITE_FAILURES.inc()
                metrics.REDIS_UP.set(0)
                reason = f"{type(exc).__name__}: {exc}"[:200]
                if not is_retryable(exc):
                    self.readiness.down(self.name, f"{what} failed, not retryable: {reason}")
                    log.error("Redis %s failed and retrying cannot fix it (%s); stopping the dataflow", what, reason)
                    raise
                self.readiness.down(self.name, f"{what} failing: {reason}")
                self.outage_failures += 1
                if self.outage_since is None:  # one line per outage, not per retry
                    self.outage_since = self.clock()
                    log.warning("Redis %s failed (%s); retrying with backoff up to %.0f s until Redis "
                                "answers (not ready meanwhile)", what, reason, self.backoff.cap_s)  # fmt: skip
                self.sleep(self.backoff.delay_s(attempt))
                attempt += 1
                metrics.REDIS_WRITE_RETRIES.inc()
                continue
            if self.outage_since is not None:
                log.warning("Redis %s succeeds again after %.1f s and %d failed attempts",
                            what, self.clock() - self.outage_since, self.outage_failures)  # fmt: skip
                self.outage_since, self.outage_failures = None, 0
            self.readiness.up(self.name, "writing")
            metrics.REDIS_UP.set(1)
            return result


class _RedisPartition(StatelessSinkPartition[Any]):
    """Writes each batch whole, retrying for as long as Redis is unreachable (see the sink)."""

    def __init__(
        self,
        store: Any,
        name: str,
        *,
        readiness: health.Readiness,
        backoff: Backoff,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        kinds: tuple[type, ...] = (FootfallMinute, StoreHour),
        on_written: Callable[[Any], None] | None = None,
        after_batch: Callable[[list[Any], float], None] | None = None,
    ) -> None:
        self.store = store  # a FootfallStore, or anything with its write(records)
        self.after_batch = after_batch  # called with the whole batch and clock() once it is written
        self.kinds = kinds  # the records this store writes; others are not for it
        self.on_written = on_written  # called with what store.write returned, once per batch
        self.clock = clock
        self.retry = RedisRetry(name, readiness=readiness, backoff=backoff, sleep=sleep, clock=clock)

    def write_batch(self, items: list[Any]) -> None:
        self._write(items)
        if self.after_batch is not None:
            self.after_batch(items, self.clock())

    def _write(self, items: list[Any]) -> None:
        records = [i for i in items if isinstance(i, self.kinds)]
        if not records:
            return
        written = self.retry.run(f"write of {len(records)} records", lambda: self.store.write(records))
        metrics.REDIS_LAST_WRITE.set(self.clock())
        if self.on_written is not None:
            self.on_written(written)


class _RedisSink(DynamicSink[Any]):
    """What the Redis sinks share: connect at build, then ``_RedisPartition``'s outage
    behaviour (retry whole with backoff, readiness, metrics; see ``RedisFootfallSink``)."""

    def __init__(
        self,
        url: str,
        *,
        backoff: Backoff | None = None,
        readiness: health.Readiness = health.READINESS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.backoff = backoff or Backoff()
        self.readiness = readiness
        self.sleep = sleep
        # Not ready until this sink is built too: another sink built first must not make the
        # process look ready while this one has not connected yet.
        self.built = f"{type(self).__name__} built"
        readiness.declare(self.built)

    def _build(self, store_of: Callable[[Any], Any], name: str, **options: Any) -> _RedisPartition:
        from state.redis import connect

        partition = _RedisPartition(
            store_of(connect(self.url)),
            name,
            readiness=self.readiness,
            backoff=self.backoff,
            sleep=self.sleep,
            **options,
        )
        health.dataflow_running(self.readiness)
        self.readiness.up(self.built)
        return partition


class RedisFootfallSink(_RedisSink):
    """Writes minutes and store-hours to Redis (``state.footfall``); one pipeline per batch.
    Idempotent: a replay rewrites the same absolute values.

    Redis unreachable (refused, reset, timeouts, LOADING, failover): the batch is retried
    whole with capped exponential backoff (``backoff``, 0.2 s doubling to 5 s) for as long
    as it takes. Nothing is lost: the dataflow waits in this step (no new snapshot while
    it waits) and goes on with the same batch. Meanwhile readiness ``redis[<worker>]`` is
    down, ``storepulse_redis_up`` is 0 and failures and retries are counted; one warning
    when an outage starts and one when it ends. Errors that retrying cannot fix (wrong
    password or ACL, WRONGTYPE, a failing script, OOM: see ``state.redis.is_retryable``)
    stop the dataflow, which resumes from its last snapshot when restarted.

    Building a partition connects and PINGs, so Redis must answer when the dataflow starts;
    the build also marks readiness ``dataflow`` up.
    """

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        from state.footfall import FootfallStore

        return self._build(FootfallStore, f"redis[{worker_index}]")


class RedisPeopleSink(_RedisSink):
    """Writes ``PeopleCount`` records to Redis (``state.people``: per sensor, zone and store,
    the newest window and the 48 h series; zone and store sums made in Redis from each
    sensor's part); one pipeline per batch, other items ignored. Idempotent: a replay
    rewrites the same parts and sums, and never moves a live hash back to an older window.

    Outages and errors: as every Redis sink (``RedisRetry``), readiness ``redis-people[<worker>]``.
    """

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        from state.people import PeopleStore

        return self._build(PeopleStore, f"redis-people[{worker_index}]", kinds=(PeopleCount,))


class _ProfileUpdates:
    """``state.profiles.ProfileStore.apply`` as the ``write`` that ``_RedisPartition`` calls."""

    def __init__(self, client: Any) -> None:
        from state.profiles import ProfileStore

        self.store = ProfileStore(client)

    def write(self, records: list[MemberProfile | MemberErased]) -> Applied:
        return self.store.apply(records)


def _count_profile_updates(applied: Applied) -> None:
    """Counts a ``state.profiles.Applied``."""
    metrics.PROFILE_UPDATES.inc(applied.written)
    metrics.MEMBERS_ERASED.inc(applied.erased)


def _observe_sale_to_profile(items: list[Any], now_s: float) -> None:
    """Each sale's time from Kafka to its member's profile in Redis, written just now."""
    for item in items:
        if isinstance(item, ProfileLatency):
            for produced_ms in item.produced_ms:
                metrics.SALE_TO_PROFILE.observe(max(0.0, now_s - produced_ms / 1000))


class RedisProfileSink(_RedisSink):
    """Writes member profiles to Redis and applies member erasures (``state.profiles``);
    one pipeline per batch, in item order per member, other items are ignored. Idempotent:
    a profile replaces the stored one only if its ``as_of_ts`` is not older and it is newer
    than the member's last erasure, so a replay never moves a profile backwards or writes
    an erased member back (until the 35-day tombstone expires). A ``MemberErased`` deletes
    the profile unless that is newer (the member came back since).
    ``storepulse_profile_updates_total`` counts the profiles written,
    ``storepulse_members_erased_total`` the erasures applied (a replayed one is not counted);
    ``storepulse_sale_to_profile_seconds`` observes each sale of a ``ProfileLatency`` once
    the batch holding it is written (a replay after a restart observes again).

    Outages and errors as ``RedisFootfallSink`` (the same retry loop), with its own
    readiness condition ``redis-profiles[<worker>]``; it shares ``storepulse_redis_up``
    and the write failure and retry counters.
    """

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        return self._build(
            _ProfileUpdates,
            f"redis-profiles[{worker_index}]",
            kinds=(MemberProfile, MemberErased),
            on_written=_count_profile_updates,
            after_batch=_observe_sale_to_profile,
        )


def set_store_gauges(written: list[StoreMembers]) -> None:
    """Sets the two store gauges from the records written."""
    for record in written:
        metrics.STORE_MEMBERS_ACTIVE.labels(record.store_id).set(record.members_active)
        if record.repurchase_rate is not None:
            metrics.STORE_REPURCHASE_RATE.labels(record.store_id).set(record.repurchase_rate)
        else:
            with contextlib.suppress(KeyError):  # never set: nothing to remove
                metrics.STORE_REPURCHASE_RATE.remove(record.store_id)


class RedisStoreMembersSink(_RedisSink):
    """Writes store members (``state.store_members``) to Redis and sets the store gauges;
    one pipeline per batch, other items are ignored. Idempotent: a record replaces the
    stored one only if its ``as_of_ts`` is not older, so a replay never moves a store back.

    Outages and errors: as every Redis sink (``RedisRetry``), readiness ``redis-store-members[<worker>]``.
    """

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        from state.store_members import StoreMembersStore

        return self._build(
            StoreMembersStore,
            f"redis-store-members[{worker_index}]",
            kinds=(StoreMembers,),
            on_written=set_store_gauges,
        )


def set_health_gauges(written: list[StoreHealth]) -> None:
    """Sets the health score gauge from the records written."""
    for record in written:
        metrics.STORE_HEALTH_SCORE.labels(record.store_id).set(record.score)


class RedisStoreHealthSink(_RedisSink):
    """Writes store health (``state.store_health``: each store's hash and the ranking) to
    Redis and sets ``storepulse_store_health_score``; two pipelines per batch, other items
    are ignored. Idempotent: a record replaces the stored one only if its ``as_of_ts`` is
    not older, so a replay never moves a store back, nor its score in the ranking.

    Outages and errors: as every Redis sink (``RedisRetry``), readiness ``redis-store-health[<worker>]``.
    """

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        from state.store_health import StoreHealthStore

        return self._build(
            StoreHealthStore,
            f"redis-store-health[{worker_index}]",
            kinds=(StoreHealth,),
            on_written=set_health_gauges,
        )


class RedisMemberVisitsSink(_RedisSink):
    """Writes ``MemberVisits`` and applies ``VisitsErased`` to Redis (``state.member_visits``),
    one pipeline per batch, other items ignored. Idempotent: a record replaces the stored
    one only if its ``as_of_ts`` is not older and it is newer than the member's erasure
    tombstone (written by the profile sink), so a replay never moves it backwards nor
    writes an erased member back. Outages and errors as ``RedisProfileSink``
    (the same retry loop), with its own readiness condition ``redis-visits[<worker>]``."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        from state.member_visits import MemberVisitsStore

        return self._build(MemberVisitsStore, f"redis-visits[{worker_index}]", kinds=(MemberVisits, VisitsErased))
