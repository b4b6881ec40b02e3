"""The people store (state/people.py) against a real redis-server and a real one-node Redis
Cluster: the documented keys, zone and store sums made from each sensor's part whatever the
batches, replays that never move the live view back, the 48 h series; the in-memory sums
behind the gauges (PeopleTotals); and RedisPeopleSink (flows/redis_sinks.py)."""

from __future__ import annotations

import json

import msgspec
import pytest
import redis
from redis.cluster import RedisCluster

from connectors.schemas import FootfallMinute, PeopleCount
from flows.redis_sinks import RedisPeopleSink
from state.people import PeopleStore, PeopleTotals, ScopePeople, live_key, windows_key
from state.redis import Backoff, connect
from storepulse.health import Readiness
from tests.fixtures.redis import RedisServer
from tests.flows.test_outputs import sample, write_through_an_outage

T = 1_763_870_400_000  # 2025-11-23 04:00 UTC, epoch ms
W = 300_000  # one window
HOUR = 3_600_000

# Store S1 has two sensors in two zones; AP9 is a corridor sensor of no store.
AP1 = PeopleCount(sensor_id="AP1", zone="S1-front", store_id="S1", mall_id="M1", window_ts=T,
                  people=1.5, macs=5, devices=3)  # fmt: skip
AP2 = PeopleCount(sensor_id="AP2", zone="S1-back", store_id="S1", mall_id="M1", window_ts=T,
                  people=2.25, macs=7, devices=4)  # fmt: skip
AP9 = PeopleCount(sensor_id="AP9", zone="corridor", store_id=None, mall_id="M1", window_ts=T,
                  people=0.1, macs=2, devices=1)  # fmt: skip
# the scopes AP1, AP2, AP9 count towards
SCOPES = [("sensor", "AP1"), ("sensor", "AP2"), ("sensor", "AP9"), ("zone", "S1-front"), ("zone", "S1-back"),
          ("zone", "corridor"), ("store", "S1")]  # fmt: skip


def at(record: PeopleCount, windows: int = 0, **changes: object) -> PeopleCount:
    return msgspec.structs.replace(record, window_ts=record.window_ts + windows * W, **changes)


def people(scope: str, scope_id: str, ts: int, p: float, macs: int, devices: int, sensors: int) -> ScopePeople:
    return ScopePeople(scope=scope, scope_id=scope_id, mall_id="M1", window_ts=ts,  # type: ignore[arg-type]
                       people=p, macs=macs, devices=devices, sensors=sensors)  # fmt: skip


def test_the_keys_are_the_documented_interface(redis_client):
    store = PeopleStore(redis_client)
    assert store.write([AP1, AP2, AP9]) == 7  # live hashes: 3 sensors, 3 zones, 1 store
    assert sorted(k.decode() for k in redis_client.keys("sp:people:*")) == sorted(
        f"sp:people:{scope}:{{{i}}}:{kind}" for scope, i in SCOPES for kind in ("live", "windows")
    )  # no store key for the corridor sensor
    # S1 = AP1 + AP2: people 1.5 + 2.25 = 3.75, macs 5 + 7 = 12, devices 3 + 4 = 7
    assert redis_client.hgetall("sp:people:store:{S1}:live") == {
        b"scope": b"store", b"scope_id": b"S1", b"mall_id": b"M1", b"window_ts": b"1763870400000",
        b"people": b"3.75", b"macs": b"12", b"devices": b"7", b"sensors": b"2",
    }  # fmt: skip
    [(member, score)] = redis_client.zrange("sp:people:store:{S1}:windows", 0, -1, withscores=True)
    assert score == T
    assert json.loads(member) == {
        "scope": "store", "scope_id": "S1", "mall_id": "M1", "window_ts": T, "people": 3.75, "macs": 12,
        "devices": 7, "sensors": 2, "parts": {"AP1": [1.5, 5, 3], "AP2": [2.25, 7, 4]},
    }  # fmt: skip
    assert store.live("store", "S1") == people("store", "S1", T, 3.75, 12, 7, 2)
    assert store.live("sensor", "AP1") == people("sensor", "AP1", T, 1.5, 5, 3, 1)
    assert store.live("zone", "corridor") == people("zone", "corridor", T, 0.1, 2, 1, 1)
    assert store.windows("store", "S1", 0) == [people("store", "S1", T, 3.75, 12, 7, 2)]
    assert store.parts("store", "S1", T) == {"AP1": (1.5, 5, 3), "AP2": (2.25, 7, 4)}
    assert store.live("store", "S2") is None and store.windows("store", "S2", 0) == []
    assert 47 * 3600 < redis_client.ttl(live_key("store", "S1")) <= 48 * 3600
    assert 47 * 3600 < redis_client.ttl(windows_key("store", "S1")) <= 48 * 3600
    assert store.write([]) == 0


