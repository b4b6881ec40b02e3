"""Redis stops answering mid-run under `storepulse run` (real Kafka, real redis-server,
paused with SIGSTOP as a hung or partitioned server looks): the engine waits with
backoff, says so in /readyz and its metrics, and once Redis answers again every closed
minute is in Redis, the ones closed during the outage included."""

from __future__ import annotations

import json
import os
import random
import signal
import time
import urllib.error
import urllib.request
from collections import defaultdict

import pytest

from tests.integration.engine_process import EngineProcess
from tests.integration.test_quiet_inputs import MIN, live_minute, macs, redis_minutes, sighting

pytestmark = pytest.mark.slow


def ready(engine: EngineProcess) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{engine.port}/readyz", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_redis_paused_mid_run_loses_nothing(engine_env, kafka_broker, redis_server, redis_client, tmp_path) -> None:
    topics, env = engine_env(1)
    rng = random.Random(5)
    phones = macs(random.Random(6), 8)
    base = (int(time.time() * 1000) - 40 * MIN) // MIN * MIN
    expected: dict[int, set[str]] = defaultdict(set)

    def minutes(first: int, last: int) -> list[tuple[bytes, bytes]]:
        out = []
        for s in range(first * 60, last * 60, 15):
            mac = rng.choice(phones)
            out.append((b"AP-1", sighting("AP-1", base + s * 1000, mac)))
            expected[base + s * 1000 // MIN * MIN].add(mac)
        return out

    kafka_broker.produce(topics["probes"], minutes(0, 10))
    engine = EngineProcess(env, tmp_path / "engine.log").start()
    assert redis_server.process is not None
    try:
        # event time 09:45 -> minutes before 08:00 closed, newest 07:00 (from base)
        engine.wait_for(lambda: live_minute(redis_client, "S1-floor") == base + 7 * MIN, "minutes before the outage")
        os.kill(redis_server.process.pid, signal.SIGSTOP)
        try:
            kafka_broker.produce(topics["probes"], minutes(10, 20))
            engine.wait_for(lambda: engine.metric("storepulse_redis_up") == 0, "the engine to see Redis down", 90)
            status, body = ready(engine)
            assert status == 503 and not body["ready"]
            assert engine.metric("storepulse_redis_write_failures_total") >= 1
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)
        engine.wait_for(
            lambda: live_minute(redis_client, "S1-floor") == base + 17 * MIN, "minutes after the outage", 90
        )
        engine.wait_for(lambda: ready(engine)[0] == 200, "the engine to be ready again", 30)
        assert engine.metric("storepulse_redis_up") == 1
        written = {m: n for m, n in redis_minutes(redis_client, "S1-floor").items() if n}
        assert written == {m: len(v) for m, v in expected.items() if m <= base + 17 * MIN}
    finally:
        engine.stop()
