"""Ingest: from raw partition reads to per-site batches, keyed by source partition.

Reads ``RawBatch`` (one read of one partition) keyed by ``topic/partition``. Decodes and
validates the whole batch (``connectors.decode``), then routes the accepted records to
their sites as one ``SiteBatch`` per site, each carrying how far the partition has got in
event time. Sites this partition fed before but not in this batch get an empty
``SiteBatch`` with the new progress, and an idle read is passed on to all of them, so
every site's event clock hears from every partition that feeds it. Once per catalog
version, a partition greets each catalog site it has not greeted yet with an idle
marker: a site's clock waits for every partition until it has heard from it
(``flows.clock``), and this is how it hears from those that carry nothing for it.

State per partition: the sites it has fed and greeted, and its event-time progress
(small; snapshotted with the Kafka offsets, so a restart resumes both together). Rejected records go out as
``DeadLetter`` and are counted by topic and reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import bytewax.operators as op
from bytewax.dataflow import Stream

from connectors.catalog import Catalog
from connectors.records import RawBatch, Sale, Sighting, SiteBatch
from connectors.schemas import DeadLetter
from storepulse import metrics


class BatchDecoder(Protocol):
    def decode(
        self, batch: RawBatch, catalog: Catalog
    ) -> tuple[list[tuple[str, Sighting]], list[DeadLetter]] | tuple[list[tuple[str, Sale]], list[DeadLetter]]: ...


@dataclass
class PartitionState:
    sites: set[str] = field(default_factory=set)
    greeted: set[str] = field(default_factory=set)
    catalog_version: str | None = None
    progress_ts: int | None = None


Routed = tuple[str, SiteBatch] | DeadLetter


def route(state: PartitionState, batch: RawBatch, decoder: BatchDecoder, catalog: Catalog) -> list[Routed]:
    """Decode one partition read and route it to sites (updates ``state``)."""
    source = batch.source
    if batch.idle:
        return [
            (site, SiteBatch(site=site, source=source, progress_ts=state.progress_ts, idle=True))
            for site in sorted(state.sites)
        ]
    good, bad = decoder.decode(batch, catalog)
    metrics.INPUT_RECORDS.labels(batch.topic).inc(len(good) + len(bad))
    for dead in bad:
        metrics.INPUT_REJECTED.labels(batch.topic, dead.reason).inc()
    by_site: dict[str, list[Sighting | Sale]] = {}
    for site, record in good:
        by_site.setdefault(site, []).append(record)
        if state.progress_ts is None or record.ts > state.progress_ts:
            state.progress_ts = record.ts
    out: list[Routed] = list(bad)
    for site in sorted(state.sites | by_site.keys()):
        site_batch = SiteBatch(site=site, source=source, progress_ts=state.progress_ts)
        records = by_site.get(site)
        if records and isinstance(records[0], Sighting):
            site_batch.sightings = records  # type: ignore[assignment]
        elif records:
            site_batch.sales = records  # type: ignore[assignment]
        out.append((site, site_batch))
    state.sites |= by_site.keys()
    if state.catalog_version != catalog.version:
        state.catalog_version = catalog.version
        for site in sorted(catalog.sites() - state.sites - state.greeted):
            out.append((site, SiteBatch(site=site, source=source, progress_ts=state.progress_ts, idle=True)))
        state.greeted |= catalog.sites()
    return out


def ingest(
    step_id: str,
    raw: Stream[RawBatch],
    decoder: BatchDecoder,
    catalog: Callable[[], Catalog],
) -> tuple[Stream[tuple[str, SiteBatch]], Stream[DeadLetter]]:
    """Wire the decode step: returns (site-keyed batches, dead letters)."""

    def mapper(state: PartitionState | None, batch: RawBatch) -> tuple[PartitionState, Iterable[Routed]]:
        state = state or PartitionState()
        return state, route(state, batch, decoder, catalog())

    keyed = op.key_on(f"key_{step_id}_by_partition", raw, lambda b: b.source)
    routed = op.key_rm(f"unkey_{step_id}", op.stateful_flat_map(step_id, keyed, mapper))
    # (site, SiteBatch) | DeadLetter
    split = op.branch(f"split_{step_id}", routed, lambda r: isinstance(r, DeadLetter))
    return split.falses, split.trues  # type: ignore[return-value]