def test_sums_are_the_same_whatever_the_batches_and_their_order(redis_client):
    """A store's window whose sensors' records come in separate batches, in either order,
    sums both (not the last batch's only); a replay of one of them changes nothing."""
    store = PeopleStore(redis_client)
    whole = people("store", "S1", T, 3.75, 12, 7, 2)
    store.write([AP1])
    assert store.live("store", "S1") == people("store", "S1", T, 1.5, 5, 3, 1)
    store.write([AP2])
    assert store.live("store", "S1") == whole
    store.write([AP1])  # a replay of the first batch
    assert store.live("store", "S1") == whole and store.windows("store", "S1", 0) == [whole]
    redis_client.flushall()
    store.write([AP2])
    store.write([AP1])
    assert store.live("store", "S1") == whole
    # one batch holding two windows of each sensor, sensor by sensor (as a close emits them):
    # T+1 = (2 + 1) people, (6 + 1) macs, (3 + 1) devices
    store.write([AP1, at(AP1, 1, people=2.0, macs=6, devices=3), AP2, at(AP2, 1, people=1.0, macs=1, devices=1)])
    assert store.windows("store", "S1", 0) == [whole, people("store", "S1", T + W, 3.0, 7, 4, 2)]
    assert store.live("store", "S1") == people("store", "S1", T + W, 3.0, 7, 4, 2)


def test_the_live_view_never_moves_back_and_an_equal_window_is_rewritten(redis_client):
    store = PeopleStore(redis_client)
    store.write([at(AP1, 1)])
    assert store.write([AP1]) == 0  # an older window: into the series only (zone, sensor, store)
    assert store.live("sensor", "AP1") == people("sensor", "AP1", T + W, 1.5, 5, 3, 1)
    assert [w.window_ts for w in store.windows("sensor", "AP1", 0)] == [T, T + W]
    assert [w.window_ts for w in store.windows("sensor", "AP1", T + 1)] == [T + W]
    corrected = at(AP1, 1, people=4.0, macs=9, devices=6)
    assert store.write([corrected]) == 3  # equal window_ts: rewritten (sensor, zone, store)
    assert store.live("store", "S1") == people("store", "S1", T + W, 4.0, 9, 6, 1)
    assert len(store.windows("store", "S1", 0)) == 2  # one member per window


