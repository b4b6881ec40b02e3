"""The store health store (state/store_health.py) against a real redis-server and a real
one-node Redis Cluster: the hash and the ranking other services read, exact round trips,
replays that never move a store back, ranks worked out by hand; and RedisStoreHealthSink
(flows/redis_sinks.py): the health gauge, other items ignored, an outage waited out."""

from __future__ import annotations

import msgspec
import pytest
import redis
from prometheus_client import REGISTRY
from redis.cluster import RedisCluster

from connectors.schemas import FootfallMinute, StoreHealth
from flows.redis_sinks import RedisStoreHealthSink
from state.redis import Backoff, connect
from state.store_health import (
    RANKING_KEY,
    Ranked,
    RankedHealth,
    StoreHealthStore,
    bottom,
    health_of,
    prune,
    store_health_key,
    top,
)
from storepulse.health import Readiness
from tests.fixtures.redis import RedisServer
from tests.flows.test_outputs import sample, write_through_an_outage

HOUR = 3_600_000
T = 1_763_870_400_000  # 2025-11-23 04:00 UTC, epoch ms

# at its normal, 30% repurchase: 100 * (0.4*0.5 + 0.2*0.5 + 0.2*0.5 + 0.2*0.3) = 46.0
S1 = StoreHealth(store_id="S1", merchant_id="M1", as_of_ts=T, score=46.0, sales_index=1.0,
                 footfall_index=1.0, conversion_index=1.0, repurchase_rate=0.3)  # fmt: skip
# only sales known, at half its normal: 100 * 0.25 = 25.0
S2 = StoreHealth(store_id="S2", merchant_id="M2", as_of_ts=T - HOUR, score=25.0, sales_index=0.5,
                 footfall_index=None, conversion_index=None, repurchase_rate=None)  # fmt: skip
MINUTE = FootfallMinute(scope="store", scope_id="S1", mall_id="M1", minute_ts=0, devices=1,
                        devices_15m=1, devices_1h=1)  # fmt: skip


def at(record: StoreHealth, hours: int, **changes: object) -> StoreHealth:
    return msgspec.structs.replace(record, as_of_ts=record.as_of_ts + hours * HOUR, **changes)


def store(record: StoreHealth, store_id: str, score: float) -> StoreHealth:
    return msgspec.structs.replace(record, store_id=store_id, score=score)


def test_the_hash_and_the_ranking_are_the_documented_interface(redis_client):
    health = StoreHealthStore(redis_client)
    assert health.write([S1, S2]) == [S1, S2]
    assert redis_client.hgetall("sp:store:{S1}:health") == {
        b"store_id": b"S1", b"merchant_id": b"M1", b"as_of_ts": b"1763870400000", b"score": b"46.0",
        b"sales_index": b"1.0", b"footfall_index": b"1.0", b"conversion_index": b"1.0", b"repurchase_rate": b"0.3",
    }  # fmt: skip
    assert redis_client.hget(store_health_key("S2"), "footfall_index") == b""  # None
    assert redis_client.zrange("sp:stores:health", 0, -1, withscores=True) == [(b"S2", 25.0), (b"S1", 46.0)]
    assert health.read("S1") == S1 and health.read("S2") == S2 and health.read("S3") is None
    redis_client.hset(store_health_key("S1"), "score", "high")
    with pytest.raises(msgspec.ValidationError, match="score"):
        health.read("S1")


def test_a_replay_never_moves_a_store_back_and_an_equal_one_is_rewritten(redis_client):
    health = StoreHealthStore(redis_client)
    assert health.write([S1]) == [S1]
    older = at(S1, -1, score=99.0)
    assert health.write([older]) == []  # a replay of an older hour: refused, hash and rank
    assert health.read("S1") == S1 and redis_client.zscore(RANKING_KEY, "S1") == 46.0
    assert health.write([S1]) == [S1]  # equal as_of_ts: rewritten (a replay ends where it was)
    newer = at(S1, 1, score=50.5)
    assert health.write([newer]) == [newer]
    assert health.read("S1") == newer and redis_client.zscore(RANKING_KEY, "S1") == 50.5
    # several records of one store in a batch: the newest is sent (of equal ones, the last)
    assert health.write([at(S1, 3, score=1.0), at(S1, 2), at(S1, 3, score=7.0)]) == [at(S1, 3, score=7.0)]
    assert health.read("S1") == at(S1, 3, score=7.0) and redis_client.zscore(RANKING_KEY, "S1") == 7.0
    assert health.write([]) == []
    with pytest.raises(TypeError, match="FootfallMinute"):
        health.write([MINUTE])  # type: ignore[list-item]


def test_a_crash_between_hash_and_ranking_is_repaired_by_the_replay(redis_client):
    health = StoreHealthStore(redis_client)
    health.write([S1])
    redis_client.zrem(RANKING_KEY, "S1")  # as if the process died after the hashes were written
    assert health_of(redis_client, "S1") is None  # not ranked: no rank to give
    assert health.write([S1]) == [S1]  # the replay sends the same record
    assert health_of(redis_client, "S1") == RankedHealth(S1, 1, 1)


