"""The store members store (state/store_members.py) against a real redis-server and a real
one-node Redis Cluster: the hash other services read, exact round trips, replays that never
move a store backwards; and RedisStoreMembersSink (flows/redis_sinks.py): the
gauges, other items ignored, an outage waited out as the other Redis sinks do."""

from __future__ import annotations

import msgspec
import pytest
import redis
from redis.cluster import RedisCluster

from connectors.schemas import FootfallMinute, StoreMembers
from flows.redis_sinks import RedisStoreMembersSink
from state.redis import Backoff, connect
from state.store_members import StoreMembersStore, store_members_key
from storepulse.health import Readiness
from tests.fixtures.redis import RedisServer
from tests.flows.test_outputs import sample, write_through_an_outage

DAY = 86_400_000
T = 1_763_870_400_000  # 2025-11-23 04:00 UTC, epoch ms

# 4 active members, 1 with two or more purchases: 1 / 4 = 0.25
S1 = StoreMembers(store_id="S1", as_of_ts=T, members_active=4, members_repeat=1, repurchase_rate=0.25)
# every active member erased: no rate
S2 = StoreMembers(store_id="S2", as_of_ts=T - DAY, members_active=0, members_repeat=0, repurchase_rate=None)
MINUTE = FootfallMinute(scope="store", scope_id="S1", mall_id="M1", minute_ts=0, devices=1,
                        devices_15m=1, devices_1h=1)  # fmt: skip


def at(record: StoreMembers, days: int, **changes: object) -> StoreMembers:
    return msgspec.structs.replace(record, as_of_ts=record.as_of_ts + days * DAY, **changes)


def test_the_hash_is_the_documented_interface_and_reads_back_exactly(redis_client):
    store = StoreMembersStore(redis_client)
    assert store.write([S1, S2]) == [S1, S2]
    assert redis_client.hgetall("sp:store:{S1}:members") == {
        b"store_id": b"S1", b"as_of_ts": b"1763870400000", b"members_active": b"4",
        b"members_repeat": b"1", b"repurchase_rate": b"0.25",
    }  # fmt: skip
    assert redis_client.hget(store_members_key("S2"), "repurchase_rate") == b""  # None
    assert store.read("S1") == S1 and store.read("S2") == S2 and store.read("S3") is None
    redis_client.hset(store_members_key("S1"), "members_active", "four")
    with pytest.raises(msgspec.ValidationError, match="members_active"):
        store.read("S1")
    redis_client.hset(store_members_key("S1"), "members_active", "4")
    redis_client.hdel(store_members_key("S1"), "members_repeat")
    with pytest.raises(msgspec.ValidationError, match="members_repeat"):
        store.read("S1")
    redis_client.set(store_members_key("S2"), "a string")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.write([S2])


def test_redis_refuses_an_older_record_and_rewrites_an_equal_one(redis_client):
    store = StoreMembersStore(redis_client)
    assert store.write([S1]) == [S1]
    older = at(S1, -1, members_active=9)
    assert store.write([older]) == []  # a replay of an older batch: refused
    assert store.read("S1") == S1
    # equal as_of_ts: written (an erasure changes the counts, not as_of_ts)
    erased = msgspec.structs.replace(S1, members_active=3, members_repeat=0, repurchase_rate=0.0)
    assert store.write([erased]) == [erased] and store.read("S1") == erased
    newer = at(S1, 1, members_active=5)
    assert store.write([newer]) == [newer] and store.read("S1") == newer
    # several records of one store in a batch: the newest is sent (of equal ones, the last)
    assert store.write([at(S1, 3), at(S1, 2), at(S1, 3, members_active=7)]) == [at(S1, 3, members_active=7)]
    assert store.read("S1") == at(S1, 3, members_active=7)
    assert store.write([]) == []


def test_the_script_is_loaded_again_after_a_flush(redis_client):
    store = StoreMembersStore(redis_client)
    assert store.write([S1]) == [S1]
    redis_client.script_flush()
    assert store.write([at(S1, 1)]) == [at(S1, 1)]


def test_store_members_on_a_redis_cluster(redis_cluster_server):
    client = connect(redis_cluster_server.url)
    assert isinstance(client, RedisCluster)
    client.flushall()
    client.script_flush()  # the NOSCRIPT path through a cluster pipeline
    store = StoreMembersStore(client)
    records = [msgspec.structs.replace(S1, store_id=f"S{n}") for n in range(30)]
    assert len({client.keyslot(store_members_key(r.store_id)) for r in records}) > 1  # across slots
    assert store.write(records) == records
    assert store.write([at(records[3], -1)]) == []
    assert [store.read(r.store_id) for r in records] == records
    client.close()


# ---- the sink ------------------------------------------------------------------------


def gauges(store: str) -> tuple[float | None, float | None]:
    from prometheus_client import REGISTRY

    labels = {"store": store}
    return (
        REGISTRY.get_sample_value("storepulse_store_members_active", labels),
        REGISTRY.get_sample_value("storepulse_store_repurchase_ratio", labels),
    )


def test_the_sink_writes_sets_the_gauges_and_ignores_other_items(redis_server, redis_client):
    readiness = Readiness()
    part = RedisStoreMembersSink(redis_server.url, readiness=readiness).build("write_store_members_redis", 0, 1)
    assert readiness.report().ready and readiness.is_up("redis-store-members[0]")
    one = msgspec.structs.replace(S1, store_id="G1")
    part.write_batch([one, MINUTE, "not a record"])
    assert StoreMembersStore(redis_client).read("G1") == one
    assert redis_client.keys("sp:footfall:*") == []  # the minute is not this sink's
    assert gauges("G1") == (4.0, 0.25)

    # an older record (a replay) is refused by Redis and moves no gauge
    part.write_batch([at(one, -1, members_active=1, members_repeat=1, repurchase_rate=1.0)])
    assert gauges("G1") == (4.0, 0.25)
    # no active member left: active 0, the rate series is removed (no value)
    none_left = msgspec.structs.replace(one, members_active=0, members_repeat=0, repurchase_rate=None)
    part.write_batch([none_left])
    assert gauges("G1") == (0.0, None)
    part.write_batch([msgspec.structs.replace(none_left, store_id="G2")])  # never set: no error
    assert gauges("G2") == (0.0, None)
    part.close()


def test_a_real_redis_stopped_mid_run_holds_the_store_members_until_it_is_back(make_redis_server):
    server: RedisServer = make_redis_server()
    readiness = Readiness()
    sink = RedisStoreMembersSink(server.url, backoff=Backoff(base_s=0.01, cap_s=0.1), readiness=readiness)
    part = sink.build("write_store_members_redis", 0, 1)
    part.write_batch([S2])
    updates = sample("storepulse_redis_write_retries_total")
    write_through_an_outage(part, server, S1, readiness, "redis-store-members[0]")
    assert sample("storepulse_redis_write_retries_total") > updates
    assert StoreMembersStore(redis.Redis.from_url(server.url)).read("S1") == S1
    part.close()
