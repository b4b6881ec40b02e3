"""The Redis footfall sink of flows/redis_sinks.py: waits out a Redis outage, loses nothing.

The unit tests run the retry loop by counts (an injected sleep that records its waits and
an injected clock), the last one writes through a real redis-server that is stopped and
started again on the same port while a batch waits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY

from connectors.schemas import FootfallMinute, StoreHour
from flows.redis_sinks import RedisFootfallSink, _RedisPartition
from state.footfall import FootfallStore
from state.redis import Backoff
from storepulse.health import Readiness
from tests.fixtures.redis import RedisServer

T = 1_763_870_400_000  # 2025-11-23 04:00 UTC, epoch ms
MINUTE = FootfallMinute(scope="store", scope_id="S1", mall_id="M1", minute_ts=T, devices=12,
                        devices_15m=30, devices_1h=80, visitors_inside=4)
ZONE = FootfallMinute(scope="zone", scope_id="S1-floor", mall_id="M1", minute_ts=T, devices=7,
                      devices_15m=9, devices_1h=20)
BATCH = [MINUTE, ZONE]


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


class FlakyStore:
    """A FootfallStore stand-in: raises each of ``errors`` in turn, then records writes."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = list(errors)
        self.written: list[list[FootfallMinute | StoreHour]] = []
        self.calls = 0

    def write(self, records: list[FootfallMinute | StoreHour]) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.written.append(list(records))


class Waits:
    """The injected sleep: records each wait and what readiness said while waiting."""

    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness
        self.delays: list[float] = []
        self.ready_while_waiting: list[bool] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.ready_while_waiting.append(self.readiness.report().ready)


def partition(store: FlakyStore, readiness: Readiness, sleep: Callable[[float], None]) -> _RedisPartition:
    readiness.up("dataflow")
    clock = iter(float(t) for t in range(10_000)).__next__  # one second per call
    return _RedisPartition(store, "redis[0]", readiness=readiness, backoff=Backoff(base_s=0.2, cap_s=5.0),
                           sleep=sleep, clock=clock)


