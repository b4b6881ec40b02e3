"""Where the engine's results go: Redis, Prometheus gauges, JSONL files, Kafka.

Each sink says its guarantee. Redis writes are absolute values keyed by event time, so
the replay after a restart rewrites the same values. Prometheus counters may count a
replayed batch twice (metrics are at-least-once, as everywhere). JSONL files are
append-only: after a crash and restart they may repeat records (at-least-once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import msgspec
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.schemas import DeadLetter, FootfallMinute, StoreHour, Visit
from storepulse import metrics

log = logging.getLogger(__name__)
REDIS_ATTEMPTS = 5


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
    def write_batch(self, items: list[Any]) -> None:
        for item in items:
            if isinstance(item, FootfallMinute):
                metrics.DEVICES.labels(item.scope, item.scope_id).set(item.devices)
                metrics.DEVICES_1H.labels(item.scope, item.scope_id).set(item.devices_1h)
                if item.scope == "store":
                    metrics.VISITORS_INSIDE.labels(item.scope_id).set(item.visitors_inside)
                    if item.sales:
                        metrics.SALES.labels(item.scope_id).inc(item.sales)
                        metrics.SALES_AMOUNT.labels(item.scope_id).inc(item.sales_amount)
            elif isinstance(item, StoreHour):
                if item.capture_rate is not None:
                    metrics.CAPTURE_RATE.labels(item.store_id).set(item.capture_rate)
                if item.conversion is not None:
                    metrics.CONVERSION.labels(item.store_id).set(item.conversion)
            elif isinstance(item, Visit):
                kind = "randomized" if item.randomized else "stable"
                metrics.VISITS.labels(item.store_id, kind).inc()
                metrics.VISIT_DWELL.labels(item.store_id).observe(item.dwell_s)


class MetricsSink(DynamicSink[Any]):
    """Updates the footfall gauges and counters of ``storepulse.metrics``."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _MetricsPartition:
        return _MetricsPartition()


class _RedisPartition(StatelessSinkPartition[Any]):
    def __init__(self, url: str) -> None:
        from state.footfall import FootfallStore
        from state.redis import connect

        self.store = FootfallStore(connect(url))

    def write_batch(self, items: list[Any]) -> None:
        records = [i for i in items if isinstance(i, FootfallMinute | StoreHour)]
        if not records:
            return
        for attempt in range(REDIS_ATTEMPTS):
            try:
                self.store.write(records)
                return
            except redis.RedisError as exc:  # writes are idempotent: retrying is safe
                if attempt == REDIS_ATTEMPTS - 1:
                    raise
                delay = 0.2 * 2**attempt
                log.warning("Redis write of %d records failed (%s); retry in %.1f s", len(records), exc, delay)
                time.sleep(delay)


class RedisFootfallSink(DynamicSink[Any]):
    """Writes minutes and store-hours to Redis (``state.footfall``); one pipeline per batch.
    Idempotent: a replay rewrites the same absolute values. A failed write is retried with
    backoff for about 6 s; then the error stops the dataflow, which resumes from its last
    snapshot when restarted (nothing is lost)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        return _RedisPartition(self.url)


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
