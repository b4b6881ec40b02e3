"""Kafka input: one bytewax partition per Kafka partition, emitting whole reads as ``RawBatch``.

Reads one topic. Writes to Kafka only the offsets of a consumer group, for monitoring:
at each bytewax snapshot every partition commits its next offset to the group
``group_id`` (default ``storepulse``), asynchronously, as Flink does after a checkpoint,
so ``kafka-consumer-groups --describe --group storepulse`` and lag exporters see the
engine. Those offsets are never read back: partitions are assigned, not subscribed, and
the position lives only in bytewax snapshots (a group offset can be up to one epoch
ahead of the snapshot a restart resumes from). A failed commit is counted in
``storepulse_kafka_commit_failures_total`` and logged (throttled), never raised.

Lag: ``storepulse_kafka_consumer_lag_messages{topic,partition}`` is the partition's high
watermark minus the next offset to read. The watermark is the one librdkafka cached from
the last fetch response (no broker round trip; under a microsecond per batch), so the
gauge appears with the first fetch and stays at its last value while the broker is down.

Partitions added while running: bytewax lists the partitions once, at start. The reader
of partition 0 asks for the topic's partition count every ``partition_check_s`` (30 s)
without blocking; when it has grown it logs an ERROR saying that a restart is needed
and sets ``storepulse_kafka_partitions_unread{topic}``. A restart lists the new
partitions and reads them from ``starting_offset`` (they have no resume state).

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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from connectors.kafka_admin import (
    PartitionCountWatch,
    ThrottledErrorLog,
    client_config,
    fatal_hint,
    is_fatal,
    list_partitions,
    make_client,
)
from connectors.records import PartitionId, RawBatch, RawMessage
from storepulse import health
from storepulse.errors import BackendUnavailable
from storepulse.metrics import (
    KAFKA_COMMIT_FAILURES,
    KAFKA_CONSUMER_ERRORS,
    KAFKA_CONSUMER_LAG,
    KAFKA_PARTITIONS_UNREAD,
)

log = logging.getLogger(__name__)

_STARTING_OFFSETS = {"earliest": OFFSET_BEGINNING, "latest": OFFSET_END}
_MIN_POLL_S = 0.002
_MAX_POLL_S = 0.05
_RECOVERED_AFTER_S = 15.0  # no transport error for this long: the broker answers again

DEFAULT_GROUP_ID = "storepulse"
PARTITION_CHECK_S = 30.0

CONSUMER_DEFAULTS: dict[str, Any] = {
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


class KafkaBatchSource(FixedPartitionedSource[RawBatch, int]):
    """Read ``topic`` as ``RawBatch`` items, one bytewax partition per Kafka partition.

    ``config`` is the librdkafka config from ``Settings.kafka_client_config()``
    (bootstrap servers and any security settings, passed unchanged). Resume state is
    the next offset to read. ``tail=False`` ends each partition (an idle batch, then StopIteration) at
    the end the broker reports when a fetch reaches it (the partition-EOF event).
    ``starting_offset`` ("earliest" or "latest") applies only to partitions without
    resume state; with "latest" the snapshot holds the logical offset -1 (end) until the
    first fetch resolves it, a window of well under a second. ``group_id`` is the
    consumer group the snapshotted offsets are committed to, for monitoring only (it
    wins over a ``group.id`` in ``config``). ``partition_check_s`` is how often the
    reader of partition 0 checks whether the topic has grown. ``timestamps`` sets each
    ``RawMessage.timestamp_ms`` to the message's Kafka timestamp (a few percent of a bare
    read: only ``pos.transactions`` asks, for the sale-to-profile latency).
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
        group_id: str = DEFAULT_GROUP_ID,
        partition_check_s: float = PARTITION_CHECK_S,
        timestamps: bool = False,
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
        if not group_id:
            raise ValueError("group_id must not be empty")
        if partition_check_s <= 0:
            raise ValueError(f"partition_check_s must be > 0, got {partition_check_s}")
        self._config = dict(config)
        self._topic = topic
        self._batch_size = batch_size
        self._idle_after_s = idle_after_s
        self._tail = tail
        self._starting_offset_name = starting_offset
        self._starting_offset = _STARTING_OFFSETS[starting_offset]
        self._group_id = group_id
        self._partition_check_s = partition_check_s
        self._timestamps = timestamps
        self._listed: int | None = None

    def list_parts(self) -> list[str]:
        """Every partition of the topic; ``BackendUnavailable`` if it is missing or unreachable."""
        partitions = list_partitions(self._config, self._topic)
        self._listed = len(partitions)
        return [str(PartitionId(self._topic, p)) for p in partitions]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _KafkaBatchPartition:
        topic, partition = PartitionId.parse(for_part)
        if topic != self._topic:
            raise ValueError(f"{step_id}: partition {for_part!r} is not of topic {self._topic!r}")
        start = self._starting_offset if resume_state is None else resume_state
        watch = None
        if partition == 0:
            watch = _GrowthCheck(
                PartitionCountWatch(self._config, topic, self._partition_check_s),
                topic,
                self._listed,
                self._starting_offset_name,
            )
        return _KafkaBatchPartition(
            self._config,
            topic,
            partition,
            start,
            batch_size=self._batch_size,
            idle_after_s=self._idle_after_s,
            tail=self._tail,
            context=f"{step_id} {for_part}",
            group_id=self._group_id,
            growth=watch,
            timestamps=self._timestamps,
        )


def _timestamp_ms(message: Any) -> int | None:
    """The message's Kafka timestamp (create or log-append time), None if it has none."""
    kind, ts = message.timestamp()
    return ts if kind != TIMESTAMP_NOT_AVAILABLE and ts >= 0 else None