def test_an_outage_of_any_length_is_waited_out_with_capped_backoff_and_the_batch_written_whole(caplog):
    outage = [redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")] * 500
    outage[10] = redis.TimeoutError("Timeout reading from socket")
    outage[20] = redis.BusyLoadingError("Redis is loading the dataset in memory")
    store = FlakyStore(outage)
    readiness = Readiness()
    waits = Waits(readiness)
    sink = partition(store, readiness, waits)
    failures, retries = sample("storepulse_redis_write_failures_total"), sample("storepulse_redis_write_retries_total")

    with caplog.at_level(logging.INFO, logger="flows.redis_sinks"):
        sink.write_batch([*BATCH, "not a footfall record"])  # others are not for Redis

    # 500 failures, then the 501st attempt writes the batch, once and whole
    assert store.calls == 501 and store.written == [BATCH]
    # 0.2 doubling: 0.2 0.4 0.8 1.6 3.2, then capped at 5 s for the remaining 495 waits
    assert waits.delays == [0.2, 0.4, 0.8, 1.6, 3.2] + [5.0] * 495
    assert not any(waits.ready_while_waiting)  # not ready during the outage
    assert readiness.report().ready and readiness.is_up("redis[0]")
    assert sample("storepulse_redis_write_failures_total") - failures == 500
    assert sample("storepulse_redis_write_retries_total") - retries == 500
    assert sample("storepulse_redis_up") == 1
    # one line when the outage starts, one when it ends; none per retry
    lines = [r.getMessage() for r in caplog.records if r.name == "flows.redis_sinks"]
    assert len(lines) == 2, lines
    assert "Connection refused" in lines[0] and "retrying" in lines[0]
    assert "500 failed attempts" in lines[1] and "2 records" in lines[1]


def test_readiness_and_redis_up_say_so_while_writes_fail():
    readiness = Readiness()
    seen: list[tuple[bool, float, str]] = []

    def sleep(_: float) -> None:
        report = readiness.report()
        seen.append((report.ready, sample("storepulse_redis_up"), report.failing().get("redis[0]", "")))

    sink = partition(FlakyStore([redis.ConnectionError("Connection reset by peer")] * 2), readiness, sleep)
    assert readiness.report().ready
    sink.write_batch(BATCH)
    assert [(ready, up) for ready, up, _ in seen] == [(False, 0.0), (False, 0.0)]
    assert "ConnectionError: Connection reset by peer" in seen[0][2]
    assert readiness.report().ready and sample("storepulse_redis_up") == 1


@pytest.mark.parametrize(
    "error",
    [
        redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        redis.ResponseError("ERR user_script:3: Script attempted to access nonexistent global variable"),
        redis.exceptions.OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'."),
        redis.AuthenticationError("invalid username-password pair or user is disabled."),
    ],
    ids=["wrongtype", "script", "oom", "auth"],
)
def test_an_error_retrying_cannot_fix_stops_at_once(error: Exception):
    readiness = Readiness()
    waits = Waits(readiness)
    store = FlakyStore([error])
    sink = partition(store, readiness, waits)
    failures = sample("storepulse_redis_write_failures_total")
    with pytest.raises(type(error)):
        sink.write_batch(BATCH)
    assert store.calls == 1 and waits.delays == []
    assert not readiness.report().ready
    assert "not retryable" in readiness.report().failing()["redis[0]"]
    assert sample("storepulse_redis_write_failures_total") - failures == 1


def test_a_batch_without_redis_records_writes_nothing():
    store = FlakyStore([redis.ConnectionError("down")])
    sink = partition(store, Readiness(), Waits(Readiness()))
    sink.write_batch([])
    assert store.calls == 0


def wait_until(condition: Callable[[], bool], what: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(0.02)


def write_through_an_outage(part: Any, server: RedisServer, item: Any, readiness: Readiness, condition: str) -> None:
    """Stop ``server``, write ``item`` through the sink partition ``part`` from a thread, see
    the failed writes counted (more than the 5 after which the sink used to give up and stop
    the dataflow), ``condition`` not ready and the writer still waiting; then start the
    server again on its port (empty: no persistence in the fixture) and see the write end."""
    server.stop()
    failures = sample("storepulse_redis_write_failures_total")
    errors: list[BaseException] = []

    def write() -> None:
        try:
            part.write_batch([item])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    wait_until(lambda: sample("storepulse_redis_write_failures_total") - failures >= 8, "failed writes to be counted")
    assert not readiness.report().ready and condition in readiness.report().failing()
    assert sample("storepulse_redis_up") == 0
    assert writer.is_alive()  # still waiting, not given up
    server.start()
    writer.join(30)
    assert not writer.is_alive() and errors == []
    assert readiness.report().ready and sample("storepulse_redis_up") == 1


def test_a_real_redis_stopped_mid_run_holds_the_batch_until_it_is_back(make_redis_server):
    server: RedisServer = make_redis_server()
    readiness = Readiness()
    sink = RedisFootfallSink(server.url, backoff=Backoff(base_s=0.01, cap_s=0.1), readiness=readiness)
    part = sink.build("write_footfall_redis", 0, 1)
    assert readiness.report().ready  # built: dataflow running, Redis answered PING
    part.write_batch([MINUTE])  # a first batch while Redis is up
    write_through_an_outage(part, server, ZONE, readiness, "redis[0]")
    reader = FootfallStore(redis.Redis.from_url(server.url))
    assert reader.live("zone", "S1-floor") == ZONE  # the held batch was written
    part.close()


def test_sales_amounts_are_counted_in_their_store_currency() -> None:
    # S1 takes CNY, S8 HKD (the catalog says so): no series mixes the two.
    from prometheus_client import REGISTRY

    from connectors.catalog import Catalog
    from connectors.schemas import FootfallMinute as Minute
    from flows.outputs import MetricsSink

    catalog = Catalog.from_yaml(
        "{malls: [{mall_id: M1, name: J, tz: UTC, lat: 0, lon: 0}], stores: ["
        "{store_id: S1, merchant_id: X, mall_id: M1, name: A, category: c, tz: UTC, lat: 0, lon: 0}, "
        "{store_id: S8, merchant_id: Y, mall_id: M1, name: B, category: c, tz: UTC, lat: 0, lon: 0, currency: HKD}]}"
    )

    def amount(store: str, currency: str) -> float:
        labels = {"store": store, "currency": currency}
        return REGISTRY.get_sample_value("storepulse_sales_amount_minor_units_total", labels) or 0.0

    before = {(s, c): amount(s, c) for s in ("S1", "S8") for c in ("CNY", "HKD")}
    part = MetricsSink(lambda: catalog).build("write", 0, 1)
    part.write_batch([
        Minute(scope="store", scope_id="S1", mall_id="M1", minute_ts=0, devices=1, devices_15m=1, devices_1h=1,
               visitors_inside=0, sales=1, sales_amount=1200),
        Minute(scope="store", scope_id="S8", mall_id="M1", minute_ts=0, devices=1, devices_15m=1, devices_1h=1,
               visitors_inside=0, sales=2, sales_amount=5000),
    ])
    after = {(s, c): amount(s, c) - before[(s, c)] for s in ("S1", "S8") for c in ("CNY", "HKD")}
    assert after == {("S1", "CNY"): 1200, ("S1", "HKD"): 0, ("S8", "CNY"): 0, ("S8", "HKD"): 5000}


def test_sales_watch_records_set_the_store_gauges_and_count_the_notices() -> None:
    from connectors.schemas import SalesBucket, StoreHealth
    from flows.alert_notices import AlertNotice
    from flows.drop_detector import AlertFingerprint
    from flows.outputs import MetricsSink

    def gauges(store: str) -> tuple[float | None, ...]:
        names = ("sales_5m", "sales_expected_5m", "drop_score", "alert_firing", "health_score")
        return tuple(REGISTRY.get_sample_value(f"storepulse_store_{n}", {"store": store}) for n in names)

    def notices(status: str, severity: str, cause: str) -> float:
        labels = {"status": status, "severity": severity, "cause": cause}
        return REGISTRY.get_sample_value("storepulse_alert_notices_total", labels) or 0.0

    def bucket(ts: int, net: int, expected: float | None, score: float, firing: bool) -> SalesBucket:
        return SalesBucket(store_id="W1", bucket_ts=ts, net_sales=net, expected=expected, drop_score=score,
                           firing=firing)  # fmt: skip

    five = 300_000
    fired = AlertNotice(AlertFingerprint("W1", T), "M1", "firing", T, severity="critical", cause="payment:wechat")
    resolved = AlertNotice(AlertFingerprint("W1", T), "M1", "resolved", T, ends_at_ms=T + 4 * five,
                           severity="critical", cause="payment:wechat")  # fmt: skip
    counted = {s: notices(s, "critical", "payment:wechat") for s in ("firing", "resolved")}
    part = MetricsSink().build("write", 0, 1)

    part.write_batch([bucket(T - five, 3, None, 0.0, False)])  # cold start: no expected series
    assert gauges("W1") == (3.0, None, 0.0, 0.0, None)
    part.write_batch([bucket(T, 12, 11.5, 0.0, False), bucket(T + five, 2, 12.25, 0.4, False)])
    assert gauges("W1") == (2.0, 12.25, 0.4, 0.0, None)  # the newest bucket of the batch
    part.write_batch([fired])
    assert gauges("W1")[3] == 1.0
    part.write_batch([bucket(T + 2 * five, 0, 12.0, 0.93, True)])
    assert gauges("W1") == (0.0, 12.0, 0.93, 1.0, None)
    part.write_batch([resolved])
    assert gauges("W1")[3] == 0.0
    part.write_batch([fired, bucket(T + 3 * five, 1, None, 0.0, False)])  # the bucket says not firing
    assert gauges("W1") == (1.0, None, 0.0, 0.0, None)  # closed: the expected series is gone
    # two firing notices, one resolved; the health record is the Redis sink's, not this one's
    health = StoreHealth(store_id="W1", merchant_id="M1", as_of_ts=T, score=40.0, sales_index=0.8,
                         footfall_index=None, conversion_index=None, repurchase_rate=None)  # fmt: skip
    part.write_batch([health])
    assert gauges("W1")[4] is None
    assert {s: notices(s, "critical", "payment:wechat") - counted[s] for s in counted} == {
        "firing": 2,
        "resolved": 1,
    }


def test_people_counts_set_the_people_gauges_of_each_scope_newest_window() -> None:
    from connectors.schemas import PeopleCount
    from flows.outputs import MetricsSink

    def gauges(scope: str, scope_id: str) -> tuple[float | None, ...]:
        labels = {"scope": scope, "id": scope_id}
        names = ("storepulse_people", "storepulse_people_macs", "storepulse_people_devices")
        return tuple(REGISTRY.get_sample_value(name, labels) for name in names)

    five = 300_000
    # store P1 has two sensors, in zones P1-a and P1-b; the mall is PM (no other test's)
    a = PeopleCount(sensor_id="PA", zone="P1-a", store_id="P1", mall_id="PM", window_ts=T, people=1.5, macs=5,
                    devices=3)  # fmt: skip
    b = PeopleCount(sensor_id="PB", zone="P1-b", store_id="P1", mall_id="PM", window_ts=T, people=2.25, macs=7,
                    devices=4)  # fmt: skip
    part = MetricsSink().build("write", 0, 1)
    part.write_batch([a, MINUTE])
    assert gauges("store", "P1") == (1.5, 5, 3)
    part.write_batch([b])  # the same window's other sensor, a batch later: 1.5 + 2.25, 5 + 7, 3 + 4
    assert gauges("store", "P1") == (3.75, 12, 7)
    assert gauges("sensor", "PB") == (2.25, 7, 4) and gauges("zone", "P1-a") == (1.5, 5, 3)
    part.write_batch([PeopleCount(sensor_id="PA", zone="P1-a", store_id="P1", mall_id="PM", window_ts=T - five,
                                  people=9.0, macs=9, devices=9)])  # fmt: skip
    assert gauges("store", "P1") == (3.75, 12, 7)  # an older window moves nothing
    # the next window: PB heard nothing, so its sensor and zone show 0 and the store PA's alone
    part.write_batch([PeopleCount(sensor_id="PA", zone="P1-a", store_id="P1", mall_id="PM", window_ts=T + five,
                                  people=0.5, macs=2, devices=1)])  # fmt: skip
    assert gauges("store", "P1") == (0.5, 2, 1)
    assert gauges("sensor", "PB") == (0, 0, 0) and gauges("zone", "P1-b") == (0, 0, 0)
