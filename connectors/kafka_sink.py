"""Kafka output that knows what it delivered: ``ConfirmingProducer`` and ``KafkaConfirmedSink``.

Writes messages to Kafka topics; reads only delivery reports.

Delivery guarantee: at-least-once. ``flush`` returns only when Kafka has confirmed
(acks=all, idempotent producer) every message produced so far; a failed delivery that
can succeed later (timeouts, broker down, leader moves) is produced again, up to
``max_attempts`` times, and a message still undelivered raises ``BackendUnavailable``
naming the topic and the error. ``KafkaConfirmedSink`` flushes at the end of every
``write_batch``, so bytewax never takes a snapshot while a message is undelivered: after
a crash, the engine replays from the last snapshot and may write some messages twice,
never zero times. A retried message may land after messages produced later, and a
timed-out attempt may still land, so outputs carry ids (push id, alert fingerprint)
that let consumers drop duplicates.

Counted: ``storepulse_kafka_produced_messages_total`` (confirmed deliveries) and
``storepulse_kafka_delivery_failures_total`` (failed delivery reports, each retried or
reported), by topic.

>>> ConfirmingProducer({"bootstrap.servers": "127.0.0.1:1"}, max_attempts=0)
Traceback (most recent call last):
...
ValueError: max_attempts must be >= 1, got 0
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, KafkaException, Producer

from connectors.kafka_admin import (
    ThrottledErrorLog,
    client_config,
    fatal_hint,
    is_fatal,
    make_client,
)
from storepulse.errors import BackendUnavailable
from storepulse.metrics import KAFKA_DELIVERY_FAILURES, KAFKA_PRODUCED

log = logging.getLogger(__name__)

PRODUCER_DEFAULTS: dict[str, Any] = {
    # librdkafka retries by itself within this time; a message that times out is
    # produced again by ConfirmingProducer (default flush timeouts allow a few tries).
    "message.timeout.ms": 10000,
}
_RETRIABLE = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.KAFKA_STORAGE_ERROR,
    }
)
# The producer itself is stuck (idempotence state lost or fenced): make a new one.
# Such a failure does not use up one of the message's attempts.
_REBUILD = frozenset(
    {
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError._FENCED,
        KafkaError._FATAL,
    }
)
_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})
_FLUSH_SLICE_S = 0.25
Headers = list[tuple[str, str | bytes | None]] | None
"""Kafka message headers as confluent-kafka takes and gives them back."""


class ConfirmingProducer:
    """A Kafka producer whose ``flush`` proves every message was delivered, or raises.

    ``config`` is the librdkafka config from ``Settings.kafka_client_config()``; acks=all
    and enable.idempotence=true are always set. ``delivered`` counts confirmed
    deliveries, ``failed`` failed delivery reports (a message retried twice counts twice).
    ``produce`` never blocks for long: when librdkafka's queue is full it serves delivery
    reports until there is room, and raises ``BackendUnavailable`` after
    ``queue_full_timeout_s``.
    """

    def __init__(
        self,
        config: Mapping[str, str],
        *,
        linger_ms: int = 5,
        max_attempts: int = 5,
        queue_full_timeout_s: float = 60.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        merged = client_config(config, **PRODUCER_DEFAULTS)
        merged.update(
            {
                "linger.ms": linger_ms,
                "acks": "all",
                "enable.idempotence": True,
                "error_cb": self._on_error,
            }
        )
        self._config = merged
        self._servers = str(merged.get("bootstrap.servers", "?"))
        self._max_attempts = max_attempts
        self._queue_full_timeout_s = queue_full_timeout_s
        self.delivered = 0
        self.failed = 0
        self._pending: dict[str, int] = {}
        self._retry: list[tuple[str, bytes | None, bytes, int, Headers]] = []
        self._given_up: list[tuple[str, KafkaError]] = []
        self._rebuild = False
        self._fatal: KafkaError | None = None
        self._last_error: KafkaError | None = None
        self._since_poll = 0
        self._produced: dict[str, Any] = {}
        self._failures: dict[str, Any] = {}
        self._error_log = ThrottledErrorLog(f"producer to {self._servers}")
        self._producer = make_client(Producer, merged)

    @property
    def pending(self) -> int:
        """Messages produced whose delivery is not confirmed yet (queued or to be retried)."""
        return sum(self._pending.values()) + len(self._retry)

    def produce(self, topic: str, key: bytes | None, value: bytes, headers: Headers = None) -> None:
        """Queue one message (``headers``: ``[(name, value)]``, kept on every retry); its
        delivery is confirmed (or not) by the next ``flush``."""
        self._send(topic, key, value, 1, headers)

    def _send(self, topic: str, key: bytes | None, value: bytes, attempt: int, headers: Headers = None) -> None:
        # Headers ride with the callback: a delivery report does not give them back.
        callback = (
            self._on_delivery
            if attempt == 1 and not headers
            else functools.partial(self._on_delivery, attempt=attempt, headers=headers)
        )
        deadline = 0.0
        while True:
            try:
                if headers:
                    self._producer.produce(topic, value, key, on_delivery=callback, headers=headers)
                else:
                    self._producer.produce(topic, value, key, on_delivery=callback)
                break
            except BufferError:
                now = time.monotonic()
                if not deadline:
                    deadline = now + self._queue_full_timeout_s
                elif now > deadline:
                    raise BackendUnavailable(
                        f"Kafka at {self._servers}: the producer queue stayed full for "
                        f"{self._queue_full_timeout_s}s while writing to {topic!r}; the "
                        f"broker is not taking messages (last error: {self._describe_last()})"
                    ) from None
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise BackendUnavailable(
                    f"Kafka at {self._servers}: refused a message for topic {topic!r}: "
                    f"{exc.args[0] if exc.args else exc}"
                ) from exc
        self._pending[topic] = self._pending.get(topic, 0) + 1
        self._since_poll += 1
        if self._since_poll >= 1000:
            self._since_poll = 0
            self._producer.poll(0)

    def _on_delivery(self, err: KafkaError | None, msg: Any, attempt: int = 1, headers: Headers = None) -> None:
        topic = msg.topic()
        self._pending[topic] -= 1
        if err is None:
            self.delivered += 1
            counter = self._produced.get(topic)
            if counter is None:
                counter = self._produced[topic] = KAFKA_PRODUCED.labels(topic=topic)
            counter.inc()
            return
        code = err.code()
        if code in _PURGED:  # our own purge while replacing a stuck producer
            self._retry.append((topic, msg.key(), msg.value(), attempt, headers))
            return
        self.failed += 1
        self._last_error = err
        counter = self._failures.get(topic)
        if counter is None:
            counter = self._failures[topic] = KAFKA_DELIVERY_FAILURES.labels(topic=topic)
        counter.inc()
        if code in _REBUILD or err.fatal():
            self._rebuild = True
            self._retry.append((topic, msg.key(), msg.value(), attempt, headers))
            verdict = "producing it again with a new producer"
        elif (err.retriable() or code in _RETRIABLE) and attempt < self._max_attempts:
            self._retry.append((topic, msg.key(), msg.value(), attempt + 1, headers))
            verdict = f"producing it again (attempt {attempt + 1} of {self._max_attempts})"
        else:
            self._given_up.append((topic, err))
            verdict = f"giving up after attempt {attempt}"
        self._error_log.error(f"{err.name()}: delivery to {topic!r} failed ({err.str()}); {verdict}")

    def _on_error(self, err: KafkaError) -> None:
        self._last_error = err
        if is_fatal(err):
            if err.fatal():
                self._rebuild = True
            elif self._fatal is None:
                self._fatal = err
            return
        self._error_log.error(err)

    def _describe_last(self) -> str:
        err = self._last_error
        return "none reported" if err is None else f"{err.name()}: {err.str()}"

    def _replace_producer(self) -> None:
        """Purge the stuck producer (its messages come back for retry) and start afresh."""
        old = self._producer
        old.purge()
        old.flush(5)
        self._producer = make_client(Producer, self._config)
        self._rebuild = False
        log.warning("Kafka producer to %s replaced after %s", self._servers, self._describe_last())

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every message produced so far is confirmed; retry what can be retried.

        Raises ``BackendUnavailable`` naming the topics and errors of the messages still
        undelivered after ``timeout_s`` (or given up earlier). Given-up messages are then
        forgotten; messages still queued in librdkafka stay queued and a later ``flush``
        waits for them again. The caller is expected to fail and replay from its last
        snapshot.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            if self._fatal is not None:
                break
            if self._rebuild:
                self._replace_producer()
            if self._retry:
                retry, self._retry = self._retry, []
                for topic, key, value, attempt, headers in retry:
                    self._send(topic, key, value, attempt, headers)
            remaining = deadline - time.monotonic()
            if not self.pending and not self._rebuild:
                break
            if remaining <= 0:
                break
            self._producer.flush(min(remaining, _FLUSH_SLICE_S))
        self._since_poll = 0
        self._raise_undelivered(timeout_s)

    def _raise_undelivered(self, timeout_s: float) -> None:
        problems: dict[str, list[str]] = {}
        for topic, err in self._given_up:
            problems.setdefault(topic, []).append(f"{err.name()} ({err.str()})")
        for topic, count in self._pending.items():
            if count > 0:
                problems.setdefault(topic, []).extend([f"no delivery report in {timeout_s}s"] * count)
        for topic, *_ in self._retry:
            problems.setdefault(topic, []).append(f"not retried in {timeout_s}s")
        fatal = self._fatal
        self._given_up.clear()
        self._retry.clear()
        self._fatal = None
        if fatal is not None:
            raise BackendUnavailable(
                f"Kafka at {self._servers}: {fatal.str()} ({fatal.name()}); {fatal_hint(fatal)}; "
                f"{self.pending} message(s) not delivered"
            )
        if not problems:
            return
        parts = []
        for topic, reasons in problems.items():
            first = sorted(set(reasons))
            parts.append(f"{len(reasons)} to topic {topic!r} ({'; '.join(first[:3])})")
        raise BackendUnavailable(
            f"Kafka at {self._servers}: message(s) not delivered: {', '.join(parts)}; last "
            f"error: {self._describe_last()}. Check that the broker is up and the topic "
            "exists; on restart the engine replays from its last snapshot (at-least-once)."
        )

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush (raising if anything is undelivered)."""
        self.flush(timeout_s)


