"""KafkaBatchSource against a real Kafka-protocol broker (Tansu on loopback).

Expected messages come from the test producer's delivery reports (partition, offset,
key, value), never from the code under test.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main
from confluent_kafka.admin import AdminClient
from prometheus_client import REGISTRY

from connectors.kafka_admin import list_partitions
from connectors.kafka_source import KafkaBatchSource
from connectors.records import RawBatch
from storepulse.errors import BackendUnavailable

# Tansu answers a long-poll fetch only after about half of fetch.wait.max.ms even when
# data is there; a short wait keeps these tests fast (real Kafka answers at once).
FAST = {"fetch.wait.max.ms": 50}

Item = tuple[int, int, bytes | None]  # (partition, offset, value)


def config(broker: Any, **extra: Any) -> dict[str, Any]:
    return {**broker.client_config(), **FAST, **extra}


def values(n: int, start: int = 0, tag: str = "m") -> list[tuple[bytes, bytes]]:
    return [(f"k{i % 3}".encode(), json.dumps({"tag": tag, "i": i}).encode())
            for i in range(start, start + n)]


def drain(part: Any, deadline_s: float = 20.0) -> list[RawBatch]:
    """Call next_batch as bytewax would (honouring next_awake) until StopIteration."""
    batches: list[RawBatch] = []
    deadline = time.monotonic() + deadline_s
    while True:
        if time.monotonic() > deadline:
            raise AssertionError(f"partition did not end within {deadline_s}s")
        try:
            batches.extend(part.next_batch())
        except StopIteration:
            return batches
        _wait_awake(part)


def _wait_awake(part: Any) -> None:
    awake = part.next_awake()
    if awake is not None:
        time.sleep(max(0.0, (awake - datetime.now(UTC)).total_seconds()))  # next_awake contract


def consumer_errors(topic: str) -> float:
    return REGISTRY.get_sample_value(
        "storepulse_kafka_consumer_errors_total", {"topic": topic}
    ) or 0.0


def test_reads_every_partition_in_order_with_exact_offsets(kafka_broker, kafka_topic_factory):
    topic = kafka_topic_factory(partitions=3)
    sent = []
    for p, count in ((0, 25), (1, 0), (2, 9)):
        sent += kafka_broker.produce(topic, values(count, tag=f"p{p}"), partition=p)
    source = KafkaBatchSource(config(kafka_broker), topic, batch_size=7, tail=False)

    assert source.list_parts() == [f"{topic}/0", f"{topic}/1", f"{topic}/2"]
    for p in range(3):
        part = source.build_part("read", f"{topic}/{p}", None)
        batches = drain(part)
        part.close()
        got = [(b.partition, m.offset, m.key, m.value) for b in batches for m in b.messages]
        want = [(d.partition, d.offset, d.key, d.value) for d in sent if d.partition == p]
        assert got == want
        # the end of a partition is said as one idle batch, so it stops holding event time
        assert batches[-1].idle and batches[-1].messages == []
        assert all(b.topic == topic and b.partition == p and not b.idle for b in batches[:-1])
        assert all(1 <= len(b.messages) <= 7 for b in batches[:-1])
        assert part.snapshot() == len(want)  # next offset to read: the end
    assert len([d for d in sent if d.partition == 0]) == 25


def test_resume_state_is_the_next_offset(kafka_broker, kafka_topic_factory):
    topic = kafka_topic_factory()
    sent = kafka_broker.produce(topic, values(12))
    source = KafkaBatchSource(config(kafka_broker), topic, tail=False)
    part = source.build_part("read", f"{topic}/0", 5)
    got = [m.offset for b in drain(part) for m in b.messages]
    part.close()
    assert got == [d.offset for d in sent[5:]] == list(range(5, 12))


def test_latest_starts_at_the_end_and_snapshots_a_real_offset(kafka_broker, kafka_topic_factory):
    topic = kafka_topic_factory()
    kafka_broker.produce(topic, values(3), flush_every=1)  # three one-message batches
    part = KafkaBatchSource(config(kafka_broker), topic, starting_offset="latest").build_part(
        "read", f"{topic}/0", None
    )
    before_eof: list[int] = []
    deadline = time.monotonic() + 10
    while part.snapshot() < 0:  # -1 (logical end) until the first fetch reports EOF
        before_eof += [m.offset for b in part.next_batch() for m in b.messages]
        assert time.monotonic() < deadline, "EOF never resolved the logical offset"
        _wait_awake(part)
    assert part.snapshot() == 3
    # Real Kafka starts at 3 exactly; Tansu's ListOffsets(latest) may be one producer
    # batch short, so at most the last one-message batch (offset 2) is read again.
    assert before_eof in ([], [2])
    later = kafka_broker.produce(topic, values(2, start=3))
    got: list[tuple[int, bytes | None]] = []
    while len(got) < 2:
        got += [(m.offset, m.value) for b in part.next_batch() for m in b.messages]
        assert time.monotonic() < deadline + 10
        _wait_awake(part)
    part.close()
    assert got == [(d.offset, d.value) for d in later]
    assert part.snapshot() == 5


def test_idle_marker_for_an_idle_partition_only(kafka_broker, kafka_topic_factory):
    topic = kafka_topic_factory(partitions=2)
    source = KafkaBatchSource(config(kafka_broker), topic, idle_after_s=0.6)
    busy = source.build_part("read", f"{topic}/0", None)
    idle = source.build_part("read", f"{topic}/1", None)
    stop = threading.Event()

    def keep_busy() -> None:  # one message to partition 0 every 100 ms
        i = 0
        while not stop.is_set():
            kafka_broker.produce(topic, values(1, start=i), partition=0)
            i += 1
            stop.wait(0.1)

    producer = threading.Thread(target=keep_busy)
    producer.start()
    out: dict[int, list[RawBatch]] = {0: [], 1: []}
    try:
        end = time.monotonic() + 2.2
        while time.monotonic() < end:
            for p, part in ((0, busy), (1, idle)):
                out[p] += part.next_batch()
            time.sleep(0.005)  # poll interval of this two-partition loop
    finally:
        stop.set()
        producer.join(10)
        busy.close()
        idle.close()

    markers = [b for b in out[1] if b.idle]
    assert markers == out[1]  # the idle partition emitted only markers
    assert 2 <= len(markers) <= 4  # one per 0.6 s of a 2.2 s run, not one per poll
    assert all(b.messages == [] and b.partition == 1 and b.topic == topic for b in markers)
    assert out[0] and not [b for b in out[0] if b.idle]
    offsets = [m.offset for b in out[0] for m in b.messages]
    assert offsets == list(range(len(offsets))) and len(offsets) >= 10


def test_broker_outage_while_reading_loses_and_repeats_nothing(kafka_broker, kafka_topic_factory):
    topic = kafka_topic_factory()
    sent = kafka_broker.produce(topic, values(3000), flush_every=20)
    # Small record batches, small fetches and almost no prefetch, so the outage lands in
    # the middle of reading; a short socket timeout so librdkafka notices the frozen
    # broker and reports transport errors.
    cfg = config(kafka_broker, **{"fetch.max.bytes": 1024, "max.partition.fetch.bytes": 1024,
                                  "message.max.bytes": 1000, "queued.max.messages.kbytes": 1,
                                  "socket.timeout.ms": 1000})
    part = KafkaBatchSource(cfg, topic, batch_size=100, tail=False).build_part(
        "read", f"{topic}/0", None
    )
    got: list[int] = []
    deadline = time.monotonic() + 30
    while len(got) < 500:
        got += [m.offset for b in part.next_batch() for m in b.messages]
        assert time.monotonic() < deadline
        _wait_awake(part)
    errors_before = consumer_errors(topic)
    with kafka_broker.paused():
        outage_end = time.monotonic() + 3.0
        while time.monotonic() < outage_end:  # reading on during the outage must not raise
            got += [m.offset for b in part.next_batch() for m in b.messages]
            _wait_awake(part)
        read_during = len(got)
    got += [m.offset for b in drain(part, deadline_s=30) for m in b.messages]
    part.close()
    assert read_during < 3000, "the whole topic was read before the outage began"
    assert got == [d.offset for d in sent] == list(range(3000))
    assert consumer_errors(topic) > errors_before  # the outage was noticed and counted


def test_unreachable_broker_is_counted_not_raised():
    from tests.fixtures.kafka import free_port

    topic = "wifi.probes.unreachable"
    cfg = {"bootstrap.servers": f"127.0.0.1:{free_port()}", "log_level": 0}
    part = KafkaBatchSource(cfg, topic, idle_after_s=0.3).build_part("read", f"{topic}/0", 7)
    before = consumer_errors(topic)
    batches = []
    calls = 0
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        batches += part.next_batch()
        calls += 1
        _wait_awake(part)
    part.close()
    assert calls <= 40  # next_awake backs off to 50 ms: an empty partition does not spin
    assert consumer_errors(topic) > before
    assert batches and all(b.idle and b.messages == [] for b in batches)
    assert part.snapshot() == 7  # nothing read, position kept


def test_unknown_topic_fails_at_start_and_is_not_created(kafka_broker, kafka_topic_factory):
    topic = kafka_topic_factory(create=False)
    with pytest.raises(BackendUnavailable, match=f"{topic}.*does not exist"):
        KafkaBatchSource(config(kafka_broker), topic).list_parts()
    assert topic not in AdminClient(kafka_broker.client_config()).list_topics(timeout=10).topics


def test_unreachable_broker_at_start_raises_backend_unavailable():
    from tests.fixtures.kafka import free_port

    cfg = {"bootstrap.servers": f"127.0.0.1:{free_port()}", "log_level": 0}
    with pytest.raises(BackendUnavailable, match="STOREPULSE_KAFKA_BOOTSTRAP"):
        list_partitions(cfg, "wifi.probes", timeout_s=1.0)


def test_authentication_failure_raises_with_what_to_do(kafka_broker_factory):
    secured = kafka_broker_factory(authentication=True)
    cfg = {"bootstrap.servers": secured.bootstrap, "security.protocol": "SASL_PLAINTEXT",
           "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "nobody",
           "sasl.password": "wrong", "log_level": 0}
    with pytest.raises(BackendUnavailable, match="STOREPULSE_KAFKA_SASL_PASSWORD"):
        list_partitions(cfg, "wifi.probes", timeout_s=1.0)
    part = KafkaBatchSource(cfg, "wifi.probes").build_part("read", "wifi.probes/0", None)
    deadline = time.monotonic() + 10
    with pytest.raises(BackendUnavailable, match="sasl.username"):
        while time.monotonic() < deadline:
            part.next_batch()
            _wait_awake(part)
    part.close()


def _flow(source: KafkaBatchSource, out: list[Item],
          crash_at: dict[str, int] | None = None) -> Dataflow:
    flow = Dataflow("kafka_resume")
    batches = op.input("read", flow, source)
    items = op.flat_map_batch(
        "explode",
        batches,
        lambda bs: [(b.partition, m.offset, m.value) for b in bs for m in b.messages],
    )  # (partition, offset, value)

    def crash(item: Item) -> Item:
        if crash_at is not None and crash_at.get("offset") == item[1]:
            crash_at.clear()  # crash once
            raise RuntimeError("injected crash")
        return item

    op.output("collect", op.map("maybe_crash", items, crash), TestingSink(out))
    return flow


def test_resume_from_bytewax_recovery_reads_exactly_the_new_messages(
    kafka_broker, kafka_topic_factory, tmp_path: Path
):
    topic = kafka_topic_factory(partitions=2)
    first = [d for p in (0, 1) for d in kafka_broker.produce(topic, values(10, tag=f"a{p}"),
                                                            partition=p)]
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    source = KafkaBatchSource(config(kafka_broker), topic, batch_size=4, tail=False)

    out1: list[Item] = []
    run_main(_flow(source, out1), epoch_interval=timedelta(milliseconds=50),
             recovery_config=recovery)
    assert sorted(out1) == sorted((d.partition, d.offset, d.value) for d in first)

    second = [d for p in (0, 1) for d in kafka_broker.produce(topic, values(5, 10, f"b{p}"),
                                                             partition=p)]
    out2: list[Item] = []
    run_main(_flow(source, out2), epoch_interval=timedelta(milliseconds=50),
             recovery_config=recovery)
    assert sorted(out2) == sorted((d.partition, d.offset, d.value) for d in second)
    assert [o for p, o, _ in out2 if p == 0] == list(range(10, 15))  # in order per partition


def test_crash_and_resume_is_at_least_once_from_the_last_snapshot(
    kafka_broker, kafka_topic_factory, tmp_path: Path
):
    topic = kafka_topic_factory()
    sent = [(d.partition, d.offset, d.value) for d in kafka_broker.produce(topic, values(400))]
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    source = KafkaBatchSource(config(kafka_broker), topic, batch_size=10, tail=False)

    out1: list[Item] = []
    with pytest.raises(RuntimeError, match="maybe_crash"):
        run_main(_flow(source, out1, crash_at={"offset": 300}),
                 epoch_interval=timedelta(0), recovery_config=recovery)
    out2: list[Item] = []
    run_main(_flow(source, out2), epoch_interval=timedelta(0), recovery_config=recovery)

    assert out1 == sent[: len(out1)]  # in order, nothing skipped before the crash
    assert out2, "nothing was read after resume"
    resumed_at = out2[0][1]
    assert out2 == sent[resumed_at:]  # from the snapshot to the end, in order
    assert resumed_at <= len(out1)  # nothing missing between the runs
    assert resumed_at > 0  # resumed from a snapshot, not from the beginning
