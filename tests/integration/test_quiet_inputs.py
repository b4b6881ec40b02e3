"""Inputs the simulator never makes, against `storepulse run`, real Kafka (Tansu) and Redis:
an empty transactions topic, a probes partition that never carries data, a topic whose
first record arrives long after start, and one sensor whose clock runs two minutes fast.

Expected values are distinct MACs per sensor-minute, counted here from what was produced.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict

import pytest
import redis

from connectors.catalog import Catalog
from tests.integration.engine_process import EngineProcess

pytestmark = pytest.mark.slow
MIN = 60_000
CATALOG = Catalog.from_yaml("""
malls: [{mall_id: M1, name: Joy, tz: UTC, lat: 0, lon: 0}]
stores:
  - {store_id: S1, merchant_id: X, mall_id: M1, name: Beans, category: coffee, tz: UTC, lat: 0, lon: 0}
  - {store_id: S2, merchant_id: Y, mall_id: M1, name: Books, category: books, tz: UTC, lat: 0, lon: 0}
sensors:
  - {sensor_id: AP-1, mall_id: M1, store_id: S1, zone: S1-floor, lat: 0, lon: 0}
  - {sensor_id: AP-2, mall_id: M1, store_id: S2, zone: S2-floor, lat: 0, lon: 0}
  - {sensor_id: C-1, mall_id: M1, zone: M1-corridor, lat: 0, lon: 0}
""")
ZONE = {"AP-1": "S1-floor", "AP-2": "S2-floor", "C-1": "M1-corridor"}


def sighting(sensor: str, ts: int, mac: str) -> bytes:
    return json.dumps({"sensor_id": sensor, "ts": ts, "mac": mac, "rssi": -60}).encode()


def macs(rng: random.Random, n: int) -> list[str]:
    return [f"02:00:00:{rng.randrange(256):02x}:{rng.randrange(256):02x}:{i:02x}" for i in range(n)]


def redis_minutes(client: redis.Redis, zone: str) -> dict[int, int]:
    """minute_ts -> devices of the zone's minute series in Redis."""
    out: dict[int, int] = {}
    for member in client.zrange(f"sp:footfall:zone:{{{zone}}}:minutes", 0, -1):
        assert isinstance(member, bytes)  # no withscores, no decode_responses
        minute = json.loads(member)
        out[minute["minute_ts"]] = minute["devices"]
    return out


def live_minute(client: redis.Redis, zone: str) -> int:
    value = client.hget(f"sp:footfall:zone:{{{zone}}}:live", "minute_ts")
    return int(value) if value else -1


def test_empty_and_late_starting_topics_stall_nothing(engine_env, kafka_broker, redis_client, tmp_path) -> None:
    # Probes only on partition 0 of two; both transactions partitions empty at start.
    topics, env = engine_env(2)
    rng = random.Random(12)
    base = (int(time.time() * 1000) - 40 * MIN) // MIN * MIN
    expected: dict[int, set[str]] = defaultdict(set)
    values = []
    for s in range(0, 30 * 60, 20):  # 30 minutes, every 20 s, a few of 12 phones
        for mac in rng.sample(macs(random.Random(1), 12), 3):
            values.append((b"AP-1", sighting("AP-1", base + s * 1000, mac)))
            expected[base + s * 1000 // MIN * MIN].add(mac)
    kafka_broker.produce(topics["probes"], values, partition=0, flush_every=50)
    # Event time reaches base + 29:40; with 60 s lateness, minutes before base + 28 close.
    newest_closed = base + 27 * MIN

    engine = EngineProcess(env, tmp_path / "engine.log").start()
    try:
        engine.wait_for(
            lambda: live_minute(redis_client, "S1-floor") == newest_closed,
            "every closed minute in Redis with an empty transactions topic",
            90,
        )
        written = redis_minutes(redis_client, "S1-floor")
        assert {m: n for m, n in written.items() if n} == {m: len(v) for m, v in expected.items() if m <= newest_closed}
        # S2 heard nothing: its live view still describes the newest closed minute, as zero
        assert redis_client.hget("sp:footfall:zone:{S2-floor}:live", "minute_ts") == str(newest_closed).encode()

        # The first transaction, long after start, on partition 1: counted, not late.
        sale = {"type": "sale", "txn_id": "T1", "ts": base + 29 * MIN + 50_000, "merchant_id": "X",
                "store_id": "S1", "amount": 990, "currency": "CNY", "payment": "cash"}
        kafka_broker.produce(topics["transactions"], [(b"S1", json.dumps(sale).encode())], partition=1)
        engine.wait_for(
            lambda: engine.metric("storepulse_input_accepted_total", topic=topics["transactions"]) == 1,
            "the late-starting transactions topic's first record to be accepted",
            60,
        )
        assert engine.metric("storepulse_input_rejected_total") == 0
    finally:
        engine.stop()


def test_one_sensor_clock_two_minutes_fast_loses_nothing_read_live(
    engine_env, kafka_broker, redis_client, tmp_path
) -> None:
    # One partition; AP-1 and C-1 keep time, AP-2 runs 120 s fast (inside the 300 s skew
    # accepted). Produced as it would arrive live: 30 s at a time, each read by the engine
    # before the next is sent. Before, 2/3 of the others' records were dead-lettered late.
    topics, env = engine_env(1, STOREPULSE_IDLE_PARTITION_S="30")
    rng = random.Random(3)
    phones = macs(random.Random(2), 10)
    base = (int(time.time() * 1000) - 40 * MIN) // MIN * MIN
    expected: dict[str, dict[int, set[str]]] = {zone: defaultdict(set) for zone in ZONE.values()}
    chunks = []
    for start in range(0, 30 * 60, 30):
        chunk = []
        for s in range(start, start + 30, 10):
            for sensor, fast_ms in (("AP-1", 0), ("C-1", 0), ("AP-2", 120_000)):
                mac = rng.choice(phones)
                ts = base + s * 1000 + fast_ms
                chunk.append((sensor.encode(), sighting(sensor, ts, mac)))
                expected[ZONE[sensor]][ts // MIN * MIN].add(mac)
        chunks.append(chunk)

    engine = EngineProcess(env, tmp_path / "engine.log").start()
    try:
        sent = 0
        for chunk in chunks:
            kafka_broker.produce(topics["probes"], chunk)
            sent += len(chunk)

            def read_all(n: int = sent) -> bool:
                return engine.metric("storepulse_input_records_total", topic=topics["probes"]) == n

            engine.wait_for(
                read_all,
                f"the engine to read {sent} sightings",
                30,
            )
        assert engine.metric("storepulse_input_rejected_total") == 0
        assert engine.metric("storepulse_input_accepted_total", topic=topics["probes"]) == sent
        # Event time: the slowest clocks reach base + 29:50; minutes before base + 28 close.
        newest_closed = base + 27 * MIN
        engine.wait_for(lambda: live_minute(redis_client, "S1-floor") == newest_closed, "minutes in Redis", 60)
        for zone in ("S1-floor", "M1-corridor"):
            written = {m: n for m, n in redis_minutes(redis_client, zone).items() if n}
            assert written == {m: len(v) for m, v in expected[zone].items() if m <= newest_closed}, zone
        # each source's newest ts against the engine's clock, from the last read: AP-2 120 s ahead
        offsets = {
            s: engine.metric("storepulse_source_clock_offset_seconds", topic=topics["probes"], source=s)
            for s in ("AP-1", "AP-2")
        }
        assert offsets["AP-2"] - offsets["AP-1"] == pytest.approx(120, abs=1)
    finally:
        engine.stop()
