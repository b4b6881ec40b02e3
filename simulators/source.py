"""A bytewax source that reads simulated events as if from Kafka partitions.

Reads an iterable of ``SimEvent`` (materialised in memory on first use); writes nothing.
Events are partitioned by key as librdkafka's default (``consistent_random``)
partitioner does for keyed messages: ``crc32(key) % partitions``, so a key always lands
in the same partition, as it would if written to Kafka by ``simulators.kafka_writer``.
Parts are named ``<topic>/<partition>`` (actual topic names, after ``topics`` maps the
logical ones); each emits ``RawBatch`` items with offsets 0, 1, 2, ... in event order.

Resume state is the next offset to read: a part rebuilt from a snapshot goes on exactly
where the snapshot was taken, with no message skipped or repeated. A part raises
``StopIteration`` when it has emitted its last message.

With ``speedup`` (e.g. 3000: a day in under 30 s) a message is released only once the
simulated clock has reached its ``ts``: clock = the earliest pending ``ts`` when reading
starts + ``speedup`` x wall seconds since. A part with nothing due sleeps through
``next_awake`` rather than spinning, and after ``idle_s`` wall seconds with nothing due
emits an empty ``RawBatch(idle=True)``, as the Kafka source does, so a quiet partition
stops holding event time back (``idle_s <= 0``: never). Without ``speedup`` parts emit as fast as they are read.

>>> from simulators.mall import SimEvent
>>> evs = [SimEvent("pos.transactions", k, b"{}", ts) for k, ts in [(b"S1", 5), (b"S4", 6),
...                                                                  (b"S1", 7)]]
>>> src = SimulatorSource(evs, partitions={"pos.transactions": 2},
...                       topics={"pos.transactions": "pos"})
>>> src.list_parts(), partition_of(b"S1", 2), partition_of(b"S4", 2)
(['pos/0', 'pos/1'], 0, 1)
>>> part = src.build_part("in", "pos/0", None)
>>> [(m.offset, m.key) for m in part.next_batch()[0].messages], part.snapshot()
([(0, b'S1'), (1, b'S1')], 2)
>>> src.build_part("in", "pos/0", 1).next_batch()[0].messages[0].offset
1
"""

from __future__ import annotations

import bisect
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.records import PartitionId, RawBatch, RawMessage
from simulators.mall import SimEvent
from storepulse.errors import ConfigError


def partition_of(key: bytes | None, partitions: int) -> int:
    """The partition of a key: CRC32 of its bytes modulo the partition count (as
    librdkafka's consistent partitioners; a missing key goes to partition 0)."""
    return zlib.crc32(key or b"") % partitions


@dataclass
class _Log:
    """One partition's messages in order."""

    ts: list[int] = field(default_factory=list)
    key: list[bytes | None] = field(default_factory=list)
    value: list[bytes] = field(default_factory=list)


class _Clock:
    """The simulated clock shared by the parts of one source in a process."""

    def __init__(self, speedup: float) -> None:
        self.speedup = speedup
        self.pending: list[int] = []  # next ts of each part built so far
        self._base_ts: int | None = None
        self._t0 = 0.0
        self._lock = threading.Lock()

    def now_ts(self) -> float:
        with self._lock:
            if self._base_ts is None:
                self._base_ts = min(self.pending) if self.pending else 0
                self._t0 = time.monotonic()
            return self._base_ts + (time.monotonic() - self._t0) * 1000.0 * self.speedup

    def wall_at(self, ts: int) -> datetime:
        """The wall-clock moment the simulated clock reaches ``ts``."""
        wait_s = max(0.0, (ts - self.now_ts()) / 1000.0 / self.speedup)
        return datetime.now(UTC) + timedelta(seconds=wait_s)


