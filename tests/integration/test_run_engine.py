"""The engine as operators run it: `storepulse run` against real Kafka (Tansu) and Redis.

Input comes from the simulator's `smoke` scenario (one mall, four hours, 5% bad records of
every kind), written to Kafka with delivery reports. Expected values come from the
simulator's truth and from plain parsing of the bytes produced, not from engine code.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter

import pytest
import redis

from connectors.catalog import Catalog, Sensor
from connectors.kafka import ConfirmingProducer
from simulators.kafka_writer import write_events
from simulators.mall import MallSimulator
from simulators.scenario import Scenario
from state.catalog import CatalogStore
from tests.integration.engine_process import EngineProcess

pytestmark = pytest.mark.slow
ENGINE_TOPICS = ("wifi.probes", "pos.transactions")
MAC_TEXT = re.compile(rb"(?<![0-9A-Fa-f])[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}(?![0-9A-Fa-f])")


def records_in(value: bytes, sensors: set[str]) -> int:
    """Input records in one message, by plain parsing: a batched probe report of a known
    sensor is one record per observation; anything else (a report dead-lettered whole, a
    transaction, what does not parse) is one record."""
    try:
        doc = json.loads(value)
    except ValueError:
        return 1
    if not isinstance(doc, dict) or doc.get("sensor_id") not in sensors:
        return 1
    observations = doc.get("observations")
    return len(observations) if isinstance(observations, list) and observations else 1


def mac_spellings(values: list[bytes]) -> set[bytes]:
    """Every MAC address in the input, in every spelling a leak could take."""
    out: set[bytes] = set()
    for value in values:
        for mac in MAC_TEXT.findall(value):
            bare = re.sub(rb"[:-]", b"", mac).lower()
            pairs = [bare[i : i + 2] for i in range(0, 12, 2)]
            for sep in (b":", b"-"):
                out.add(sep.join(pairs))
                out.add(sep.join(pairs).upper())
            out.add(bare)
    return out


def blobs(*values: object) -> list[bytes]:
    """``values`` as the bytes they are: the client does not decode responses."""
    assert all(isinstance(v, bytes) for v in values), values
    return [v for v in values if isinstance(v, bytes)]


def redis_dump(client: redis.Redis) -> bytes:
    parts: list[bytes] = []
    for key in client.scan_iter(count=1000):
        parts += blobs(key)
        kind = client.type(key)
        if kind == b"hash":
            for f, v in client.hgetall(key).items():
                parts += blobs(f, v)
        elif kind == b"zset":
            parts += blobs(*client.zrange(key, 0, -1))
        elif kind == b"string":
            parts += blobs(client.get(key) or b"")
        elif kind == b"set":
            parts += blobs(*client.smembers(key))
        elif kind == b"list":
            parts += blobs(*client.lrange(key, 0, -1))
    return b"\n".join(parts)


@pytest.fixture
def setup(kafka_broker, kafka_topic_factory, redis_server, redis_client, tmp_path):
    topics = {
        "wifi.probes": kafka_topic_factory(3),
        "pos.transactions": kafka_topic_factory(2),
        "members.events": kafka_topic_factory(1),
        "deadletter": kafka_topic_factory(1),
    }
    env = {
        "STOREPULSE_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "STOREPULSE_KAFKA_CONFIG": "fetch.wait.max.ms=50",  # Tansu answers a waiting fetch late
        "STOREPULSE_TOPIC_PROBES": topics["wifi.probes"],
        "STOREPULSE_TOPIC_TRANSACTIONS": topics["pos.transactions"],
        "STOREPULSE_TOPIC_MEMBERS": topics["members.events"],
        "STOREPULSE_TOPIC_DEADLETTER": topics["deadletter"],
        "STOREPULSE_REDIS_URL": redis_server.url,
        "STOREPULSE_MAC_HASH_KEY": "integration-test-secret",
        "STOREPULSE_IDLE_PARTITION_S": "1",
        "STOREPULSE_CATALOG_REFRESH_S": "1",
    }
    return topics, env, tmp_path


def produce(kafka_broker, topics: dict[str, str], events) -> dict[str, list[bytes]]:
    """Write events to Kafka; returns the values Kafka confirmed, by logical topic."""
    chosen = [e for e in events if e.topic in ENGINE_TOPICS]
    report = write_events(chosen, ConfirmingProducer({"bootstrap.servers": kafka_broker.bootstrap}), topics=topics)
    assert report.error is None and report.failed == 0
    limit = 1 << 20  # the producer refuses what is larger than its message.max.bytes
    return {t: [e.value for e in chosen if e.topic == t and len(e.value) < limit] for t in ENGINE_TOPICS}


def test_bad_input_reconciles_and_no_mac_leaves_the_first_step(setup, kafka_broker, redis_client) -> None:
    topics, env, tmp = setup
    sim = MallSimulator(Scenario.load("smoke"), 7)
    CatalogStore(redis_client).save(sim.catalog)
    sent = produce(kafka_broker, topics, sim.events())
    sensors = {s.sensor_id for s in sim.catalog.sensors}
    expected_records = {t: sum(records_in(v, sensors) for v in values) for t, values in sent.items()}

    engine = EngineProcess(env, tmp / "engine.log").start()
    try:

        def read_all() -> bool:
            return all(
                engine.metric("storepulse_input_records_total", topic=topics[t]) == expected_records[t]
                for t in ENGINE_TOPICS
            )

        engine.wait_for(read_all, f"the engine to read every input record ({expected_records})", 60)
        # read = accepted + dead-lettered (+ replayed duplicate transactions), exactly, per topic
        for t in ENGINE_TOPICS:
            accepted = engine.metric("storepulse_input_accepted_total", topic=topics[t])
            rejected = engine.metric("storepulse_input_rejected_total", topic=topics[t])
            duplicates = engine.metric("storepulse_duplicate_transactions_total") if t == "pos.transactions" else 0
            assert accepted + rejected + duplicates == expected_records[t], t
        dead = kafka_broker.read_topic(topics["deadletter"])
        metrics_text = engine.metrics_text() or ""
    finally:
        engine.stop()

    letters = [json.loads(r.value) for r in dead]
    by_reason = Counter((next(k for k, v in topics.items() if v == d["topic"]), d["reason"]) for d in letters)
    truth = {k: n for k, n in sim.truth.bad_counts().items() if k[0] in ENGINE_TOPICS and k[1] != "oversized"}
    assert by_reason == truth  # every injected bad record, with its reason; nothing else
    assert all(r.key == d["topic"].encode() for r, d in zip(dead, letters, strict=True))
    # The engine served footfall: every store has hours with visits and sales in Redis.
    assert all(redis_client.zcard(f"sp:footfall:store:{{{s.store_id}}}:hours") > 0 for s in sim.catalog.stores)

    # No raw MAC anywhere after the first step: Redis, output topic, logs, metrics.
    macs = mac_spellings([v for values in sent.values() for v in values])
    assert len(macs) > 100
    outputs = {
        "redis": redis_dump(redis_client),
        "deadletter topic": b"\n".join((r.key or b"") + b" " + r.value for r in dead),
        "logs": engine.log().encode(),
        "metrics": metrics_text.encode(),
    }
    for where, blob in outputs.items():
        leaked = [m.decode() for m in macs if m in blob]
        assert not leaked, f"raw MACs in {where}: {leaked[:3]}"
    assert b"mac#" in outputs["deadletter topic"]  # dead letters did carry MACs, redacted


def test_a_running_engine_sees_a_catalog_change_within_5_seconds(setup, kafka_broker, redis_client) -> None:
    topics, env, tmp = setup
    base = MallSimulator(Scenario.load("smoke"), 7).catalog
    CatalogStore(redis_client).save(base)
    store = base.stores[0]
    new_sensor = Sensor(
        sensor_id="AP-NEW",
        mall_id=store.mall_id,
        store_id=store.store_id,
        zone=f"{store.store_id}-door",
        lat=store.lat,
        lon=store.lon,
    )
    engine = EngineProcess(env, tmp / "engine.log").start()
    sent_at: dict[int, float] = {}  # offset -> wall time of produce
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            now = time.time()
            value = json.dumps({"sensor_id": "AP-NEW", "ts": int(now * 1000), "mac": "a4:5e:60:1b:22:9c", "rssi": -60})
            got = kafka_broker.produce(topics["wifi.probes"], [(b"AP-NEW", value.encode())], partition=0)
            sent_at[got[0].offset] = now
            time.sleep(0.1)

    def probes(metric: str) -> float:
        return engine.metric(metric, topic=topics["wifi.probes"])

    def catalog_loaded_at() -> float:
        return engine.metric("storepulse_catalog_loaded_timestamp_seconds")

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        engine.wait_for(lambda: probes("storepulse_input_rejected_total") > 0, "a sighting of AP-NEW rejected")
        loaded_before = catalog_loaded_at()
        changed_at = time.time()
        CatalogStore(redis_client).save(
            Catalog(malls=base.malls, stores=base.stores, sensors=[*base.sensors, new_sensor], campaigns=base.campaigns)
        )
        engine.wait_for(lambda: catalog_loaded_at() > loaded_before, "the engine to load the new catalog")
        engine.wait_for(lambda: probes("storepulse_input_accepted_total") > 0, "a sighting of AP-NEW accepted")
        stop.set()
        feeder.join(10)
        engine.wait_for(
            lambda: probes("storepulse_input_records_total") == len(sent_at), "the engine to read every sighting"
        )
    finally:
        engine.stop()
    rejected = [json.loads(r.value) for r in kafka_broker.read_topic(topics["deadletter"])]
    assert {d["reason"] for d in rejected} == {"unknown_sensor"}
    rejected_offsets = {d["offset"] for d in rejected}
    accepted_offsets = set(sent_at) - rejected_offsets
    # one switch, in offset order: every sighting after the first accepted one is accepted too
    assert accepted_offsets and max(rejected_offsets) < min(accepted_offsets)
    rejected_at = [sent_at[o] for o in rejected_offsets]
    assert min(rejected_at) < changed_at  # before the change the sensor was unknown ...
    assert max(rejected_at) < changed_at + 5.0  # ... and the change took effect within 5 s


def footfall_state(client: redis.Redis) -> dict[bytes, object]:
    """Every footfall key's content (not its TTL, which counts from the time of writing)."""
    out: dict[bytes, object] = {}
    for key in client.scan_iter(match=b"sp:footfall:*", count=1000):
        kind = client.type(key)
        out[key] = client.hgetall(key) if kind == b"hash" else client.zrange(key, 0, -1, withscores=True)
    return out


