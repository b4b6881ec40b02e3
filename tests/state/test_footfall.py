"""state.footfall against a real redis-server: exact keys and values, replays, readers, batches."""

from __future__ import annotations

import json
import time

import pytest
import redis

from connectors.schemas import FootfallMinute, StoreHour
from state.footfall import FootfallStore

T = 1763870040000  # a minute (2025-11-23 03:54 UTC)
H = 1763866800000  # the hour it falls in (03:00 UTC)
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000

M1 = FootfallMinute(scope="store", scope_id="S1", mall_id="M1", minute_ts=T, devices=12,
                    devices_15m=30, devices_1h=80, visitors_inside=4, sales=2, sales_amount=25600)
M2 = FootfallMinute(scope="store", scope_id="S1", mall_id="M1", minute_ts=T + MINUTE, devices=10,
                    devices_15m=31, devices_1h=81, visitors_inside=3, sales=3, sales_amount=900, refunds=1,
                    payments={"wechat": 2, "cash": 1})
Z1 = FootfallMinute(scope="zone", scope_id="S1-floor", mall_id="M1", minute_ts=T, devices=7,
                    devices_15m=9, devices_1h=20)
H1 = StoreHour(mall_id="M1", store_id="S1", hour_ts=H, visitors=5, visitors_stable=3,
               new_visitors=4, returning_visitors=1, passers_by=40, dwell_median_s=412.5,
               dwell_buckets=(1, 2, 1, 1, 0), sales=2, sales_amount=25600, capture_rate=0.125,
               conversion=0.4)
H0 = StoreHour(mall_id="M1", store_id="S1", hour_ts=H - HOUR, visitors=0, visitors_stable=0,
               new_visitors=0, returning_visitors=0, passers_by=0, dwell_median_s=None,
               dwell_buckets=(0, 0, 0, 0, 0), sales=0, sales_amount=0, capture_rate=None,
               conversion=None)
BATCH = [M1, Z1, H0, M2, H1]

M1_JSON = (b'{"scope":"store","scope_id":"S1","mall_id":"M1","minute_ts":1763870040000,'
           b'"devices":12,"devices_15m":30,"devices_1h":80,"visitors_inside":4,"sales":2,'
           b'"sales_amount":25600,"refunds":0,"payments":{}}')
M2_JSON = (b'{"scope":"store","scope_id":"S1","mall_id":"M1","minute_ts":1763870100000,'
           b'"devices":10,"devices_15m":31,"devices_1h":81,"visitors_inside":3,"sales":3,'
           b'"sales_amount":900,"refunds":1,"payments":{"wechat":2,"cash":1}}')
Z1_JSON = (b'{"scope":"zone","scope_id":"S1-floor","mall_id":"M1","minute_ts":1763870040000,'
           b'"devices":7,"devices_15m":9,"devices_1h":20,"visitors_inside":0,"sales":0,'
           b'"sales_amount":0,"refunds":0,"payments":{}}')


def dump_all(client: redis.Redis) -> dict[bytes, bytes]:
    """Every key with its DUMP bytes (the client does not decode responses)."""
    dumped: dict[bytes, bytes] = {}
    for key in sorted(client.keys("*")):
        assert isinstance(key, bytes)  # no decode_responses
        value = client.dump(key)
        assert value is not None, key  # just listed, and nothing expires keys mid-test
        dumped[key] = value
    return dumped


class CountingConnection(redis.Connection):
    """A real connection that counts the requests it sends (one per round trip)."""

    sent = 0

    def send_packed_command(self, command, check_health=True):
        type(self).sent += 1
        super().send_packed_command(command, check_health)


def counting_client(redis_server) -> redis.Redis:
    pool = redis.ConnectionPool(connection_class=CountingConnection, host="127.0.0.1",
                                port=int(redis_server.url.rsplit(":", 1)[1].split("/")[0]))
    client = redis.Redis(connection_pool=pool)
    client.ping()  # connect now, so the handshake is not counted below
    CountingConnection.sent = 0
    return client


