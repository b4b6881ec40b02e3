"""Ingest: from raw partition reads to per-site batches, keyed by source partition.

Reads ``RawBatch`` (one read of one partition) keyed by ``topic/partition``. Decodes and
validates the whole batch (``connectors.decode``), then routes the accepted records to
their sites as one ``SiteBatch`` per site, each carrying how far the partition has got in
event time (``flows.clock.PartitionClock``: the slowest of the sensors or tills still
reporting on it).

Every site hears every partition's progress, whether the partition carries records for
it or not: with each batch that has records for it, and with every read that moves the
partition's progress into a new second (or follows a catalog change, so a new site gets
its clock at once). An idle read (nothing new for the source's idle timeout) is passed on
to every site, so a partition that carries nothing, never or for a while, stops holding
any site back after the idle timeout. A partition that is being read holds every site
back to its progress, as Flink's per-partition watermarks do: after downtime it may
still carry any site's records, so the windows of a backlog equal those of live reading.

State per partition: its ``PartitionClock``, the sites it has fed, the progress second it
last announced to all sites and the catalog version it did so under (small; snapshotted
with the Kafka offsets, so a restart resumes both together). Rejected records go out as
``DeadLetter`` and are counted by topic and reason. Each source's newest ``ts`` minus the
wall clock is a gauge (``storepulse_source_clock_offset_seconds``: its clock offset at the
live edge, how far behind the read is in a backlog), and a source more than a minute
ahead in three reads in a row is named in the log.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard

import bytewax.operators as op
from bytewax.dataflow import Stream

from connectors.catalog import Catalog
from connectors.records import MemberChange, RawBatch, Sale, Sighting, SiteBatch
from connectors.schemas import DeadLetter
from flows.clock import PartitionClock, clock_offsets
from storepulse import metrics

log = logging.getLogger(__name__)
FAR_OFFSET_MS = 60_000  # a source this far ahead of the engine's clock ...
FAR_READS = 3  # ... in this many reads in a row is named in the log


class BatchDecoder(Protocol):
    def decode(
        self, batch: RawBatch, catalog: Catalog
    ) -> tuple[list[tuple[str, Sighting]], list[DeadLetter]] | tuple[list[tuple[str, Sale]], list[DeadLetter]]: ...


# Whose clock stamps a record: the sensor's for a sighting, the store's tills' for a sale.
_SENSOR_CLOCK, _STORE_CLOCK = operator.attrgetter("sensor_id"), operator.attrgetter("store_id")


@dataclass
class PartitionState:
    clock: PartitionClock
    sites: set[str] = field(default_factory=set)
    announced_s: int | None = None
    catalog_version: str | None = None
    far_reads: dict[str, int] = field(default_factory=dict)  # reads in a row a source was far off

    def __setstate__(self, saved: dict[str, Any]) -> None:
        """Resume a snapshot taken before sources had clocks (progress per partition); the
        ingest step sets this run's ``hold_ms`` and ``idle_s`` on every resumed clock."""
        if "clock" not in saved:
            clock = PartitionClock(hold_ms=300_000, idle_s=10.0, progress_ts=saved.get("progress_ts"))
            saved = {"clock": clock, "sites": saved.get("sites", set())}
        self.__dict__.update({"announced_s": None, "catalog_version": None, "far_reads": {}, **saved})


Routed = tuple[str, SiteBatch] | DeadLetter


def is_dead(item: Routed) -> TypeGuard[DeadLetter]:
    return isinstance(item, DeadLetter)


@dataclass(frozen=True)
class Ingested:
    """The decode step's two streams."""

    batches: Stream[tuple[str, SiteBatch]]  # (site, SiteBatch)
    dead: Stream[DeadLetter]


