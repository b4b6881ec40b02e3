"""Kafka administration and the shared rules of every storepulse Kafka client.

Reads cluster metadata and creates topics; writes nothing else. ``ensure_topics`` is
idempotent: it creates only what is missing and never changes an existing topic.
Metadata is always listed for all topics, never for one named topic, because brokers
with ``auto.create.topics.enable`` (Kafka's default, and Tansu) create a topic that a
metadata request merely names.

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
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException
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


def _admin(config: Mapping[str, Any]) -> tuple[AdminClient, list[KafkaError]]:
    errors: list[KafkaError] = []
    admin = make_client(AdminClient, client_config(config, error_cb=errors.append))
    return admin, errors


def _unreachable(config: Mapping[str, Any], what: str, exc: Exception,
                 errors: list[KafkaError]) -> BackendUnavailable:
    servers = config.get("bootstrap.servers", "?")
    fatal = [e for e in errors if is_fatal(e)]
    if fatal:
        return BackendUnavailable(
            f"Kafka at {servers}: {what} failed: {fatal[0].str()}; {fatal_hint(fatal[0])}"
        )
    return BackendUnavailable(
        f"Kafka at {servers}: {what} failed: {exc}. Is the broker up and is "
        "STOREPULSE_KAFKA_BOOTSTRAP right (and STOREPULSE_KAFKA_CONFIG for TLS/SASL)?"
    )


def topic_partitions(config: Mapping[str, Any], timeout_s: float = METADATA_TIMEOUT_S
                     ) -> dict[str, int]:
    """Every topic of the cluster and its partition count (no topic gets auto-created)."""
    admin, errors = _admin(config)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        admin.poll(0)  # serve error_cb so an authentication failure is named
        raise _unreachable(config, "listing topics", exc, errors) from exc
    return {name: len(meta.partitions) for name, meta in metadata.topics.items()}


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