class SimulatorSource(FixedPartitionedSource[RawBatch, int]):
    """Simulated events as ``RawBatch`` items of keyed partitions (see the module doc)."""

    def __init__(
        self,
        events: Iterable[SimEvent],
        *,
        partitions: dict[str, int],
        topics: dict[str, str] | None = None,
        batch_size: int = 2000,
        speedup: float | None = None,
        idle_s: float = 10.0,
    ) -> None:
        if not partitions or any(n < 1 for n in partitions.values()):
            raise ConfigError(f"partitions: every topic needs at least one, got {partitions}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if speedup is not None and not speedup > 0:
            raise ConfigError(f"speedup must be positive (or None: as fast as read), got {speedup}")
        self._events = events
        self._partitions = dict(partitions)
        self._topics = dict(topics or {})
        self._batch_size = batch_size
        self._speedup = speedup
        self._idle_s = idle_s
        self._logs: dict[str, _Log] | None = None
        self._lock = threading.Lock()
        self._clock = _Clock(speedup) if speedup else None

    def _actual(self, logical: str) -> str:
        return self._topics.get(logical, logical)

    def _read(self) -> dict[str, _Log]:
        with self._lock:
            if self._logs is None:
                logs = {part: _Log() for part in self.list_parts()}
                # each topic's partition logs, by partition number (one lookup per event)
                by_topic = {t: [logs[str(PartitionId(self._actual(t), p))] for p in range(n)]
                            for t, n in self._partitions.items()}
                for ev in self._events:
                    parts = by_topic.get(ev.topic)
                    if parts is None:
                        raise ConfigError(
                            f"event of topic {ev.topic!r}, which has no partition count "
                            f"(partitions: {sorted(self._partitions)})")
                    log = parts[partition_of(ev.key, len(parts))]
                    log.ts.append(ev.ts)
                    log.key.append(ev.key)
                    log.value.append(ev.value)
                self._logs = logs
            return self._logs

    def list_parts(self) -> list[str]:
        return [str(PartitionId(self._actual(t), p)) for t, n in self._partitions.items() for p in range(n)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None
                   ) -> _SimPartition:
        logs = self._read()
        if for_part not in logs:
            raise ConfigError(f"unknown part {for_part!r}; parts: {', '.join(logs)}")
        topic, partition = PartitionId.parse(for_part)
        offset = resume_state or 0
        log = logs[for_part]
        if self._clock is not None and offset < len(log.ts):
            self._clock.pending.append(log.ts[offset])
        return _SimPartition(topic, partition, log, offset, self._batch_size,
                             self._clock, self._idle_s)


class _SimPartition(StatefulSourcePartition[RawBatch, int]):
    def __init__(self, topic: str, partition: int, log: _Log, offset: int, batch_size: int,
                 clock: _Clock | None, idle_s: float) -> None:
        self._topic, self._partition, self._log = topic, partition, log
        self._offset = offset
        self._batch_size = batch_size
        self._clock = clock
        self._idle_s = idle_s
        self._awake: datetime | None = None
        self._last_emit = time.monotonic()
        self._ended = False

    def next_batch(self) -> list[RawBatch]:
        log, start = self._log, self._offset
        if start >= len(log.ts):
            if self._ended:
                raise StopIteration
            # Say idle before ending, so a partition with nothing (left) to read releases
            # every site's clock now rather than when the last partition ends.
            self._ended = True
            return [RawBatch(topic=self._topic, partition=self._partition, messages=[], idle=True)]
        end = min(start + self._batch_size, len(log.ts))
        if self._clock is not None:
            end = bisect.bisect_right(log.ts, self._clock.now_ts(), start, end)
            if end == start:  # nothing due yet: sleep until the next message is
                self._awake = self._clock.wall_at(log.ts[start])
                if 0 < self._idle_s <= time.monotonic() - self._last_emit:
                    self._last_emit = time.monotonic()
                    return [RawBatch(topic=self._topic, partition=self._partition,
                                     messages=[], idle=True)]
                return []
        messages = [RawMessage(o, log.key[o], log.value[o]) for o in range(start, end)]
        self._offset = end
        self._last_emit = time.monotonic()
        if self._clock is not None and end < len(log.ts):
            self._awake = self._clock.wall_at(log.ts[end])
        return [RawBatch(topic=self._topic, partition=self._partition, messages=messages)]

    def next_awake(self) -> datetime | None:
        if self._awake is None or self._idle_s <= 0:
            return self._awake
        idle_at = datetime.now(UTC) + timedelta(
            seconds=max(0.0, self._idle_s - (time.monotonic() - self._last_emit)))
        return min(self._awake, idle_at)

    def snapshot(self) -> int:
        return self._offset