class _ConfirmedSinkPartition(StatelessSinkPartition[tuple[bytes | None, bytes]]):
    def __init__(self, producer: ConfirmingProducer, topic: str, flush_timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._flush_timeout_s = flush_timeout_s

    def write_batch(self, items: list[tuple[bytes | None, bytes]]) -> None:
        produce = self._producer.produce
        topic = self._topic
        for key, value in items:
            produce(topic, key, value)
        self._producer.flush(self._flush_timeout_s)

    def close(self) -> None:
        # Never raise here: bytewax also calls close while unwinding from a failed
        # write_batch, and an exception then aborts the whole process. Every batch was
        # already flushed by write_batch, so only a failed batch can be pending, and it
        # is replayed from the last snapshot on restart.
        try:
            self._producer.flush(min(self._flush_timeout_s, 5.0))
        except Exception as exc:
            log.error("Kafka sink to %r closed with messages undelivered: %s", self._topic, exc)


class KafkaConfirmedSink(DynamicSink[tuple[bytes | None, bytes]]):
    """Write ``(key, value)`` items to ``topic``; every batch is confirmed before the next.

    At-least-once: ``write_batch`` produces every item and then flushes, so a bytewax
    snapshot is never taken while a message is undelivered; after a crash the messages
    since the last snapshot are written again. If Kafka cannot confirm a batch within
    ``flush_timeout_s``, ``BackendUnavailable`` stops the dataflow (to be restarted from
    its snapshot) rather than losing the batch. One producer per worker.
    """

    def __init__(
        self,
        config: Mapping[str, str],
        topic: str,
        *,
        linger_ms: int = 5,
        flush_timeout_s: float = 60.0,
    ) -> None:
        if not topic:
            raise ValueError("KafkaConfirmedSink needs a topic")
        self._config = dict(config)
        self._topic = topic
        self._linger_ms = linger_ms
        self._flush_timeout_s = flush_timeout_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ConfirmedSinkPartition:
        producer = ConfirmingProducer(self._config, linger_ms=self._linger_ms)
        return _ConfirmedSinkPartition(producer, self._topic, self._flush_timeout_s)
