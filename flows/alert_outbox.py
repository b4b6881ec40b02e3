"""The sales-drop alert outbox: each ``AlertNotice`` once to the alerts topic and once to
the signed webhook, across crashes and restarts.

Reads ``flows.alert_notices.AlertNotice`` items (the engine's alerts stream) and the
delivered-marks of ``state.alert_marks`` in Redis. Writes, per notice not yet handled on a
channel:

- ``kafka``: the Alertmanager v4 JSON (``encode_body(alertmanager_payload(...))``) to the
  alerts topic, keyed by the store id, with a ``message_id`` header holding
  ``message_id(notice)`` (fingerprint and status, the same on every replay);
- ``webhook`` (when configured): the same bytes POSTed by ``connectors.webhooks``, signed,
  with ``webhook-id`` = that message id, retried by the sender. A delivery that is given up
  becomes a ``DeadLetter`` on the dead-letter topic (``topic`` = the alerts topic,
  partition and offset -1, reason ``webhook_failed``, ``detail`` = the delivery's reason and
  detail, ``raw`` = the payload cut to ``deadletter_raw_bytes``) and counts as handled:
  it is marked and not retried on a replay (replay it from the dead letters once the
  receiver is fixed). A failed webhook never stops the engine.

State: none in bytewax; the marks in Redis (90 days) are the outbox's memory.

Order within a batch: read the marks (one round trip); produce what Kafka lacks and flush;
mark those ``kafka`` (one round trip); send what the webhook lacks, one notice after the
other; produce their dead letters and flush; mark those ``webhook`` (one round trip).

Delivery guarantee: exactly once per channel across restarts, except one case. bytewax
replays from its last snapshot after a crash, and the marks skip what was delivered; a
flush that cannot confirm a message raises ``BackendUnavailable`` before anything is
marked, so the dataflow stops without a snapshot past an undelivered alert, and the
replay sends it again. The exception: a crash after a delivery and before its mark (the
Kafka flush and its mark; the webhooks of a batch and their mark) sends those notices once
more on the replay, with the SAME ``message_id`` header and ``webhook-id``; receivers drop
them by that id (Standard Webhooks tells receivers to use ``webhook-id`` for idempotency;
Kafka consumers key on the header). A Kafka message whose flush timed out may also land
twice (at-least-once producer, see ``connectors.kafka_sink``), with the same header.

Redis: the batch waits while Redis is unreachable, the way the Redis sinks (``flows.redis_sinks``)
do (the read or the mark retried whole with capped backoff for as long as it takes, readiness
``redis-alerts[<worker>]`` down meanwhile, ``storepulse_redis_up`` 0 and the Redis failure
and retry counters counting; one warning when an outage starts and one when it ends). No
notice is sent while the marks cannot be read, and a delivered notice waits for its mark
rather than go unmarked. Errors that retrying cannot fix (``state.redis.is_retryable``) stop
the dataflow, to resume from its last snapshot.

A webhook receiver that is down holds the batch for up to ``attempts`` x the timeout plus
the backoff waits (about 40 s with the defaults) per notice, then dead-letters it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.kafka_sink import ConfirmingProducer, Headers
from connectors.schemas import DeadLetter
from connectors.webhooks import Delivery, WebhookSender
from flows.alert_notices import AlertNotice, alertmanager_payload, encode_body, message_id
from flows.outputs import encode_deadletter
from flows.redis_sinks import RedisRetry
from state.alert_marks import AlertMarks, Channel
from state.redis import Backoff
from storepulse import health, metrics
from storepulse.settings import Settings

log = logging.getLogger(__name__)

WEBHOOK_FAILED = "webhook_failed"
"""The dead-letter reason of an alert webhook given up (the delivery's reason is in ``detail``)."""
MESSAGE_ID_HEADER = "message_id"

@dataclass(frozen=True)
class OutboxCounts:
    """What one batch did: distinct ``notices``; per channel, notices sent now and notices
    skipped because they were marked before (a replay); webhooks given up (dead-lettered)."""

    notices: int = 0
    kafka_sent: int = 0
    kafka_skipped: int = 0
    webhook_delivered: int = 0
    webhook_failed: int = 0
    webhook_skipped: int = 0


class _OutboxPartition(StatelessSinkPartition[AlertNotice]):
    def __init__(
        self,
        sink: AlertOutboxSink,
        marks: AlertMarks,
        producer: ConfirmingProducer,
        sender: WebhookSender | None,
        retry: RedisRetry,
    ) -> None:
        self.sink = sink
        self.marks = marks
        self.producer = producer
        self.sender = sender
        self.retry = retry

    def write_batch(self, items: list[AlertNotice]) -> None:
        sink = self.sink
        notices: dict[str, AlertNotice] = {}
        for notice in items:
            notices.setdefault(message_id(notice), notice)  # one per id: the first of the batch
        if not notices:
            return
        done = self.retry.run("read of alert marks", lambda: self.marks.delivered(list(notices)))
        bodies = {mid: self._body(n) for mid, n in notices.items()}

        to_kafka = [mid for mid in notices if "kafka" not in done[mid]]
        for mid in to_kafka:
            header: Headers = [(MESSAGE_ID_HEADER, mid.encode())]
            self.producer.produce(sink.topic, notices[mid].store_id.encode(), bodies[mid], header)
        if to_kafka:
            self.producer.flush(sink.flush_timeout_s)  # raises if undelivered: nothing is marked
            self._mark(to_kafka, "kafka")

        to_webhook = [mid for mid in notices if "webhook" not in done[mid]] if self.sender else []
        failed = 0
        for mid in to_webhook:
            assert self.sender is not None
            delivery = self.sender.send(mid, bodies[mid])
            if not delivery.ok:
                failed += 1
                key, value = encode_deadletter(self._dead_letter(delivery, bodies[mid]))
                self.producer.produce(sink.deadletter_topic, key, value)
                log.error("alert %s to webhook %r dead-lettered to %r: %s: %s", mid, self.sender.receiver,
                          sink.deadletter_topic, delivery.reason, delivery.detail)  # fmt: skip
        if failed:
            self.producer.flush(sink.flush_timeout_s)
        if to_webhook:
            self._mark(to_webhook, "webhook")

        if sink.on_batch is not None:
            webhook_skipped = len(notices) - len(to_webhook) if self.sender else 0
            sink.on_batch(
                OutboxCounts(
                    notices=len(notices),
                    kafka_sent=len(to_kafka),
                    kafka_skipped=len(notices) - len(to_kafka),
                    webhook_delivered=len(to_webhook) - failed,
                    webhook_failed=failed,
                    webhook_skipped=webhook_skipped,
                )
            )

    def _body(self, notice: AlertNotice) -> bytes:
        url = self.sink.external_url
        return encode_body(
            alertmanager_payload(notice, receiver=self.sink.receiver, external_url=url, generator_url=url)
        )

    def _mark(self, msg_ids: list[str], channel: Channel) -> None:
        at_ms = int(self.sink.clock() * 1000)
        self.retry.run(f"mark of {channel} alerts", lambda: self.marks.mark([(m, channel) for m in msg_ids], at_ms))

    def _dead_letter(self, delivery: Delivery, body: bytes) -> DeadLetter:
        cut = self.sink.deadletter_raw_bytes
        return DeadLetter(
            topic=self.sink.topic,
            partition=-1,
            offset=-1,
            reason=WEBHOOK_FAILED,
            detail=f"{delivery.reason}: {delivery.detail}",
            raw=body[:cut].decode("utf-8", "replace"),
            raw_truncated=len(body) > cut,
        )

    def close(self) -> None:
        # Never raise here (see connectors.kafka_sink): every batch was flushed by write_batch.
        try:
            self.producer.flush(min(self.sink.flush_timeout_s, 5.0))
        except Exception as exc:
            log.error("alert outbox closed with messages undelivered: %s", exc)


class AlertOutboxSink(DynamicSink[AlertNotice]):
    """Writes alert notices to ``topic`` and (if ``webhook`` is given) a webhook, each once;
    see the module docstring for the order, the marks and the guarantee.

    ``kafka_config`` is ``Settings.kafka_client_config()``; ``redis_url`` the Redis of the
    marks; ``webhook`` makes one ``WebhookSender`` per worker (None: Kafka only);
    ``receiver`` and ``external_url`` go into the payload (``external_url`` as both
    ``externalURL`` and ``generatorURL``). ``on_batch`` is called with each batch's
    ``OutboxCounts`` once it is written (for metrics). ``backoff``, ``sleep`` and ``clock``
    (epoch seconds; the marks' time) are injectable for tests. Building a partition
    connects to Redis and PINGs, so Redis must answer when the dataflow starts.
    """

    def __init__(
        self,
        kafka_config: Mapping[str, str],
        redis_url: str,
        *,
        topic: str,
        deadletter_topic: str,
        receiver: str,
        webhook: Callable[[], WebhookSender] | None = None,
        external_url: str = "",
        deadletter_raw_bytes: int = 4096,
        flush_timeout_s: float = 60.0,
        on_batch: Callable[[OutboxCounts], None] | None = None,
        backoff: Backoff | None = None,
        readiness: health.Readiness = health.READINESS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not topic or not deadletter_topic or topic == deadletter_topic:
            raise ValueError(f"AlertOutboxSink needs two different topics, got {topic!r} and {deadletter_topic!r}")
        if deadletter_raw_bytes < 1 or flush_timeout_s <= 0:
            raise ValueError("deadletter_raw_bytes must be >= 1 and flush_timeout_s > 0")
        self.kafka_config = dict(kafka_config)
        self.redis_url = redis_url
        self.topic = topic
        self.deadletter_topic = deadletter_topic
        self.receiver = receiver
        self.webhook = webhook
        self.external_url = external_url
        self.deadletter_raw_bytes = deadletter_raw_bytes
        self.flush_timeout_s = flush_timeout_s
        self.on_batch = on_batch
        self.backoff = backoff or Backoff()
        self.readiness = readiness
        self.sleep = sleep
        self.clock = clock
        self.built = f"{type(self).__name__} built"
        readiness.declare(self.built)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _OutboxPartition:
        from state.redis import connect

        sender = self.webhook() if self.webhook is not None else None
        if sender is not None and sender.receiver != self.receiver:
            raise ValueError(f"the webhook's receiver {sender.receiver!r} is not the payload's {self.receiver!r}")
        marks = AlertMarks(connect(self.redis_url))
        retry = RedisRetry(
            f"redis-alerts[{worker_index}]",
            readiness=self.readiness,
            backoff=self.backoff,
            sleep=self.sleep,
            clock=self.clock,
        )
        partition = _OutboxPartition(self, marks, ConfirmingProducer(self.kafka_config), sender, retry)
        health.dataflow_running(self.readiness)
        self.readiness.up(self.built)
        return partition


def count_deliveries(counts: OutboxCounts) -> None:
    """``storepulse_alert_deliveries_total`` from a batch's counts (the outbox's ``on_batch``)."""
    for channel, outcome, n in (
        ("kafka", "sent", counts.kafka_sent),
        ("kafka", "skipped", counts.kafka_skipped),
        ("webhook", "sent", counts.webhook_delivered),
        ("webhook", "skipped", counts.webhook_skipped),
        ("webhook", "dead_lettered", counts.webhook_failed),
    ):
        if n:
            metrics.ALERT_DELIVERIES.labels(channel, outcome).inc(n)


def alert_outbox(
    settings: Settings, *, on_batch: Callable[[OutboxCounts], None] | None = count_deliveries
) -> AlertOutboxSink:
    """The outbox of ``settings``: the alerts and dead-letter topics, the Redis of
    ``STOREPULSE_REDIS_URL`` (required), and the webhook of ``STOREPULSE_ALERT_WEBHOOK_*``
    when its URL is set (``Settings`` has checked that its secret is set too); each batch's
    counts go to ``storepulse_alert_deliveries_total``."""
    webhook: Callable[[], WebhookSender] | None = None
    url, secret = settings.alert_webhook_url, settings.alert_webhook_secret
    if url and secret:
        webhook = functools.partial(
            WebhookSender,
            url,
            secret,
            receiver=settings.alert_receiver,
            timeout_s=settings.alert_webhook_timeout_s,
            max_attempts=settings.alert_webhook_attempts,
        )

    return AlertOutboxSink(
        settings.kafka_client_config(),
        settings.require_redis_url("run"),
        topic=settings.topic_alerts,
        deadletter_topic=settings.topic_deadletter,
        receiver=settings.alert_receiver,
        webhook=webhook,
        external_url=settings.alert_external_url or "",
        deadletter_raw_bytes=settings.deadletter_raw_bytes,
        on_batch=on_batch,
    )
