"""What KafkaBatchSource tells operators, against a real Kafka-protocol broker (Tansu).

Lag gauge, consumer-group offsets committed at each snapshot (monitoring only), the loud
error when a topic grows while the engine runs (and that a restart reads the new
partitions), and one clear error for an unreachable Kafka at start. Expected offsets come
from the test producer's delivery reports or from an independent admin client.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from prometheus_client import REGISTRY

from connectors.kafka_admin import list_partitions
from connectors.kafka_source import KafkaBatchSource
from connectors.records import RawMessage
from storepulse.errors import BackendUnavailable
from tests.connectors.test_kafka_source import _wait_awake, config, drain, values
from tests.fixtures.kafka import free_port

# Small record batches and fetches, so that reading stops half-way through a topic.
SMALL_FETCHES = {"fetch.max.bytes": 1024, "max.partition.fetch.bytes": 1024,
                 "message.max.bytes": 1000, "queued.max.messages.kbytes": 1}


def lag(topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value(
        "storepulse_kafka_consumer_lag_messages", {"topic": topic, "partition": str(partition)}
    )


def sample(name: str, topic: str) -> float:
    return REGISTRY.get_sample_value(name, {"topic": topic}) or 0.0


def read_until(part: Any, count: int, deadline_s: float = 20.0) -> list[int]:
    """Offsets read by calling next_batch (as bytewax does) until ``count`` were read."""
    got: list[int] = []
    deadline = time.monotonic() + deadline_s
    while len(got) < count:
        assert time.monotonic() < deadline, f"read {len(got)} of {count} in {deadline_s}s"
        got += [m.offset for b in part.next_batch() for m in b.messages]
        _wait_awake(part)
    return got


def group_offset(broker: Any, group: str, topic: str) -> int | None:
    """The group's committed offset of partition 0, asked with a separate admin client."""
    admin = AdminClient(broker.client_config(log_level=3))
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])
    answer = admin.list_consumer_group_offsets([request])[group].result(timeout=10)
    [tp] = answer.topic_partitions
    return tp.offset if tp.offset >= 0 else None


def test_lag_is_high_watermark_minus_next_offset(kafka_broker, kafka_topic_factory):
    topic = kafka_topic_factory()
    sent = kafka_broker.produce(topic, values(3000), flush_every=20)  # 150 record batches of 20
    part = KafkaBatchSource(config(kafka_broker, **SMALL_FETCHES), topic, batch_size=100,
                            tail=False).build_part("read", f"{topic}/0", None)
    read = read_until(part, 500)
    assert read == list(range(len(read))) and len(read) < 3000  # half-way, not at the end
    behind = len(sent) - part.snapshot()  # the truth, from the delivery reports
    # Tansu's high watermark can be one producer batch (20) short of the true end.
    assert behind - 20 <= (lag(topic, 0) or 0) <= behind
    assert (lag(topic, 0) or 0) > 0

    drain(part)
    part.close()
    assert part.snapshot() == 3000
    assert lag(topic, 0) == 0


def test_snapshot_commits_the_next_offset_to_the_group(kafka_broker, kafka_topic_factory):
    topic = kafka_topic_factory()
    group = f"storepulse-test-{uuid.uuid4().hex[:8]}"
    kafka_broker.produce(topic, values(50))
    part = KafkaBatchSource(config(kafka_broker), topic, group_id=group).build_part(
        "read", f"{topic}/0", None
    )
    read_until(part, 50)
    assert group_offset(kafka_broker, group, topic) is None  # nothing is committed by reading

    assert part.snapshot() == 50  # commits asynchronously; the position is still the snapshot
    deadline = time.monotonic() + 20
    while group_offset(kafka_broker, group, topic) != 50:
        assert time.monotonic() < deadline, "the snapshot's offset never reached the group"
        part.next_batch()  # serves the commit callback, as bytewax's next call would
        _wait_awake(part)
    part.close()
    assert sample("storepulse_kafka_commit_failures_total", topic) == 0