def route(state: PartitionState, batch: RawBatch, decoder: BatchDecoder, catalog: Catalog, now: float) -> list[Routed]:
    """Decode one partition read (at wall time ``now``) and route it to sites (updates ``state``)."""
    source = batch.source
    if batch.idle:
        progress = state.clock.progress_ts
        return [
            (site, SiteBatch(site=site, source=source, progress_ts=progress, idle=True))
            for site in sorted(catalog.sites() | state.sites)
        ]
    good, bad = decoder.decode(batch, catalog)
    metrics.INPUT_RECORDS.labels(batch.topic).inc(len(good) + len(bad))
    for dead in bad:
        metrics.INPUT_REJECTED.labels(batch.topic, dead.reason).inc()
    by_site: dict[str, list[Sighting | Sale]] = {}
    newest: dict[str, int] = {}
    clock_of = _SENSOR_CLOCK if good and isinstance(good[0][1], Sighting) else _STORE_CLOCK
    for site, record in good:
        records = by_site.get(site)
        if records is None:
            records = by_site[site] = []
        records.append(record)
        key = clock_of(record)
        if newest.get(key, -1) < record.ts:
            newest[key] = record.ts
    progress = state.clock.advance(newest, now)
    _watch_offsets(state, batch, newest, now)
    out: list[Routed] = list(bad)
    targets = set(by_site)
    if progress is not None and (progress // 1000 != state.announced_s or state.catalog_version != catalog.version):
        state.announced_s = progress // 1000
        state.catalog_version = catalog.version
        targets |= catalog.sites() | state.sites
    for site in sorted(targets):
        site_batch = SiteBatch(site=site, source=source, progress_ts=progress)
        records = by_site.get(site)
        if records and isinstance(records[0], Sighting):
            site_batch.sightings = records  # type: ignore[assignment]
        elif records:
            site_batch.sales = records  # type: ignore[assignment]
        out.append((site, site_batch))
    state.sites |= by_site.keys()
    return out


def _watch_offsets(state: PartitionState, batch: RawBatch, newest: dict[str, int], now: float) -> None:
    """Export each source's newest ``ts`` in this read against the wall clock; name one that
    is far ahead in ``FAR_READS`` reads in a row in the log (once, until it is back within
    half of that). Only clocks ahead are named: a backlog makes every source look behind."""
    if not newest:
        return
    for key, offset_ms in clock_offsets(newest, int(now * 1000)).items():
        metrics.SOURCE_CLOCK_OFFSET.labels(batch.topic, key).set(offset_ms / 1000)
        if offset_ms > FAR_OFFSET_MS:
            streak = state.far_reads[key] = state.far_reads.get(key, 0) + 1
            if streak == FAR_READS:
                log.warning(
                    "%s: the clock of %s is %+.0f s ahead of this engine's; its records are placed "
                    "by its own clock, up to STOREPULSE_MAX_CLOCK_SKEW_S ahead (check its NTP)",
                    batch.source,
                    key,
                    offset_ms / 1000,
                )
        elif offset_ms <= FAR_OFFSET_MS // 2 and state.far_reads.pop(key, 0) >= FAR_READS:
            log.info("%s: the clock of %s is back within %.0f s of the others", batch.source, key, offset_ms / 1000)


def ingest(
    step_id: str,
    raw: Stream[RawBatch],
    decoder: BatchDecoder,
    catalog: Callable[[], Catalog],
    *,
    hold_ms: int,
    idle_s: float,
    clock: Callable[[], float] = time.time,
) -> Ingested:
    """Wire the decode step: site-keyed batches and dead letters. ``hold_ms`` and
    ``idle_s`` release a silent source (see ``PartitionClock``); ``clock`` is wall time."""

    def mapper(state: PartitionState | None, batch: RawBatch) -> tuple[PartitionState, Iterable[Routed]]:
        if state is None:
            state = PartitionState(PartitionClock(hold_ms, idle_s))
        else:  # resumed: the settings of this run apply
            state.clock.hold_ms, state.clock.idle_s = hold_ms, idle_s
        return state, route(state, batch, decoder, catalog(), clock())

    keyed = op.key_on(f"key_{step_id}_by_partition", raw, lambda b: b.source)
    routed = op.key_rm(f"unkey_{step_id}", op.stateful_flat_map(step_id, keyed, mapper))
    # (site, SiteBatch) | DeadLetter
    split = op.branch(f"split_{step_id}", routed, is_dead)
    return Ingested(batches=split.falses, dead=split.trues)  # type: ignore[arg-type]


@dataclass(frozen=True)
class MemberChanges:
    """The member-event decode step's two streams."""

    changes: Stream[tuple[str, MemberChange]]  # (member_id, MemberChange)
    dead: Stream[DeadLetter]


class MemberDecoder(Protocol):
    def decode(self, batch: RawBatch) -> tuple[list[tuple[str, MemberChange]], list[DeadLetter]]: ...


def ingest_members(step_id: str, raw: Stream[RawBatch], decoder: MemberDecoder) -> MemberChanges:
    """Wire the ``members.events`` decode step: member-keyed changes and dead letters. No
    event clock: member events feed profiles, which are kept as of their own newest event."""

    def decode(batch: RawBatch) -> list[tuple[str, MemberChange] | DeadLetter]:
        if batch.idle:
            return []
        good, bad = decoder.decode(batch)
        metrics.INPUT_RECORDS.labels(batch.topic).inc(len(good) + len(bad))
        metrics.INPUT_ACCEPTED.labels(batch.topic).inc(len(good))
        for dead in bad:
            metrics.INPUT_REJECTED.labels(batch.topic, dead.reason).inc()
        return [*good, *bad]

    decoded = op.flat_map(step_id, raw, decode)
    split = op.branch(f"split_{step_id}", decoded, lambda item: isinstance(item, DeadLetter))
    return MemberChanges(changes=split.falses, dead=split.trues)  # type: ignore[arg-type]
