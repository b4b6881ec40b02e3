"""Write a simulated scenario to Kafka at a target rate, and say what got there.

Reads ``SimEvent`` items (from ``MallSimulator.events()``); writes them to the input
topics with ``connectors.kafka.ConfirmingProducer`` (acks=all, idempotent, retried), keyed
as the contract says, so librdkafka's default partitioner puts a key where
``SimulatorSource`` would (CRC32 of the key). Messages go out in the simulator's order.

Guarantees: ``produced`` counts deliveries Kafka confirmed, never messages merely queued.
A message the client refuses outright (larger than ``message.max.bytes``, e.g. the
1.5 MiB bad records of ``bad_record_share``) is counted in ``refused`` by logical topic
and skipped, so an evaluation can subtract it from the truth. A flush that cannot confirm
everything (broker down, topic missing) stops the run: the report then has
``failed > 0`` and the error, and nothing is raised, so a caller decides the exit code.

With ``rate`` (messages per second) message ``i`` is not sent before ``i / rate`` seconds
after the start; the rate achieved is confirmed messages over the time to the final
flush. ``rate=None`` sends as fast as the client takes them.

>>> WriteReport(produced=10, refused={}, failed=0, seconds=2.0, target_rate=None).rate
5.0
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import KafkaError, KafkaException

from connectors.kafka import ConfirmingProducer
from simulators.mall import MallSimulator, SimEvent
from simulators.scenario import Scenario
from storepulse.errors import BackendUnavailable, ConfigError

FLUSH_EVERY = 20_000
_TOO_LARGE = {KafkaError.MSG_SIZE_TOO_LARGE}


@dataclass
class WriteReport:
    """What a write achieved."""

    produced: int  # confirmed by Kafka
    refused: dict[str, int]  # by logical topic: refused by the client (too large), skipped
    failed: int  # sent but not confirmed (the run stopped there)
    seconds: float
    target_rate: float | None
    by_topic: dict[str, int] = field(default_factory=dict)  # sent, by logical topic
    error: str | None = None

    @property
    def rate(self) -> float:
        """Confirmed messages per second."""
        return self.produced / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        target = f" (target {self.target_rate:g}/s)" if self.target_rate else ""
        refused = sum(self.refused.values())
        text = (f"produced {self.produced} messages in {self.seconds:.1f} s: "
                f"{self.rate:,.0f}/s{target}; refused {refused}; failed {self.failed}")
        return text + (f"; error: {self.error}" if self.error else "")


def write_events(
    events: Iterable[SimEvent],
    producer: ConfirmingProducer,
    *,
    topics: dict[str, str] | None = None,
    rate: float | None = None,
    flush_every: int = FLUSH_EVERY,
    flush_timeout_s: float = 30.0,
    max_messages: int | None = None,
) -> WriteReport:
    """Produce ``events`` (at most ``max_messages``) to ``topics[logical]`` (default: the
    logical names) through ``producer``, paced at ``rate`` messages/s."""
    if rate is not None and not rate > 0:
        raise ConfigError(f"rate must be positive messages/s (None: as fast as possible), got {rate}")
    names = dict(topics or {})
    refused: dict[str, int] = {}
    by_topic: dict[str, int] = {}
    start_delivered = producer.delivered
    sent = 0
    error: str | None = None
    started = time.monotonic()
    for i, ev in enumerate(events):
        if max_messages is not None and i >= max_messages:
            break
        if rate is not None:
            ahead = started + i / rate - time.monotonic()
            if ahead > 0.002:
                time.sleep(ahead)
        try:
            producer.produce(names.get(ev.topic, ev.topic), ev.key, ev.value)
        except BackendUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, KafkaException) and cause.args and getattr(
                    cause.args[0], "code", lambda: None)() in _TOO_LARGE:
                refused[ev.topic] = refused.get(ev.topic, 0) + 1
                continue
            error = str(exc)
            break
        sent += 1
        by_topic[ev.topic] = by_topic.get(ev.topic, 0) + 1
        if sent % flush_every == 0:
            try:
                producer.flush(flush_timeout_s)
            except BackendUnavailable as exc:
                error = str(exc)
                break
    if error is None:
        try:
            producer.flush(flush_timeout_s)
        except BackendUnavailable as exc:
            error = str(exc)
    produced = producer.delivered - start_delivered
    return WriteReport(produced=produced, refused=refused, failed=sent - produced,
                       seconds=time.monotonic() - started, target_rate=rate,
                       by_topic=by_topic, error=error)


def write_scenario(
    scenario: Scenario,
    seed: int,
    kafka_config: dict[str, str],
    *,
    topics: dict[str, str] | None = None,
    rate: float | None = None,
    now: datetime | None = None,
    flush_timeout_s: float = 30.0,
    max_messages: int | None = None,
) -> WriteReport:
    """Simulate ``scenario`` with ``seed`` and write it to Kafka (``kafka_config``: the
    librdkafka settings, e.g. ``Settings.kafka_client_config()``)."""
    producer = ConfirmingProducer(kafka_config)
    sim = MallSimulator(scenario, seed, now=now)
    return write_events(sim.events(), producer, topics=topics, rate=rate,
                        flush_timeout_s=flush_timeout_s, max_messages=max_messages)
