"""The Kafka writer against a real Kafka-protocol broker (the ``kafka_broker`` fixture)."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest

from connectors.kafka import ConfirmingProducer
from simulators.kafka_writer import write_events, write_scenario
from simulators.mall import MallSimulator
from simulators.scenario import Scenario
from storepulse.errors import ConfigError
from tests.fixtures.kafka import free_port

LOGICAL = ("wifi.probes", "pos.transactions", "members.events")


def tiny(**changes: object) -> Scenario:
    return Scenario.load("demo").replace(
        start_date="2025-03-14", stores_per_mall=3, shoppers_per_mall_per_day=40,
        probe_interval_s=300.0, **changes)


def test_writes_every_event_keyed_like_the_simulator_source(kafka_broker, kafka_topic_factory
                                                            ) -> None:
    scenario = tiny(bad_record_share=0.05)
    partitions = {"wifi.probes": 3, "pos.transactions": 2, "members.events": 1}
    topics = {t: kafka_topic_factory(partitions[t]) for t in LOGICAL}
    events = list(MallSimulator(scenario, seed=4).events())
    oversized = Counter(e.topic for e in events if len(e.value) > 1_000_000)
    assert oversized  # the client refuses these: larger than message.max.bytes

    report = write_scenario(scenario, 4, kafka_broker.client_config(), topics=topics)

    assert report.error is None and report.failed == 0
    assert report.refused == dict(oversized)
    assert report.produced == len(events) - sum(oversized.values())
    for logical, name in topics.items():
        got = kafka_broker.read_topic(name)
        sent = [(e.key, e.value) for e in events if e.topic == logical and len(e.value) <= 1_000_000]
        assert sorted((m.key, m.value) for m in got) == sorted(sent)
        for m in got:  # librdkafka's partitioner agrees with SimulatorSource's crc32
            assert m.partition == zlib.crc32(m.key) % partitions[logical]
        # and each partition keeps the simulator's order
        for p in range(partitions[logical]):
            in_part = [m.value for m in sorted(got, key=lambda m: m.offset) if m.partition == p]
            assert in_part == [v for k, v in sent if zlib.crc32(k) % partitions[logical] == p]


def test_paces_to_the_target_rate(kafka_broker, kafka_topic_factory) -> None:
    topics = {t: kafka_topic_factory(1) for t in LOGICAL}
    events = list(MallSimulator(tiny(), seed=5).events())
    assert len(events) > 1200
    producer = ConfirmingProducer(kafka_broker.client_config())
    report = write_events(events, producer, topics=topics, rate=1000.0, max_messages=1200)
    assert report.produced == 1200 and report.failed == 0
    assert 1.15 < report.seconds < 2.5  # 1,200 messages at 1,000/s
    assert 500 < report.rate <= 1050
    assert "produced 1200 messages" in report.summary()


def test_an_unreachable_broker_is_reported_not_raised() -> None:
    events = list(MallSimulator(tiny(), seed=6).events())[:50]
    producer = ConfirmingProducer({"bootstrap.servers": f"127.0.0.1:{free_port()}",
                                   "message.timeout.ms": "1000"}, max_attempts=1)
    report = write_events(events, producer, flush_timeout_s=3.0)
    assert report.produced == 0 and report.failed == 50
    assert report.error and "not delivered" in report.error


def test_rate_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="rate must be positive"):
        write_events([], ConfirmingProducer({"bootstrap.servers": "127.0.0.1:1"}), rate=0)
