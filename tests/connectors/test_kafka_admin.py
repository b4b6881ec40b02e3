"""ensure_topics and list_partitions against a real Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import pytest

from connectors.kafka_admin import ensure_topics, list_partitions
from storepulse.errors import BackendUnavailable
from tests.fixtures.kafka import free_port


def test_ensure_topics_creates_missing_and_is_idempotent(kafka_broker, kafka_topic_factory):
    existing = kafka_topic_factory(partitions=2)
    new_a, new_b = kafka_topic_factory(create=False), kafka_topic_factory(create=False)
    config = kafka_broker.client_config()
    wanted = {existing: 6, new_a: 3, new_b: 1}

    ensure_topics(config, wanted)
    ensure_topics(config, wanted)  # a second run changes nothing and does not fail

    assert kafka_broker.partitions(new_a) == [0, 1, 2]
    assert kafka_broker.partitions(new_b) == [0]
    assert kafka_broker.partitions(existing) == [0, 1]  # existing topics are never altered
    assert list_partitions(config, new_a) == [0, 1, 2]


def test_ensure_topics_rejects_a_bad_partition_count(kafka_broker):
    with pytest.raises(ValueError, match="partition count"):
        ensure_topics(kafka_broker.client_config(), {"alerts": 0})


def test_ensure_topics_unreachable_broker_raises_backend_unavailable():
    config = {"bootstrap.servers": f"127.0.0.1:{free_port()}", "log_level": 0}
    with pytest.raises(BackendUnavailable, match="is the broker up|Is the broker up"):
        ensure_topics(config, {"alerts": 1}, timeout_s=1.0)
