"""Fixtures of the engine-process tests: topics, catalog and environment for `storepulse run`."""

from __future__ import annotations

import pytest

from state.catalog import CatalogStore
from tests.integration.test_quiet_inputs import CATALOG


@pytest.fixture
def engine_env(kafka_broker, kafka_topic_factory, redis_server, redis_client):
    def make(probe_partitions: int, **extra: str) -> tuple[dict[str, str], dict[str, str]]:
        topics = {
            "probes": kafka_topic_factory(probe_partitions),
            "transactions": kafka_topic_factory(2),
            "members": kafka_topic_factory(1),
            "deadletter": kafka_topic_factory(1),
        }
        CatalogStore(redis_client).save(CATALOG)
        env = {
            "STOREPULSE_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
            "STOREPULSE_KAFKA_CONFIG": "fetch.wait.max.ms=50",
            "STOREPULSE_TOPIC_PROBES": topics["probes"],
            "STOREPULSE_TOPIC_TRANSACTIONS": topics["transactions"],
            "STOREPULSE_TOPIC_MEMBERS": topics["members"],
            "STOREPULSE_TOPIC_DEADLETTER": topics["deadletter"],
            "STOREPULSE_REDIS_URL": redis_server.url,
            "STOREPULSE_MAC_HASH_KEY": "integration-test-secret",
            "STOREPULSE_IDLE_PARTITION_S": "1",
            "STOREPULSE_CATALOG_REFRESH_S": "1",
            **extra,
        }
        return topics, env

    return make
