"""A message built to kill a decoder, on each input topic of a running `storepulse run`
(real Kafka, real Redis): it is dead-lettered with its reason and the engine goes on."""

from __future__ import annotations

import json

import pytest

from tests.integration.engine_process import EngineProcess
from tests.integration.test_quiet_inputs import MIN, sighting

pytestmark = pytest.mark.slow
DEEP = b"[" * 100_000 + b"]" * 100_000  # 200 KB, far under the 1 MiB message limit


def test_deeply_nested_messages_are_dead_lettered_and_the_engine_goes_on(
    engine_env, kafka_broker, redis_client, tmp_path
) -> None:
    import time

    topics, env = engine_env(1)
    base = (int(time.time() * 1000) - 10 * MIN) // MIN * MIN
    sale = {"type": "sale", "txn_id": "T1", "ts": base, "merchant_id": "X", "store_id": "S1",
            "amount": 990, "currency": "CNY", "payment": "cash"}
    engine = EngineProcess(env, tmp_path / "engine.log").start()
    try:
        # Before, during and after: good records on both sides of each hostile one.
        kafka_broker.produce(topics["probes"], [
            (b"AP-1", sighting("AP-1", base, "02:00:00:00:00:01")),
            (b"AP-1", DEEP),
            (b"AP-1", sighting("AP-1", base + 1000, "02:00:00:00:00:02")),
        ])
        kafka_broker.produce(topics["transactions"], [(b"S1", DEEP), (b"S1", json.dumps(sale).encode())])
        engine.wait_for(
            lambda: engine.metric("storepulse_input_accepted_total", topic=topics["probes"]) == 2
            and engine.metric("storepulse_input_accepted_total", topic=topics["transactions"]) == 1,
            "the good records around the hostile ones to be accepted",
            60,
        )
        for topic in (topics["probes"], topics["transactions"]):
            assert engine.metric("storepulse_input_rejected_total", topic=topic, reason="too_deep") == 1
        dead = [json.loads(r.value) for r in kafka_broker.read_topic(topics["deadletter"])]
        assert sorted((d["topic"], d["offset"], d["reason"]) for d in dead) == sorted(
            [(topics["probes"], 1, "too_deep"), (topics["transactions"], 0, "too_deep")]
        )
        assert all(d["raw_truncated"] for d in dead)
        # still running and reading
        kafka_broker.produce(topics["probes"], [(b"AP-1", sighting("AP-1", base + 2000, "02:00:00:00:00:03"))])
        engine.wait_for(
            lambda: engine.metric("storepulse_input_accepted_total", topic=topics["probes"]) == 3,
            "a record after the hostile ones to be accepted",
            60,
        )
    finally:
        engine.stop()