class _CommitRefused:
    """The partition's real consumer, except that ``commit`` raises as librdkafka can
    (e.g. a group with live members answers UNKNOWN_MEMBER_ID; making Tansu hold such a
    member takes over 20 s of rebalancing, so the refusal is injected here)."""

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        self.calls = 0

    def commit(self, **kwargs: Any) -> None:
        self.calls += 1
        raise KafkaException(KafkaError(KafkaError.UNKNOWN_MEMBER_ID))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def test_a_failed_commit_is_counted_not_raised_and_retried(kafka_broker, kafka_topic_factory):
    topic = kafka_topic_factory()
    group = f"storepulse-test-{uuid.uuid4().hex[:8]}"
    kafka_broker.produce(topic, values(10))
    part = KafkaBatchSource(config(kafka_broker), topic, group_id=group).build_part(
        "read", f"{topic}/0", None
    )
    read_until(part, 10)
    before = sample("storepulse_kafka_commit_failures_total", topic)
    real = part._consumer
    part._consumer = refusing = _CommitRefused(real)
    assert part.snapshot() == 10  # does not raise: the group offset is for monitoring only
    assert refusing.calls == 1
    assert sample("storepulse_kafka_commit_failures_total", topic) == before + 1

    part._consumer = real
    assert part.snapshot() == 10  # the same offset is committed again after a failure
    deadline = time.monotonic() + 20
    while group_offset(kafka_broker, group, topic) != 10:
        assert time.monotonic() < deadline, "the offset was not committed after the failure"
        part.next_batch()
        _wait_awake(part)
    part.close()


def grow_topic(broker: Any, topic: str, partitions: int) -> None:
    """Give ``topic`` more partitions: CreatePartitions, or (Tansu 0.6 lacks it) recreate it.

    Tansu 0.6.0 answers CreatePartitions with UNSUPPORTED_FEATURE; deleting and creating
    the topic with more partitions is the same change as far as a partition count goes.
    No consumer may be assigned to the topic meanwhile: librdkafka 2.16 crashes (SIGSEGV)
    when Tansu deletes a topic under an assigned consumer.
    """
    admin = AdminClient(broker.client_config(log_level=3))
    try:
        admin.create_partitions([NewPartitions(topic, partitions)])[topic].result(timeout=15)
        return
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError._UNSUPPORTED_FEATURE:
            raise
    admin.delete_topics([topic], operation_timeout=10)[topic].result(timeout=15)
    admin.create_topics([NewTopic(topic, partitions)], operation_timeout=10)[topic].result(timeout=15)


def test_a_partition_added_while_running_is_an_error_and_read_after_restart(
    kafka_broker, kafka_topic_factory, caplog: pytest.LogCaptureFixture
):
    topic = kafka_topic_factory(partitions=1)
    source = KafkaBatchSource(config(kafka_broker), topic, partition_check_s=0.2)
    assert source.list_parts() == [f"{topic}/0"]  # what bytewax reads until a restart
    unread = "storepulse_kafka_partitions_unread"
    caplog.set_level(logging.ERROR, logger="connectors.kafka_source")
    part = source.build_part("read", f"{topic}/0", None)
    for _ in range(40):  # up to 50 ms apart: several checks of an unchanged topic, no error
        part.next_batch()
        _wait_awake(part)
    part.close()
    assert sample(unread, topic) == 0 and not caplog.records

    grow_topic(kafka_broker, topic, 2)
    part = source.build_part("read", f"{topic}/0", None)  # the running engine's reader
    deadline = time.monotonic() + 20
    while sample(unread, topic) != 1:
        assert time.monotonic() < deadline, "the added partition was never noticed"
        part.next_batch()
        _wait_awake(part)
    for _ in range(20):  # more checks of the grown topic do not repeat the error
        part.next_batch()
        _wait_awake(part)
    part.close()
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert topic in record.getMessage()
    assert "now has 2 partitions" in record.getMessage() and "the 1 it listed" in record.getMessage()
    assert "Restart" in record.getMessage() and "earliest" in record.getMessage()

    # The restart: the topic is listed again and the new partition, without resume
    # state, is read from the earliest offset (written before the reader existed).
    sent = kafka_broker.produce(topic, values(7, tag="new"), partition=1)
    restarted = KafkaBatchSource(config(kafka_broker), topic, tail=False)
    assert restarted.list_parts() == [f"{topic}/0", f"{topic}/1"]
    new_part = restarted.build_part("read", f"{topic}/1", None)
    got = [(m.offset, m.value) for b in drain(new_part) for m in b.messages]
    new_part.close()
    assert got == [(d.offset, d.value) for d in sent] and got[0][0] == 0