def test_write_sets_exactly_these_keys_and_values(redis_client):
    FootfallStore(redis_client).write(BATCH)
    assert sorted(redis_client.keys("*")) == [
        b"sp:footfall:store:{S1}:hour:1763863200000",
        b"sp:footfall:store:{S1}:hour:1763866800000",
        b"sp:footfall:store:{S1}:hours",
        b"sp:footfall:store:{S1}:live",
        b"sp:footfall:store:{S1}:minutes",
        b"sp:footfall:zone:{S1-floor}:live",
        b"sp:footfall:zone:{S1-floor}:minutes",
    ]
    live = redis_client.hgetall("sp:footfall:store:{S1}:live")
    assert {k: v for k, v in live.items() if k != b"payments"} == {
        b"scope": b"store", b"scope_id": b"S1", b"mall_id": b"M1",
        b"minute_ts": b"1763870100000", b"devices": b"10", b"devices_15m": b"31",
        b"devices_1h": b"81", b"visitors_inside": b"3", b"sales": b"3", b"sales_amount": b"900",
        b"refunds": b"1",
    }  # fmt: skip
    assert json.loads(live.pop(b"payments")) == {"wechat": 2, "cash": 1}  # a JSON object in one field
    assert redis_client.hgetall("sp:footfall:zone:{S1-floor}:live")[b"devices_1h"] == b"20"
    assert redis_client.zrange("sp:footfall:store:{S1}:minutes", 0, -1, withscores=True) == [
        (M1_JSON, 1763870040000.0), (M2_JSON, 1763870100000.0)
    ]
    assert redis_client.zrange("sp:footfall:zone:{S1-floor}:minutes", 0, -1, withscores=True) == [
        (Z1_JSON, 1763870040000.0)
    ]
    assert redis_client.hgetall("sp:footfall:store:{S1}:hour:1763866800000") == {
        b"mall_id": b"M1", b"store_id": b"S1", b"hour_ts": b"1763866800000",
        b"visitors": b"5", b"visitors_stable": b"3", b"new_visitors": b"4",
        b"returning_visitors": b"1", b"passers_by": b"40", b"dwell_median_s": b"412.5",
        b"lt_5m": b"1", b"5_20m": b"2", b"20_60m": b"1", b"1_6h": b"1", b"gt_6h": b"0",
        b"sales": b"2", b"sales_amount": b"25600", b"capture_rate": b"0.125",
        b"conversion": b"0.4",
    }  # fmt: skip
    empty_hour = redis_client.hgetall("sp:footfall:store:{S1}:hour:1763863200000")
    assert (empty_hour[b"dwell_median_s"], empty_hour[b"capture_rate"]) == (b"", b"")
    assert redis_client.zrange("sp:footfall:store:{S1}:hours", 0, -1, withscores=True) == [
        (b"1763863200000", 1763863200000.0), (b"1763866800000", 1763866800000.0)
    ]


def test_ttls(redis_client):
    FootfallStore(redis_client).write(BATCH)
    for key in ("sp:footfall:store:{S1}:live", "sp:footfall:zone:{S1-floor}:minutes"):
        assert 48 * 3600 - 5 <= redis_client.ttl(key) <= 48 * 3600
    for key in ("sp:footfall:store:{S1}:hour:1763866800000", "sp:footfall:store:{S1}:hours"):
        assert 35 * 86400 - 5 <= redis_client.ttl(key) <= 35 * 86400


def test_replaying_a_batch_changes_nothing(redis_client):
    store = FootfallStore(redis_client)
    store.write(BATCH)
    before = dump_all(redis_client)
    store.write(BATCH)
    assert dump_all(redis_client) == before
    store.write(list(reversed(BATCH)))
    assert dump_all(redis_client) == before
    store.write([M1, H0])  # a replay of part of it, after the newer minute
    assert dump_all(redis_client) == before


def test_an_older_minute_never_overwrites_the_live_view(redis_client):
    store = FootfallStore(redis_client)
    store.write([M2])
    store.write([M1])
    assert redis_client.hget("sp:footfall:store:{S1}:live", "minute_ts") == b"1763870100000"
    assert redis_client.hget("sp:footfall:store:{S1}:live", "devices") == b"10"
    assert redis_client.zcard("sp:footfall:store:{S1}:minutes") == 2


def test_a_rewritten_minute_replaces_its_live_view_and_its_series_member(redis_client):
    store = FootfallStore(redis_client)
    store.write([M1, M2])
    corrected = FootfallMinute(scope="store", scope_id="S1", mall_id="M1", minute_ts=T + MINUTE,
                               devices=11, devices_15m=31, devices_1h=81)
    store.write([corrected])
    assert redis_client.hget("sp:footfall:store:{S1}:live", "devices") == b"11"
    assert store.minutes("store", "S1", 0) == [M1, corrected]


def test_the_minute_series_keeps_the_48_hours_ending_with_its_newest_minute(redis_client):
    store = FootfallStore(redis_client)
    late = FootfallMinute(scope="store", scope_id="S1", mall_id="M1", minute_ts=T + 2 * DAY,
                          devices=1, devices_15m=1, devices_1h=1)
    store.write([M1, M2])
    store.write([late])  # T is exactly 48 h older: gone; T + 1 min stays
    scores = [s for _, s in redis_client.zrange("sp:footfall:store:{S1}:minutes", 0, -1,
                                                withscores=True)]
    assert scores == [T + MINUTE, T + 2 * DAY]
    before = dump_all(redis_client)
    store.write([M1])  # replaying a minute older than the window brings nothing back
    assert dump_all(redis_client) == before