def test_the_series_keeps_the_48_hours_that_end_with_its_newest_window(redis_client):
    store = PeopleStore(redis_client)
    store.write([AP1, at(AP1, 1)])
    newest = at(AP1, 48 * HOUR // W)  # exactly 48 h after T: T goes (score <= newest - 48 h)
    store.write([newest])
    assert [w.window_ts for w in store.windows("sensor", "AP1", 0)] == [T + W, T + 48 * HOUR]


def test_floats_and_sums_read_back_exactly(redis_client):
    store = PeopleStore(redis_client)
    third = at(AP1, people=1 / 3)
    store.write([third, at(AP2, people=0.2), at(AP9, people=0.1)])
    assert store.live("sensor", "AP1").people == 1 / 3  # type: ignore[union-attr]
    assert store.parts("store", "S1", T)["AP1"][0] == 1 / 3
    store.write([at(AP1, 1, people=0.1), at(AP2, 1, people=0.2)])
    # the double sum of the parts, in sensor id order (Python's 0.1 + 0.2), not a rounded 0.3
    assert redis_client.hget(live_key("store", "S1"), "people") == b"0.30000000000000004"
    assert store.live("store", "S1").people == 0.1 + 0.2  # type: ignore[union-attr]
    assert redis_client.hget(live_key("sensor", "AP1"), "people") == b"0.1"  # 15 digits when they read back the same


def test_the_script_is_loaded_again_after_a_flush(redis_client):
    store = PeopleStore(redis_client)
    store.write([AP1])
    redis_client.script_flush()
    store.write([AP2])
    assert store.live("store", "S1") == people("store", "S1", T, 3.75, 12, 7, 2)


def test_a_key_of_another_type_fails_the_write(redis_client):
    redis_client.set(live_key("store", "S1"), "a string")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        PeopleStore(redis_client).write([AP1])


def test_people_on_a_redis_cluster(redis_cluster_server):
    client = connect(redis_cluster_server.url)
    assert isinstance(client, RedisCluster)
    client.flushall()
    client.script_flush()  # the NOSCRIPT path through a cluster pipeline
    store = PeopleStore(client)
    records = [at(AP1, sensor_id=f"AP{n}", zone=f"Z{n}", store_id=f"S{n // 2}") for n in range(30)]
    assert len({client.keyslot(live_key("store", r.store_id or "")) for r in records}) > 1  # across slots
    store.write(records)
    # two sensors a store: 1.5 + 1.5 people, 5 + 5 macs, 3 + 3 devices
    assert [store.live("store", f"S{n}") for n in range(15)] == [
        people("store", f"S{n}", T, 3.0, 10, 6, 2) for n in range(15)
    ]
    client.close()


# ---- the sums behind the gauges --------------------------------------------------------


def test_totals_sum_each_scope_newest_window_and_show_a_quiet_one_as_zero():
    totals = PeopleTotals()

    def table(rows: list[ScopePeople]) -> dict[tuple[str, str], tuple[int, float, int, int, int]]:
        return {(t.scope, t.scope_id): (t.window_ts, t.people, t.macs, t.devices, t.sensors) for t in rows}

    assert table(totals.add([AP1, AP9])) == {
        ("sensor", "AP1"): (T, 1.5, 5, 3, 1), ("zone", "S1-front"): (T, 1.5, 5, 3, 1),
        ("store", "S1"): (T, 1.5, 5, 3, 1), ("sensor", "AP9"): (T, 0.1, 2, 1, 1),
        ("zone", "corridor"): (T, 0.1, 2, 1, 1),
    }  # fmt: skip
    # AP2's record of the same window in a later batch: S1 = 1.5 + 2.25, 5 + 7, 3 + 4
    assert table(totals.add([AP2])) == {
        ("sensor", "AP2"): (T, 2.25, 7, 4, 1), ("zone", "S1-back"): (T, 2.25, 7, 4, 1),
        ("store", "S1"): (T, 3.75, 12, 7, 2),
    }  # fmt: skip
    assert totals.add([at(AP2, -1, people=9.0)]) == []  # an older window moves nothing
    # the next window: only AP1 heard anything; AP2 and AP9 (and their zones) are quiet, 0
    assert table(totals.add([at(AP1, 1, people=1.0, macs=2, devices=1)])) == {
        ("sensor", "AP1"): (T + W, 1.0, 2, 1, 1), ("zone", "S1-front"): (T + W, 1.0, 2, 1, 1),
        ("store", "S1"): (T + W, 1.0, 2, 1, 1), ("sensor", "AP9"): (T + W, 0.0, 0, 0, 0),
        ("zone", "corridor"): (T + W, 0.0, 0, 0, 0), ("sensor", "AP2"): (T + W, 0.0, 0, 0, 0),
        ("zone", "S1-back"): (T + W, 0.0, 0, 0, 0),
    }  # fmt: skip
    # another mall's windows do not quiet this one
    other = at(AP1, 5, sensor_id="BP1", zone="B-floor", store_id="B1", mall_id="M2")
    assert {t.mall_id for t in totals.add([other])} == {"M2"}


# ---- the sink ------------------------------------------------------------------------


def test_the_sink_writes_people_counts_and_ignores_other_items(redis_server, redis_client):
    readiness = Readiness()
    part = RedisPeopleSink(redis_server.url, readiness=readiness).build("write_people_redis", 0, 1)
    assert readiness.report().ready and readiness.is_up("redis-people[0]")
    minute = FootfallMinute(scope="store", scope_id="S1", mall_id="M1", minute_ts=T, devices=1, devices_15m=1,
                            devices_1h=1)  # fmt: skip
    part.write_batch([AP1, minute, "not a record"])
    part.write_batch([AP2])
    assert PeopleStore(redis_client).live("store", "S1") == people("store", "S1", T, 3.75, 12, 7, 2)
    assert redis_client.keys("sp:footfall:*") == []  # the minute is not this sink's
    part.close()


def test_a_real_redis_stopped_mid_run_holds_the_people_until_it_is_back(make_redis_server):
    server: RedisServer = make_redis_server()
    readiness = Readiness()
    part = RedisPeopleSink(server.url, backoff=Backoff(base_s=0.01, cap_s=0.1), readiness=readiness).build(
        "write_people_redis", 0, 1
    )
    part.write_batch([AP2])
    retries = sample("storepulse_redis_write_retries_total")
    write_through_an_outage(part, server, AP1, readiness, "redis-people[0]")
    assert sample("storepulse_redis_write_retries_total") > retries
    # the server came back empty (no persistence): the held batch is all there is
    assert PeopleStore(redis.Redis.from_url(server.url)).live("store", "S1") == people("store", "S1", T, 1.5, 5, 3, 1)
    part.close()
