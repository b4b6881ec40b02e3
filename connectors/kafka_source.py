"""Kafka input: one bytewax partition per Kafka partition, emitting whole reads as ``RawBatch``.

Reads one topic; writes nothing to Kafka (no consumer-group commits: partitions are
assigned, and the position lives in bytewax snapshots).

Delivery guarantee: at-least-once. A snapshot holds, per partition, the next offset to
read; after a crash the engine resumes there, so whatever was read after the last
snapshot is read again (bytewax state recovered from the same snapshot makes the state
exactly-once). Nothing is skipped, except messages the broker's retention deleted while
the engine was down: then reading restarts at the earliest offset still kept, and a
warning says how many offsets were lost.

Each ``next_batch`` returns what one non-blocking ``consume()`` call had ready, as one
``RawBatch`` (up to ``batch_size`` messages, in offset order). A partition with nothing
new for ``idle_after_s`` seconds of wall time emits ``RawBatch(..., messages=[],
idle=True)`` once, and again after each further ``idle_after_s``, so an idle partition
does not hold event time back. A quiet partition is polled with a backoff of a few
milliseconds up to 50 ms (``next_awake``), so it costs no CPU and adds at most 50 ms of
latency.

Errors: transient ones (broker down, transport, timeouts) never raise; librdkafka
reconnects by itself, and each error is counted in ``storepulse_kafka_consumer_errors_total``
and logged (throttled) with the topic and partition. Fatal ones raise
``BackendUnavailable`` with what to do: a topic that does not exist at start, failed
authentication, missing authorisation.

>>> KafkaBatchSource({"bootstrap.servers": "localhost:9092"}, "wifi.probes", batch_size=0)
Traceback (most recent call last):
...
ValueError: batch_size must be >= 1, got 0
>>> part_name("wifi.probes", 3), parse_part_name("wifi.probes/3")
('wifi.probes/3', ('wifi.probes', 3))
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

from connectors.kafka_admin import (
    ThrottledErrorLog,
    client_config,
    fatal_hint,
    is_fatal,
    list_partitions,
    make_client,
)
from connectors.records import RawBatch, RawMessage
from storepulse.errors import BackendUnavailable
from storepulse.metrics import KAFKA_CONSUMER_ERRORS

log = logging.getLogger(__name__)

_STARTING_OFFSETS = {"earliest": OFFSET_BEGINNING, "latest": OFFSET_END}
_MIN_POLL_S = 0.002
_MAX_POLL_S = 0.05

CONSUMER_DEFAULTS: dict[str, Any] = {
    # Required by librdkafka even though partitions are assigned, never subscribed.
    "group.id": "storepulse-assign-only",
    "fetch.queue.backoff.ms": 10,
    # A resume offset the broker no longer has (retention) restarts at the earliest kept.
    "auto.offset.reset": "earliest",
}
# Not overridable: the source relies on them.
_CONSUMER_FIXED: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": True,
}


def part_name(topic: str, partition: int) -> str:
    """The bytewax partition key of a Kafka partition (Kafka topic names have no ``/``)."""
    return f"{topic}/{partition}"


def parse_part_name(name: str) -> tuple[str, int]:
    topic, _, partition = name.rpartition("/")
    return topic, int(partition)


class KafkaBatchSource(FixedPartitionedSource[RawBatch, int]):
    """Read ``topic`` as ``RawBatch`` items, one bytewax partition per Kafka partition.

    ``config`` is the librdkafka config from ``Settings.kafka_client_config()``
    (bootstrap servers and any security settings, passed unchanged). Resume state is
    the next offset to read. ``tail=False`` ends each partition (StopIteration) at the
    end the broker reports when a fetch reaches it (the partition-EOF event).
    ``starting_offset`` ("earliest" or "latest") applies only to partitions without
    resume state; with "latest" the snapshot holds the logical offset -1 (end) until the
    first fetch resolves it, a window of well under a second.
    """

    def __init__(
        self,
        config: Mapping[str, str],
        topic: str,
        *,
        batch_size: int = 5000,
        idle_after_s: float = 10.0,
        tail: bool = True,
        starting_offset: str = "earliest",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if idle_after_s <= 0:
            raise ValueError(f"idle_after_s must be > 0, got {idle_after_s}")
        if starting_offset not in _STARTING_OFFSETS:
            raise ValueError(
                f"starting_offset must be 'earliest' or 'latest', got {starting_offset!r}"
            )
        if not topic or "/" in topic:
            raise ValueError(f"not a Kafka topic name: {topic!r}")
        self._config = dict(config)
        self._topic = topic
        self._batch_size = batch_size
        self._idle_after_s = idle_after_s
        self._tail = tail
        self._starting_offset = _STARTING_OFFSETS[starting_offset]

    def list_parts(self) -> list[str]:
        """Every partition of the topic; ``BackendUnavailable`` if it is missing or unreachable."""
        return [part_name(self._topic, p) for p in list_partitions(self._config, self._topic)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _KafkaBatchPartition:
        topic, partition = parse_part_name(for_part)
        if topic != self._topic:
            raise ValueError(f"{step_id}: partition {for_part!r} is not of topic {self._topic!r}")
        start = self._starting_offset if resume_state is None else resume_state
        return _KafkaBatchPartition(
            self._config,
            topic,
            partition,
            start,
            batch_size=self._batch_size,
            idle_after_s=self._idle_after_s,
            tail=self._tail,
            context=f"{step_id} {for_part}",
        )


class _KafkaBatchPartition(StatefulSourcePartition[RawBatch, int]):
    def __init__(
        self,
        config: Mapping[str, Any],
        topic: str,
        partition: int,
        start: int,
        *,
        batch_size: int,
        idle_after_s: float,
        tail: bool,
        context: str,
    ) -> None:
        self._topic = topic
        self._partition = partition
        self._next = start
        self._batch_size = batch_size
        self._idle_after_s = idle_after_s
        self._tail = tail
        self._context = context
        self._errors = KAFKA_CONSUMER_ERRORS.labels(topic=topic)
        self._error_log = ThrottledErrorLog(context)
        self._fatal: KafkaError | None = None
        self._first_read = True
        self._eof = False
        self._delay = 0.0
        self._idle_at = time.monotonic() + idle_after_s
        merged = client_config(config, **CONSUMER_DEFAULTS)
        merged.update(_CONSUMER_FIXED)
        merged["error_cb"] = self._on_error
        self._consumer = make_client(Consumer, merged)
        self._consumer.assign([TopicPartition(topic, partition, start)])

    def _on_error(self, err: KafkaError) -> None:
        if is_fatal(err):
            if self._fatal is None:
                self._fatal = err
            return
        self._errors.inc()
        self._error_log.error(err)

    def _raise_fatal(self, err: KafkaError) -> None:
        raise BackendUnavailable(
            f"Kafka {self._context}: {err.str()} ({err.name()}); {fatal_hint(err)}"
        )

    def next_batch(self) -> list[RawBatch]:
        if self._eof:
            raise StopIteration
        msgs = self._consumer.consume(self._batch_size, 0)
        # Every message without an error has an offset (only events may lack one).
        out = [
            RawMessage(m.offset(), m.key(), m.value())  # type: ignore[arg-type]
            for m in msgs
            if m.error() is None
        ]
        if len(out) != len(msgs):
            out = self._read_with_events(msgs)
        elif out:
            if self._first_read:
                self._check_gap(out[0].offset)
            self._next = out[-1].offset + 1
        if self._fatal is not None:
            self._raise_fatal(self._fatal)
        if out:
            self._first_read = False
            self._idle_at = time.monotonic() + self._idle_after_s
            self._delay = 0.0
            return [RawBatch(topic=self._topic, partition=self._partition, messages=out)]
        if self._eof:
            raise StopIteration
        self._delay = min(max(self._delay * 2, _MIN_POLL_S), _MAX_POLL_S)
        now = time.monotonic()
        if now >= self._idle_at:
            self._idle_at = now + self._idle_after_s
            return [RawBatch(topic=self._topic, partition=self._partition, messages=[], idle=True)]
        return []

    def _read_with_events(self, msgs: list[Any]) -> list[RawMessage]:
        """The slow path: messages mixed with events (EOF, errors), taken in order."""
        out: list[RawMessage] = []
        for m in msgs:
            err = m.error()
            if err is None:
                if self._first_read and not out:
                    self._check_gap(m.offset())
                out.append(RawMessage(m.offset(), m.key(), m.value()))
                self._next = m.offset() + 1
            elif err.code() == KafkaError._PARTITION_EOF:
                # The offset of an EOF event is the end: the next offset to read.
                self._next = m.offset()
                self._first_read = False
                if not self._tail:
                    self._eof = True
            elif is_fatal(err):
                self._raise_fatal(err)
            else:
                self._on_error(err)
        return out

    def _check_gap(self, first: int) -> None:
        if self._next >= 0 and first != self._next:
            log.warning(
                "Kafka %s: resumed at offset %d but the first message read is at %d; %s",
                self._context,
                self._next,
                first,
                f"{first - self._next} offsets were deleted (retention?) before being read"
                if first > self._next
                else "the resume offset was past the end (topic recreated?), re-reading",
            )

    def next_awake(self) -> datetime | None:
        if self._delay <= 0:
            return None
        wait = min(self._delay, max(0.0, self._idle_at - time.monotonic()))
        return datetime.now(UTC) + timedelta(seconds=wait)

    def snapshot(self) -> int:
        return self._next

    def close(self) -> None:
        try:
            self._consumer.close()
        except Exception as exc:  # closing must not turn a clean finish into a failure
            log.warning("Kafka %s: closing the consumer failed: %s", self._context, exc)