def test_readers_return_exactly_what_was_written(redis_client):
    store = FootfallStore(redis_client)
    third = StoreHour(mall_id="M1", store_id="S1", hour_ts=H + HOUR, visitors=3,
                      visitors_stable=3, new_visitors=0, returning_visitors=3, passers_by=9,
                      dwell_median_s=100.0, dwell_buckets=(3, 0, 0, 0, 0), sales=1,
                      sales_amount=1, capture_rate=1 / 3, conversion=1 / 3)
    store.write([*BATCH, third])
    assert store.live("store", "S1") == M2
    assert store.live("zone", "S1-floor") == Z1
    assert store.live("store", "S404") is None
    assert store.minutes("store", "S1", T) == [M1, M2]
    assert store.minutes("store", "S1", T + 1) == [M2]
    assert store.minutes("mall", "M1", 0) == []
    assert store.hours("S1", H - HOUR, H + 2 * HOUR) == [H0, H1, third]
    assert store.hours("S1", H - HOUR, H + HOUR) == [H0, H1]  # end is exclusive
    assert store.hours("S1", H, H) == []
    assert store.hours("S404", 0, H) == []
    assert store.hours("S1", H + HOUR, H + 2 * HOUR)[0].capture_rate == 1 / 3  # exact floats


def test_a_batch_is_checked_before_anything_is_written(redis_client):
    with pytest.raises(TypeError, match="dict"):
        FootfallStore(redis_client).write([M1, {"not": "a record"}])  # type: ignore[list-item]
    assert redis_client.keys("*") == []


def test_ten_thousand_records_go_in_one_round_trip(redis_server, redis_client):
    client = counting_client(redis_server)
    store = FootfallStore(client)
    store.write([])  # nothing to do: no request at all
    assert CountingConnection.sent == 0
    store.write([M1])  # the script is loaded (NOSCRIPT is handled; see the next test)
    redis_client.flushall()
    scopes, minutes = 1000, 10
    batch = [
        FootfallMinute(scope="zone", scope_id=f"Z{z:04d}", mall_id="M1", minute_ts=T + i * MINUTE,
                       devices=z + i, devices_15m=z, devices_1h=z)
        for z in range(scopes) for i in range(minutes)
    ]  # fmt: skip
    CountingConnection.sent = 0
    started = time.perf_counter()
    store.write(batch)
    elapsed = time.perf_counter() - started
    assert CountingConnection.sent == 1
    print(f"\n10k FootfallMinute over {scopes} scopes: one round trip, {elapsed * 1000:.0f} ms")
    assert len(redis_client.keys("sp:footfall:zone:*:minutes")) == scopes
    assert redis_client.zcard("sp:footfall:zone:{Z0999}:minutes") == minutes
    assert redis_client.hget("sp:footfall:zone:{Z0999}:live", "devices") == b"1008"


def test_a_server_without_the_script_gets_it_loaded_and_the_batch_rewritten(
    redis_server, redis_client
):
    client = counting_client(redis_server)
    store = FootfallStore(client)
    redis_client.script_flush()
    CountingConnection.sent = 0
    store.write(BATCH)
    assert CountingConnection.sent == 3  # pipeline (NOSCRIPT), SCRIPT LOAD, pipeline again
    assert store.live("store", "S1") == M2
    assert store.minutes("store", "S1", 0) == [M1, M2]
    assert store.hours("S1", 0, H + HOUR) == [H0, H1]


def test_numpy_numbers_are_written_as_the_plain_numbers_they_hold(redis_client):
    import numpy as np
    minute = FootfallMinute(scope="store", scope_id="S1", mall_id="M1", minute_ts=np.int64(T),
                            devices=np.int64(12), devices_15m=30, devices_1h=80,
                            visitors_inside=4, sales=2, sales_amount=25600)
    hour = StoreHour(mall_id="M1", store_id="S1", hour_ts=H, visitors=np.int64(5),
                     visitors_stable=3, new_visitors=4, returning_visitors=1, passers_by=40,
                     dwell_median_s=np.float64(412.5), dwell_buckets=(1, 2, 1, 1, 0), sales=2,
                     sales_amount=25600, capture_rate=np.float64(0.125), conversion=0.4)
    FootfallStore(redis_client).write([minute, hour])
    assert redis_client.zrange("sp:footfall:store:{S1}:minutes", 0, -1) == [M1_JSON]
    assert redis_client.hget("sp:footfall:store:{S1}:live", "devices") == b"12"
    stored = redis_client.hgetall("sp:footfall:store:{S1}:hour:1763866800000")
    assert (stored[b"visitors"], stored[b"dwell_median_s"], stored[b"capture_rate"]) == (
        b"5", b"412.5", b"0.125"
    )