class _GrowthCheck:
    """Says loudly (ERROR log, gauge) when the topic has more partitions than are read.

    ``listed`` is the count bytewax was given at start (None if ``list_parts`` ran in
    another process: then the first count read is the baseline).
    """

    def __init__(self, watch: PartitionCountWatch, topic: str, listed: int | None,
                 starting_offset: str) -> None:
        self._watch = watch
        self._topic = topic
        self._listed = listed
        self._reported = listed
        self._starting_offset = starting_offset
        self._unread = KAFKA_PARTITIONS_UNREAD.labels(topic=topic)
        self._unread.set(0)

    def check(self) -> None:
        count = self._watch.poll()
        if count is None:
            return
        if self._listed is None:
            self._listed = self._reported = count
            return
        if self._reported is not None and count <= self._reported:
            return
        self._reported = count
        self._unread.set(count - self._listed)
        log.error(
            "Kafka topic %r now has %d partitions, but this engine reads the %d it listed at "
            "start: partitions %d..%d are NOT read. Restart the engine: a restart reads "
            "them from the %s offset (they have no resume state).",
            self._topic, count, self._listed, self._listed, count - 1, self._starting_offset,
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
        group_id: str = DEFAULT_GROUP_ID,
        growth: _GrowthCheck | None = None,
        timestamps: bool = False,
    ) -> None:
        self._timestamps = timestamps
        self._topic = topic
        self._partition = partition
        self._tp = TopicPartition(topic, partition)
        self._next = start
        self._batch_size = batch_size
        self._idle_after_s = idle_after_s
        self._tail = tail
        self._context = context
        self._errors = KAFKA_CONSUMER_ERRORS.labels(topic=topic)
        self._error_log = ThrottledErrorLog(context)
        self._lag = KAFKA_CONSUMER_LAG.labels(topic=topic, partition=str(partition))
        self._commit_failures = KAFKA_COMMIT_FAILURES.labels(topic=topic)
        self._commit_log = ThrottledErrorLog(f"{context} offset commit to group {group_id!r}")
        self._committed: int | None = None  # last offset submitted and not reported failed
        self._growth = growth
        self._fatal: KafkaError | None = None
        self._first_read = True
        self._eof = False
        self._delay = 0.0
        self._idle_at = time.monotonic() + idle_after_s
        self._part = str(PartitionId(topic, partition))
        self._failing_since: float | None = None  # monotonic time of the last transport error
        self._ended = False
        health.kafka_ok(self._part)  # its partitions were just listed
        merged = client_config(config, **CONSUMER_DEFAULTS)
        merged.update(_CONSUMER_FIXED)
        merged["group.id"] = group_id
        merged["error_cb"] = self._on_error
        merged["on_commit"] = self._on_commit
        self._consumer = make_client(Consumer, merged)
        self._consumer.assign([TopicPartition(topic, partition, start)])

    def _on_error(self, err: KafkaError) -> None:
        if is_fatal(err):
            if self._fatal is None:
                self._fatal = err
            return
        self._errors.inc()
        self._error_log.error(err)
        self._failing_since = time.monotonic()
        health.kafka_failed(f"{err.name()}: {err.str()}"[:160], self._part)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        failed = err if err is not None else next((tp.error for tp in partitions if tp.error), None)
        if failed is not None:
            self._failed_commit(failed)

    def _failed_commit(self, err: KafkaError | str) -> None:
        self._committed = None  # the next snapshot commits again
        self._commit_failures.inc()
        self._commit_log.error(err)

    def _update_lag(self) -> None:
        """High watermark from the last fetch response (cached: no request) minus next."""
        if self._next < 0:  # a logical offset (latest, not yet resolved)
            return
        try:
            _low, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        except KafkaException:
            return
        if high >= 0:
            self._lag.set(max(0, high - self._next))

    def _raise_fatal(self, err: KafkaError) -> None:
        raise BackendUnavailable(
            f"Kafka {self._context}: {err.str()} ({err.name()}); {fatal_hint(err)}"
        )

    def next_batch(self) -> list[RawBatch]:
        if self._ended:
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
        if self._timestamps:
            for raw, m in zip(out, (m for m in msgs if m.error() is None), strict=True):
                raw.timestamp_ms = _timestamp_ms(m)
        elif out:
            if self._first_read:
                self._check_gap(out[0].offset)
            self._next = out[-1].offset + 1
        if self._fatal is not None:
            self._raise_fatal(self._fatal)
        self._update_lag()
        if self._growth is not None:
            self._growth.check()
        if self._failing_since is not None and (
            out or self._eof or time.monotonic() - self._failing_since > _RECOVERED_AFTER_S
        ):
            self._failing_since = None
            health.kafka_ok(self._part)
        if out:
            self._first_read = False
            self._idle_at = time.monotonic() + self._idle_after_s
            self._delay = 0.0
            return [RawBatch(topic=self._topic, partition=self._partition, messages=out)]
        if self._eof:
            if self._ended:
                raise StopIteration
            # Say idle before ending, so a partition with nothing (left) to read releases
            # every site's event clock now rather than when the last partition ends.
            self._ended = True
            return [RawBatch(topic=self._topic, partition=self._partition, messages=[], idle=True)]
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
        """The next offset to read; also committed (async) to the group, for monitoring."""
        if self._next >= 0 and self._next != self._committed:
            self._committed = self._next
            try:
                self._consumer.commit(
                    offsets=[TopicPartition(self._topic, self._partition, self._next)],
                    asynchronous=True,
                )
            except Exception as exc:  # monitoring only: never fails a snapshot
                self._failed_commit(str(exc))
        return self._next

    def close(self) -> None:
        try:
            self._consumer.close()
        except Exception as exc:  # closing must not turn a clean finish into a failure
            log.warning("Kafka %s: closing the consumer failed: %s", self._context, exc)