def test_ranks_best_first_with_ties_sharing_one(redis_client):
    # scores: E 90, B 72.5, A 46, D 46, C 25 -> ranks 1, 2, 3, 3, 5 (competition ranking:
    # the two stores at 46 have two stores above them, and C has four)
    records = [store(S1, "A", 46.0), store(S1, "B", 72.5), store(S2, "C", 25.0), store(S1, "D", 46.0),
               store(S1, "E", 90.0)]  # fmt: skip
    StoreHealthStore(redis_client).write(records)
    assert health_of(redis_client, "E") == RankedHealth(records[4], 1, 5)
    assert health_of(redis_client, "A") == RankedHealth(records[0], 3, 5)
    assert health_of(redis_client, "D") == RankedHealth(records[3], 3, 5)
    assert health_of(redis_client, "C") == RankedHealth(records[2], 5, 5)
    assert health_of(redis_client, "X") is None
    # top: ZREVRANGE order (a tie by store id, descending); bottom: ZRANGE order
    assert top(redis_client, 3) == [Ranked("E", 90.0, 1, 5), Ranked("B", 72.5, 2, 5), Ranked("D", 46.0, 3, 5)]
    assert bottom(redis_client, 2) == [Ranked("C", 25.0, 5, 5), Ranked("A", 46.0, 3, 5)]
    assert len(top(redis_client, 100)) == 5 and top(redis_client, 0) == [] == bottom(redis_client, -1)
    # C recovers past A and D: 25 -> 60; they drop to 4, C rises to 3
    StoreHealthStore(redis_client).write([at(records[2], 1, score=60.0)])
    assert [(r.store_id, r.rank) for r in top(redis_client, 5)] == [("E", 1), ("B", 2), ("C", 3), ("D", 4), ("A", 4)]
    StoreHealthStore(redis_client).forget("E")
    assert redis_client.exists(store_health_key("E")) == 0
    assert top(redis_client, 1) == [Ranked("B", 72.5, 1, 4)]


def test_a_store_that_left_the_catalog_leaves_the_ranking_when_the_catalog_is_loaded(redis_server, redis_client):
    from connectors.catalog import Catalog
    from storepulse.run import _save_catalog
    from storepulse.settings import Settings

    StoreHealthStore(redis_client).write([store(S1, "A", 46.0), store(S2, "B", 25.0), store(S1, "C", 70.0)])
    assert prune(redis_client, {"A", "B", "C", "D"}) == []  # D has no health yet: nothing to do
    catalog = Catalog.from_yaml("""
stores:
  - {store_id: A, merchant_id: M1, name: A, category: food, tz: UTC, lat: 0, lon: 0}
  - {store_id: C, merchant_id: M1, name: C, category: food, tz: UTC, lat: 0, lon: 0}
""")
    _save_catalog(Settings(redis_url=redis_server.url), catalog, "catalog load")  # B closed
    assert [r.store_id for r in top(redis_client, 10)] == ["C", "A"]
    assert redis_client.exists(store_health_key("B")) == 0 and health_of(redis_client, "B") is None


def test_store_health_on_a_redis_cluster(redis_cluster_server):
    client = connect(redis_cluster_server.url)
    assert isinstance(client, RedisCluster)
    client.flushall()
    client.script_flush()  # the NOSCRIPT path through a cluster pipeline
    health = StoreHealthStore(client)
    records = [store(S1, f"S{n}", float(n)) for n in range(30)]  # S29 best (29.0), S0 worst
    assert len({client.keyslot(store_health_key(r.store_id)) for r in records}) > 1  # across slots
    assert health.write(records) == records
    assert health.write([at(records[3], -1, score=100.0)]) == []
    assert [health.read(r.store_id) for r in records] == records
    assert health_of(client, "S3") == RankedHealth(records[3], 27, 30)  # 26 stores above 3.0
    assert top(client, 2) == [Ranked("S29", 29.0, 1, 30), Ranked("S28", 28.0, 2, 30)]
    assert bottom(client, 1) == [Ranked("S0", 0.0, 30, 30)]
    client.close()


# ---- the sink ------------------------------------------------------------------------


def gauge(store_id: str) -> float | None:
    return REGISTRY.get_sample_value("storepulse_store_health_score", {"store": store_id})


def test_the_sink_writes_sets_the_gauge_and_ignores_other_items(redis_server, redis_client):
    readiness = Readiness()
    part = RedisStoreHealthSink(redis_server.url, readiness=readiness).build("write_store_health_redis", 0, 1)
    assert readiness.report().ready and readiness.is_up("redis-store-health[0]")
    one = store(S1, "H1", 46.0)
    part.write_batch([one, MINUTE, "not a record"])
    assert StoreHealthStore(redis_client).read("H1") == one
    assert redis_client.keys("sp:footfall:*") == []  # the minute is not this sink's
    assert gauge("H1") == 46.0
    part.write_batch([at(one, -1, score=5.0)])  # an older record (a replay): refused, no gauge moves
    assert gauge("H1") == 46.0 and health_of(redis_client, "H1") == RankedHealth(one, 1, 1)
    part.write_batch([at(one, 1, score=30.25)])
    assert gauge("H1") == 30.25
    part.close()


def test_a_real_redis_stopped_mid_run_holds_the_store_health_until_it_is_back(make_redis_server):
    server: RedisServer = make_redis_server()
    readiness = Readiness()
    sink = RedisStoreHealthSink(server.url, backoff=Backoff(base_s=0.01, cap_s=0.1), readiness=readiness)
    part = sink.build("write_store_health_redis", 0, 1)
    part.write_batch([S2])
    retries = sample("storepulse_redis_write_retries_total")
    write_through_an_outage(part, server, S1, readiness, "redis-store-health[0]")
    assert sample("storepulse_redis_write_retries_total") > retries
    client = redis.Redis.from_url(server.url)
    assert StoreHealthStore(client).read("S1") == S1 and client.zscore(RANKING_KEY, "S1") == 46.0
    part.close()
