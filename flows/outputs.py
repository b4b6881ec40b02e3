"""Where the engine's results go besides Redis (``flows.redis_sinks``): Prometheus
gauges, JSONL files, Kafka (through ``EncodedSink``).

Each sink says its guarantee. Prometheus counters may count a replayed batch twice
(metrics are at-least-once, as everywhere). JSONL files are append-only: after a crash
and restart they may repeat records (at-least-once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import msgspec
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.catalog import Catalog
from connectors.schemas import (
    DeadLetter,
    FootfallMinute,
    PeopleCount,
    SalesBucket,
    StoreHour,
    Visit,
)
from flows.alert_notices import AlertNotice
from state.people import PeopleTotals, ScopePeople
from storepulse import health, metrics


class _JsonlPartition(StatelessSinkPartition[Any]):
    def __init__(self, directory: Path, suffix: str) -> None:
        self.directory = directory
        self.suffix = suffix
        self.files: dict[str, IO[bytes]] = {}
        self.encoder = msgspec.json.Encoder()

    def write_batch(self, items: list[Any]) -> None:
        for item in items:
            name = type(item).__name__
            f = self.files.get(name)
            if f is None:
                path = self.directory / f"{_snake(name)}{self.suffix}.jsonl"
                f = self.files[name] = path.open("ab")
            f.write(self.encoder.encode(item) + b"\n")
        for f in self.files.values():
            f.flush()

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class JsonlSink(DynamicSink[Any]):
    """Appends each record as a JSON line to ``<directory>/<record_type>.jsonl``
    (``-w<N>`` before ``.jsonl`` when several workers write)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _JsonlPartition:
        self.directory.mkdir(parents=True, exist_ok=True)
        suffix = "" if worker_count == 1 else f"-w{worker_index}"
        return _JsonlPartition(self.directory, suffix)


def _snake(name: str) -> str:
    """File name of a record type.

    >>> _snake("FootfallMinute")
    'footfall_minute'
    """
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class _MetricsPartition(StatelessSinkPartition[Any]):
    def __init__(self, catalog: Callable[[], Catalog] | None) -> None:
        self.catalog = catalog
        self.people = PeopleTotals()

    def _currency(self, store_id: str) -> str:
        store = self.catalog().store(store_id) if self.catalog else None
        return store.currency if store else "XXX"  # ISO 4217 for "no currency"

    def write_batch(self, items: list[Any]) -> None:
        people = [item for item in items if isinstance(item, PeopleCount)]
        if people:
            set_people_gauges(self.people.add(people))
        for item in items:
            if isinstance(item, FootfallMinute):
                metrics.DEVICES.labels(item.scope, item.scope_id).set(item.devices)
                metrics.DEVICES_1H.labels(item.scope, item.scope_id).set(item.devices_1h)
                if item.scope == "store":
                    metrics.VISITORS_INSIDE.labels(item.scope_id).set(item.visitors_inside)
                    if item.sales:
                        metrics.SALES.labels(item.scope_id).inc(item.sales)
                        metrics.SALES_AMOUNT.labels(item.scope_id, self._currency(item.scope_id)).inc(
                            item.sales_amount
                        )
            elif isinstance(item, StoreHour):
                if item.capture_rate is not None:
                    metrics.CAPTURE_RATE.labels(item.store_id).set(item.capture_rate)
                if item.conversion is not None:
                    metrics.CONVERSION.labels(item.store_id).set(item.conversion)
            elif isinstance(item, Visit):
                kind = "randomized" if item.randomized else "stable"
                metrics.VISITS.labels(item.store_id, kind).inc()
                metrics.VISIT_DWELL.labels(item.store_id).observe(item.dwell_s)
            elif isinstance(item, SalesBucket):
                set_bucket_gauges(item)
            elif isinstance(item, AlertNotice):
                metrics.ALERT_NOTICES.labels(item.status, item.severity, item.cause).inc()
                metrics.STORE_ALERT_FIRING.labels(item.store_id).set(1 if item.status == "firing" else 0)


def set_people_gauges(totals: list[ScopePeople]) -> None:
    """The people gauges of each scope's newest window (``state.people.PeopleTotals``)."""
    for total in totals:
        metrics.PEOPLE.labels(total.scope, total.scope_id).set(total.people)
        metrics.PEOPLE_MACS.labels(total.scope, total.scope_id).set(total.macs)
        metrics.PEOPLE_DEVICES.labels(total.scope, total.scope_id).set(total.devices)


def set_bucket_gauges(bucket: SalesBucket) -> None:
    """The store's gauges of its newest closed 5-minute bucket. No expected series while
    there is no expectation (closed, cold start), so a panel shows a gap, not a stale value.
    The firing gauge follows the bucket too: a store whose alert resolved while the engine
    ran without its state (no resolved notice then) goes back to 0."""
    store = bucket.store_id
    metrics.STORE_SALES_5M.labels(store).set(bucket.net_sales)
    if bucket.expected is not None:
        metrics.STORE_SALES_EXPECTED_5M.labels(store).set(bucket.expected)
    else:
        with contextlib.suppress(KeyError):  # never set: nothing to remove
            metrics.STORE_SALES_EXPECTED_5M.remove(store)
    metrics.STORE_DROP_SCORE.labels(store).set(bucket.drop_score)
    metrics.STORE_ALERT_FIRING.labels(store).set(1 if bucket.firing else 0)


class MetricsSink(DynamicSink[Any]):
    """Updates the footfall and sales-watch gauges and counters of ``storepulse.metrics``
    (other items, ``StoreHealth`` included, are ignored: ``RedisStoreHealthSink`` sets the
    health gauge from what Redis took). The people gauges show each sensor's, zone's and
    store's newest closed window, summed over its sensors whatever batches their records
    came in, and 0 once a newer window of its mall passed without a record of it
    (``state.people.PeopleTotals``). Sales amounts are labelled with the store's currency
    from ``catalog``, so no sum mixes currencies. ``AlertNotice`` counts by status, severity
    and cause, and sets the store's firing gauge (1 firing, 0 resolved) as its buckets do."""

    def __init__(self, catalog: Callable[[], Catalog] | None = None) -> None:
        self.catalog = catalog

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _MetricsPartition:
        health.dataflow_running()
        return _MetricsPartition(self.catalog)


class _EncodedPartition(StatelessSinkPartition[Any]):
    def __init__(self, inner: StatelessSinkPartition[Any], encode: Callable[[Any], Any]) -> None:
        self.inner = inner
        self.encode = encode

    def write_batch(self, items: list[Any]) -> None:
        self.inner.write_batch([self.encode(item) for item in items])

    def close(self) -> None:
        self.inner.close()


class EncodedSink(DynamicSink[Any]):
    """Encodes each record before a sink of bytes (e.g. a Kafka sink of (key, value)).
    Same guarantee as the sink it wraps."""

    def __init__(self, inner: DynamicSink[Any], encode: Callable[[Any], Any]) -> None:
        self.inner = inner
        self.encode = encode

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _EncodedPartition:
        return _EncodedPartition(self.inner.build(step_id, worker_index, worker_count), self.encode)


def encode_deadletter(dead: DeadLetter) -> tuple[bytes, bytes]:
    """(key, value) for the dead-letter topic: keyed by the source topic."""
    return dead.topic.encode(), msgspec.json.encode(dead)