class _ListedBeforeGrowth(KafkaBatchSource):
    """The source as it was at a start when ``topic`` had only partition 0."""

    def list_parts(self) -> list[str]:
        return super().list_parts()[:1]


def test_a_restart_from_snapshots_reads_a_new_partition_from_the_earliest_offset(
    kafka_broker, kafka_topic_factory, tmp_path: Path
):
    topic = kafka_topic_factory(partitions=2)
    old = kafka_broker.produce(topic, values(6, tag="p0"), partition=0)
    new = kafka_broker.produce(topic, values(4, tag="p1"), partition=1)
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))

    def run(source: KafkaBatchSource) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        flow = Dataflow("kafka_growth")
        batches = op.input("read", flow, source)
        offsets = op.flat_map_batch(
            "explode", batches, lambda bs: [(b.partition, m.offset) for b in bs for m in b.messages]
        )  # (partition, offset)
        op.output("collect", offsets, TestingSink(out))
        run_main(flow, epoch_interval=timedelta(milliseconds=50), recovery_config=recovery)
        return out

    cfg = config(kafka_broker)
    assert run(_ListedBeforeGrowth(cfg, topic, tail=False)) == [(0, d.offset) for d in old]
    more = kafka_broker.produce(topic, values(2, start=6, tag="p0"), partition=0)
    second = run(KafkaBatchSource(cfg, topic, tail=False))
    # partition 0 resumes from its snapshot; partition 1 (no snapshot) from offset 0
    assert sorted(second) == sorted([(0, d.offset) for d in more] + [(1, d.offset) for d in new])


def test_unreachable_kafka_at_start_is_one_error_not_a_flood(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
):
    servers = f"127.0.0.1:{free_port()}"
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as raised:
        list_partitions({"bootstrap.servers": servers}, "wifi.probes", timeout_s=2.0)  # no log_level
    elapsed = time.monotonic() - started
    message = str(raised.value)
    assert servers in message and "STOREPULSE_KAFKA_BOOTSTRAP" in message
    assert "Connection refused" in message  # librdkafka's lines, collapsed into the error
    assert elapsed < 2.0 + 3.0  # bounded by the timeout
    kafka_lines = [r for r in caplog.records if r.name.startswith("connectors.kafka")]
    stderr_lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    # librdkafka retries a refused connection many times a second: ~40 lines in 2 s
    assert len(kafka_lines) + len(stderr_lines) == 0, (kafka_lines[:3], stderr_lines[:3])



def test_readiness_follows_the_broker_answering(kafka_broker_factory) -> None:
    # A reader is ready once built (its partitions were just listed) and not ready from the
    # first transport error; reads that return messages make it ready again.
    from storepulse.health import READINESS

    broker = kafka_broker_factory()
    topic = broker.create_topic(f"ready.{uuid.uuid4().hex[:6]}", 1)
    broker.produce(topic, [(b"k", b"v%d" % i) for i in range(3)])
    source = KafkaBatchSource({"bootstrap.servers": broker.bootstrap, "log_level": "0"}, topic)
    part = source.build_part("read", f"{topic}/0", None)
    name = f"kafka[{topic}/0]"
    try:
        assert READINESS.is_up(name)
        got: list[RawMessage] = []
        deadline = time.monotonic() + 20
        while len(got) < 3 and time.monotonic() < deadline:
            got += [m for b in part.next_batch() for m in b.messages]
        assert len(got) == 3 and READINESS.is_up(name)
        broker.stop()  # connection refused from now on
        deadline = time.monotonic() + 30
        while READINESS.is_up(name) and time.monotonic() < deadline:
            part.next_batch()
            _wait_awake(part)
        assert not READINESS.is_up(name)
        assert name in READINESS.report().failing()
    finally:
        part.close()
        READINESS.forget(name)