def settle(engine: EngineProcess, client: redis.Redis, deadline_s: float = 60.0) -> dict[bytes, object]:
    """Wait until the engine's Redis output has stopped changing for 3 s; return it."""
    last, since = footfall_state(client), time.monotonic()
    deadline = time.monotonic() + deadline_s
    while time.monotonic() - since < 3.0:
        assert time.monotonic() < deadline, "footfall in Redis kept changing"
        time.sleep(0.5)
        now = footfall_state(client)
        if now != last:
            last, since = now, time.monotonic()
    return last


def test_a_crash_and_restart_gives_what_an_uninterrupted_run_gives(setup, kafka_broker, redis_server, tmp_path) -> None:
    topics, env, tmp = setup
    sim = MallSimulator(Scenario.load("smoke"), 7)
    sent = produce(kafka_broker, topics, sim.events())
    probes = sum(records_in(v, {s.sensor_id for s in sim.catalog.sensors}) for v in sent["wifi.probes"])
    results = []
    for db, crash in ((1, False), (2, True)):
        url = redis_server.url.rsplit("/", 1)[0] + f"/{db}"
        client = redis.Redis.from_url(url)
        CatalogStore(client).save(sim.catalog)
        run_env = {**env, "STOREPULSE_REDIS_URL": url, "STOREPULSE_RECOVERY_DIR": str(tmp / f"recovery-{db}")}
        args = ["--snapshot-s", "0.5"]
        engine = EngineProcess(run_env, tmp / f"engine-{db}.log", args).start()

        def probes_read(e: EngineProcess = engine) -> float:
            return e.metric("storepulse_input_records_total", topic=topics["wifi.probes"])

        if crash:  # SIGKILL once about half of the probes are read, then start again
            engine.wait_for(lambda: probes_read() > probes / 2, "half of the input to be read")
            engine.kill()
            engine = EngineProcess(run_env, tmp / f"engine-{db}.log", args).start()
        else:
            engine.wait_for(lambda: probes_read() == probes, "all of the input to be read")
        try:
            results.append(settle(engine, client))
        finally:
            engine.stop()
    uninterrupted, crashed = results
    assert len(uninterrupted) > 30  # 4 stores x (live, minutes, hours, some hours) + zones + mall
    assert crashed == uninterrupted
    # and the sales in Redis are the true sales: none lost, none counted twice
    sales = Counter[str]()
    for key, fields in uninterrupted.items():
        if b":hour:" in key:
            sales[fields[b"store_id"].decode()] += int(fields[b"sales"])  # type: ignore[index]
    closed = {s: n for s, (n, _) in sim.truth.sales_by_store().items()}
    assert sales == closed
