"""Kafka administration and the shared rules of every storepulse Kafka client.

Reads cluster metadata and creates topics; writes nothing else. ``ensure_topics`` is
idempotent: it creates only what is missing and never changes an existing topic.
Metadata is always listed for all topics, never for one named topic, because brokers
with ``auto.create.topics.enable`` (Kafka's default, and Tansu) create a topic that a
metadata request merely names.

The first request of the engine is ``topic_partitions`` (via ``list_partitions`` and
``ensure_topics``); while it waits for a broker, librdkafka's own log lines (one per
failed connection attempt, a few per second) are collected instead of logged, so an
unreachable Kafka gives one ``BackendUnavailable`` naming the bootstrap servers, within
``timeout_s``, with the gist of those lines in its message.

``PartitionCountWatch`` asks for a topic's partition count now and then without
blocking (an admin request whose future is checked later), for the source to notice
partitions added while it runs.

Also here, shared by the source and the sink: which librdkafka errors are fatal
(authentication and authorisation: retrying cannot help, a person must fix the config)
and which are transient (broker down, transport, timeouts: librdkafka reconnects by
itself), and a log that reports repeated transient errors without flooding.

>>> is_fatal(KafkaError(KafkaError._AUTHENTICATION))
True
>>> is_fatal(KafkaError(KafkaError._TRANSPORT)), is_fatal(KafkaError(KafkaError._ALL_BROKERS_DOWN))
(False, False)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

from storepulse.errors import BackendUnavailable, ConfigError

log = logging.getLogger(__name__)
C = TypeVar("C")
librdkafka_log = logging.getLogger("connectors.kafka.librdkafka")

METADATA_TIMEOUT_S = 10.0

_FATAL_CODES = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
    }
)


def is_fatal(err: KafkaError) -> bool:
    """True when retrying cannot help: bad credentials, missing ACLs, a fatal client error."""
    return bool(err.fatal()) or err.code() in _FATAL_CODES


def fatal_hint(err: KafkaError) -> str:
    """What a person should do about a fatal error."""
    if err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        return (
            "check STOREPULSE_KAFKA_CONFIG (security.protocol, sasl.mechanism, "
            "sasl.username) and STOREPULSE_KAFKA_SASL_PASSWORD"
        )
    if err.code() in _FATAL_CODES:
        return "grant this principal read/write/describe ACLs on the topic, or use another user"
    return "see the librdkafka error above; restart after fixing the cause"


def client_config(config: Mapping[str, Any], **defaults: Any) -> dict[str, Any]:
    """``config`` (bootstrap and security passthrough) over ``defaults``, logging via Python."""
    merged: dict[str, Any] = {"logger": librdkafka_log, **defaults}
    merged.update(config)
    return merged


def make_client(cls: Callable[[dict[str, Any]], C], config: dict[str, Any]) -> C:
    """Build a librdkafka client; a bad setting becomes a ``ConfigError`` naming it.

    >>> from confluent_kafka import Producer
    >>> make_client(Producer, {"bootstrap.servers": "localhost:9092", "no.such.key": "1"})
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    storepulse.errors.ConfigError: invalid Kafka ... property: "no.such.key"
    """
    try:
        return cls(config)
    except (KafkaException, ValueError, TypeError) as exc:
        err = exc.args[0] if exc.args else exc
        text = err.str() if isinstance(err, KafkaError) else str(err)
        raise ConfigError(
            f"invalid Kafka client setting (check STOREPULSE_KAFKA_CONFIG): {text}"
        ) from exc


class ThrottledErrorLog:
    """Logs the first error of each kind at once, then at most one summary per ``every_s``.

    A broker outage makes librdkafka report the same transport error many times a
    second on every client; the counter metric keeps the exact count, the log the gist.
    """

    def __init__(self, context: str, every_s: float = 30.0) -> None:
        self._context = context
        self._every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def error(self, err: KafkaError | str) -> None:
        name = err.name() if isinstance(err, KafkaError) else err.split(":", 1)[0]
        now = time.monotonic()
        last = self._last.get(name)
        if last is not None and now - last < self._every_s:
            self._suppressed[name] = self._suppressed.get(name, 0) + 1
            return
        self._last[name] = now
        more = self._suppressed.pop(name, 0)
        extra = f" ({more} more since the last report)" if more else ""
        log.warning("%s: transient Kafka error, retrying: %s%s", self._context, err, extra)


class CollapsedLog:
    """A librdkafka ``logger`` that keeps lines instead of logging them: a count and the last.

    Used while a start-up request waits for a broker: an unreachable bootstrap makes
    librdkafka log every failed connection attempt (about twenty a second), and the
    error raised afterwards says it once, with ``summary()``.

    >>> lines = CollapsedLog()
    >>> for _ in range(3):
    ...     lines.log(3, "%s [%s] %s", "FAIL", "rdkafka#producer-1", "Connect failed")
    >>> lines.summary()
    'librdkafka logged 3 lines, the last: FAIL [rdkafka#producer-1] Connect failed'
    """

    def __init__(self) -> None:
        self.count = 0
        self.last = ""

    def log(self, level: int, msg: str, *args: Any) -> None:
        self.count += 1
        self.last = msg % args if args else msg

    def summary(self) -> str:
        if not self.count:
            return ""
        return f"librdkafka logged {self.count} lines, the last: {self.last}"


def _admin(config: Mapping[str, Any], **extra: Any) -> tuple[AdminClient, list[KafkaError]]:
    errors: list[KafkaError] = []
    admin = make_client(AdminClient, client_config(config, error_cb=errors.append, **extra))
    return admin, errors


def _unreachable(config: Mapping[str, Any], what: str, exc: Exception,
                 errors: list[KafkaError], lines: CollapsedLog | None = None) -> BackendUnavailable:
    servers = config.get("bootstrap.servers", "?")
    fatal = [e for e in errors if is_fatal(e)]
    if fatal:
        return BackendUnavailable(
            f"Kafka at {servers}: {what} failed: {fatal[0].str()}; {fatal_hint(fatal[0])}"
        )
    said = f" ({lines.summary()})" if lines is not None and lines.count else ""
    return BackendUnavailable(
        f"Kafka at {servers}: {what} failed: {exc}. Is the broker up and is "
        f"STOREPULSE_KAFKA_BOOTSTRAP right (and STOREPULSE_KAFKA_CONFIG for TLS/SASL)?{said}"
    )


def topic_partitions(config: Mapping[str, Any], timeout_s: float = METADATA_TIMEOUT_S
                     ) -> dict[str, int]:
    """Every topic of the cluster and its partition count (no topic gets auto-created).

    Waits at most ``timeout_s`` for a broker; then ``BackendUnavailable`` with one
    message (librdkafka's own lines meanwhile are collapsed into it, not logged).
    """
    lines = CollapsedLog()
    admin, errors = _admin(config, logger=lines)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        admin.poll(0)  # serve error_cb so an authentication failure is named
        raise _unreachable(config, "listing topics", exc, errors, lines) from exc
    return {name: len(meta.partitions) for name, meta in metadata.topics.items()}


class PartitionCountWatch:
    """The partition count of ``topic``, asked every ``every_s`` without ever blocking.

    ``poll()`` is cheap: it starts a describe request when one is due (its own admin
    client, made on first use) and returns the count once the answer has arrived, else
    None. Failures (broker down, topic deleted) are ignored: the next request is due
    ``every_s`` later.
    """

    def __init__(self, config: Mapping[str, Any], topic: str, every_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._config = dict(config)
        self._topic = topic
        self._every_s = every_s
        self._clock = clock
        self._due = clock()
        self._admin: AdminClient | None = None
        self._pending: Future[Any] | None = None

    def poll(self) -> int | None:
        if self._pending is not None:
            if not self._pending.done():
                return None
            future, self._pending = self._pending, None
            try:
                return len(future.result().partitions)
            except Exception as exc:  # KafkaException, or a describe the broker lacks
                log.debug("partition count of %r not read: %s", self._topic, exc)
                return None
        now = self._clock()
        if now < self._due:
            return None
        self._due = now + self._every_s
        try:
            if self._admin is None:
                self._admin = make_client(AdminClient, client_config(  # the consumer reports errors
                    self._config, error_cb=lambda err: None, log_level=4))
            self._admin.poll(0)  # serve its log lines
            futures = self._admin.describe_topics(
                TopicCollection([self._topic]), request_timeout=min(self._every_s, 10.0))
            self._pending = futures[self._topic]
        except Exception as exc:
            log.debug("partition count of %r not asked: %s", self._topic, exc)
        return None


def list_partitions(config: Mapping[str, Any], topic: str,
                    timeout_s: float = METADATA_TIMEOUT_S) -> list[int]:
    """Partition ids of ``topic``; ``BackendUnavailable`` if it does not exist."""
    counts = topic_partitions(config, timeout_s)
    if not counts.get(topic):
        raise BackendUnavailable(
            f"Kafka topic {topic!r} does not exist on {config.get('bootstrap.servers', '?')}: "
            "create it (kafka-topics.sh --create, or ensure_topics) or fix the "
            "STOREPULSE_TOPIC_* setting"
        )
    return list(range(counts[topic]))


def ensure_topics(config: Mapping[str, Any], topics: Mapping[str, int],
                  timeout_s: float = METADATA_TIMEOUT_S) -> None:
    """Create each missing topic with its partition count; leave existing ones alone.

    Idempotent and safe to race with another process creating the same topic. An
    existing topic with fewer partitions than asked is logged, not altered (adding
    partitions moves keys between partitions). ``BackendUnavailable`` on any failure.
    """
    for name, partitions in topics.items():
        if partitions < 1:
            raise ValueError(f"topic {name!r}: partition count must be >= 1, got {partitions}")
    existing = topic_partitions(config, timeout_s)
    for name, partitions in topics.items():
        if name in existing and existing[name] < partitions:
            log.warning("Kafka topic %r has %d partitions, fewer than the %d asked for; "
                        "left unchanged", name, existing[name], partitions)
    missing = [NewTopic(name, n) for name, n in topics.items() if name not in existing]
    if not missing:
        return
    admin, errors = _admin(config)
    futures = admin.create_topics(missing, operation_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s + 5)
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is not None and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise _unreachable(config, f"creating topic {name!r}", exc, errors) from exc
        except Exception as exc:  # concurrent.futures.TimeoutError
            raise _unreachable(config, f"creating topic {name!r}", exc, errors) from exc
        log.info("created Kafka topic %r", name)
