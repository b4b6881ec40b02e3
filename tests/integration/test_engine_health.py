"""`storepulse run` serves /healthz and /readyz on its metrics port, ready once it runs."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from simulators.mall import MallSimulator
from simulators.scenario import Scenario
from state.catalog import CatalogStore
from tests.integration.engine_process import EngineProcess

pytestmark = pytest.mark.slow


def get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_running_engine_is_live_and_becomes_ready(kafka_broker, kafka_topic_factory, redis_server, redis_client,
                                                    tmp_path) -> None:
    CatalogStore(redis_client).save(MallSimulator(Scenario.load("smoke"), 7).catalog)
    env = {
        "STOREPULSE_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "STOREPULSE_KAFKA_CONFIG": "fetch.wait.max.ms=50",
        "STOREPULSE_TOPIC_PROBES": kafka_topic_factory(2),
        "STOREPULSE_TOPIC_TRANSACTIONS": kafka_topic_factory(1),
        "STOREPULSE_TOPIC_MEMBERS": kafka_topic_factory(1),
        "STOREPULSE_TOPIC_DEADLETTER": kafka_topic_factory(1),
        "STOREPULSE_REDIS_URL": redis_server.url,
        "STOREPULSE_MAC_HASH_KEY": "integration-test-secret",
    }
    engine = EngineProcess(env, tmp_path / "engine.log").start()
    try:
        assert get(engine.port, "/healthz") == (200, {"live": True})
        deadline = time.monotonic() + 60
        status, body = get(engine.port, "/readyz")
        while status != 200:
            assert status == 503 and body["ready"] is False, body
            assert time.monotonic() < deadline, f"not ready after 60 s: {body}\n{engine.log()[-2000:]}"
            time.sleep(0.1)
            status, body = get(engine.port, "/readyz")
        assert body["ready"] is True
        assert body["conditions"]["dataflow"]["ok"] and body["conditions"]["redis[0]"]["ok"]
        assert engine.metric("storepulse_build_info", bytewax="0.21.1") == 1
        assert engine.metric("storepulse_redis_up") == 1
    finally:
        engine.stop()
