"""state.catalog against a real redis-server: the store, and the watcher's hot-path contract."""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING

import pytest
import redis
from prometheus_client import REGISTRY

from connectors.catalog import Catalog, Mall, Store
from state.catalog import CatalogStore, CatalogWatcher
from state.redis import connect
from storepulse.errors import BackendUnavailable, CatalogError

if TYPE_CHECKING:
    from tests.state.conftest import RedisAttempts

YAML_V1 = """
malls: [{mall_id: M1, name: Joy City, tz: Asia/Shanghai, lat: 31.2, lon: 121.4}]
stores:
  - {store_id: S1, merchant_id: X, mall_id: M1, name: Beans, category: coffee,
     tz: Asia/Shanghai, lat: 31.2, lon: 121.4}
sensors:
  - {sensor_id: AP-1, mall_id: M1, store_id: S1, zone: S1-floor, lat: 31.2, lon: 121.4}
"""
# the same content written differently: same version
YAML_V1_REFORMATTED = """
malls:
  - mall_id: M1
    name: Joy City
    tz: Asia/Shanghai
    lat: 31.2
    lon: 121.4
stores:
  - {store_id: S1, merchant_id: X, mall_id: M1, name: Beans, category: coffee,
     tz: Asia/Shanghai, lat: 31.2, lon: 121.4, hours: "10:00-22:00"}
sensors:
  - {sensor_id: AP-1, mall_id: M1, store_id: S1, zone: S1-floor, lat: 31.2, lon: 121.4,
     visit_rssi: -70}
"""
YAML_V2 = YAML_V1.replace("name: Beans", "name: Beans & Leaves")


def expected_version(catalog: Catalog) -> str:
    """The content hash worked out from the JSON written, not by the code under test."""
    return hashlib.sha256(catalog.to_json()).hexdigest()[:16]


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Server-side calls per command since the last CONFIG RESETSTAT, minus our probes."""
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if not name.startswith(("cmdstat_info", "cmdstat_config"))
    }


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- CatalogStore ---------------------------------------------------------------------


def test_save_writes_json_and_version_in_one_multi_and_load_round_trips(redis_client):
    catalog = Catalog.from_yaml(YAML_V1)
    redis_client.config_resetstat()
    version = CatalogStore(connect_url(redis_client)).save(catalog)
    calls = command_calls(redis_client)
    assert version == expected_version(catalog)
    assert (calls.get("multi"), calls.get("exec"), calls.get("set")) == (1, 1, 2)
    assert redis_client.get("sp:{catalog}:version") == version.encode()
    assert redis_client.get("sp:{catalog}:json") == catalog.to_json()
    store = CatalogStore(redis_client)
    assert store.version() == version
    assert store.load() == catalog
    assert store.load().store("S1").name == "Beans"


def test_save_is_idempotent_and_the_version_moves_only_with_the_content(redis_client):
    store = CatalogStore(redis_client)
    v1 = store.save(Catalog.from_yaml(YAML_V1))
    dumped = {k: redis_client.dump(k) for k in redis_client.keys("*")}
    assert store.save(Catalog.from_yaml(YAML_V1)) == v1
    assert store.save(Catalog.from_yaml(YAML_V1_REFORMATTED)) == v1
    assert {k: redis_client.dump(k) for k in redis_client.keys("*")} == dumped
    v2 = store.save(Catalog.from_yaml(YAML_V2))
    assert v2 != v1 and v2 == expected_version(Catalog.from_yaml(YAML_V2))
    assert store.version() == v2
    assert store.load().store("S1").name == "Beans & Leaves"


def test_empty_redis_has_no_catalog(redis_client):
    store = CatalogStore(redis_client)
    assert store.load() is None and store.version() is None


def test_save_refuses_a_catalog_with_a_broken_reference(redis_client):
    broken = Catalog(
        malls=[Mall(mall_id="M1", name="m", tz="UTC", lat=0, lon=0)],
        stores=[Store(store_id="S1", merchant_id="X", name="s", category="c", tz="UTC",
                      lat=0, lon=0, mall_id="M404")],
    )
    with pytest.raises(CatalogError, match="M404"):
        CatalogStore(redis_client).save(broken)
    assert redis_client.keys("*") == []


def test_load_of_garbage_in_redis_is_a_catalog_error(redis_client):
    redis_client.mset({"sp:{catalog}:json": b"{not json", "sp:{catalog}:version": b"x"})
    with pytest.raises(CatalogError, match="storepulse catalog load"):
        CatalogStore(redis_client).load()


def test_the_store_currency_round_trips_through_redis_and_an_older_catalog_loads_as_cny(redis_client):
    store = CatalogStore(redis_client)
    hkd = Catalog.from_yaml(YAML_V1.replace("lon: 121.4}\nsensors", "lon: 121.4, currency: HKD}\nsensors"))
    assert hkd.store("S1").currency == "HKD"
    store.save(hkd)
    assert b'"currency":"HKD"' in redis_client.get("sp:{catalog}:json")
    assert store.load() == hkd
    # JSON written before stores had a currency: the default, CNY, as the YAML default
    old_json = Catalog.from_yaml(YAML_V1).to_json().replace(b',"currency":"CNY"', b"")
    redis_client.mset({"sp:{catalog}:json": old_json, "sp:{catalog}:version": b"old"})
    assert b"currency" not in old_json and store.load().store("S1").currency == "CNY"


# ---- CatalogWatcher -------------------------------------------------------------------


def test_watcher_before_any_load_says_how_to_load_one(redis_client):
    watcher = CatalogWatcher(redis_client, 2.0, clock=FakeClock())
    with pytest.raises(CatalogError, match=r"run `storepulse catalog load FILE\.yaml`"):
        watcher.current()


def test_watcher_checks_once_per_refresh_and_sees_a_new_version_within_it(redis_client):
    clock = FakeClock()
    store = CatalogStore(redis_client)
    v1 = store.save(Catalog.from_yaml(YAML_V1))
    watcher = CatalogWatcher(connect_url(redis_client), 2.0, clock=clock)
    before = time.time()
    assert watcher.current().store("S1").name == "Beans"
    assert watcher.version == v1
    loaded_at = REGISTRY.get_sample_value("storepulse_catalog_loaded_timestamp_seconds")
    assert before <= loaded_at <= time.time()

    redis_client.config_resetstat()
    for step in range(1, 200):  # 200 batches inside the first refresh interval
        clock.now = 1000.0 + step * 0.01
        assert watcher.current().store("S1").name == "Beans"
    assert command_calls(redis_client) == {}  # not one Redis command

    clock.now = 1002.0  # due: one GET, nothing changed, no reload
    watcher.current()
    assert command_calls(redis_client) == {"get": 1}

    v2 = store.save(Catalog.from_yaml(YAML_V2))  # at 1002.0 + a moment
    redis_client.config_resetstat()
    clock.now = 1003.99
    assert watcher.current().store("S1").name == "Beans"  # not due yet
    assert command_calls(redis_client) == {}
    clock.now = 1004.0  # one refresh interval after the last check: the new version
    assert watcher.current().store("S1").name == "Beans & Leaves"
    assert watcher.version == v2
    assert command_calls(redis_client) == {"get": 1, "mget": 1}


def test_watcher_keeps_serving_through_an_outage_and_warns_once_per_outage(
    make_redis_server, caplog, redis_attempts: RedisAttempts
):
    server = make_redis_server()
    catalog = Catalog.from_yaml(YAML_V1)
    CatalogStore(connect(server.url)).save(catalog)
    clock = FakeClock()
    watcher = CatalogWatcher(connect(server.url, timeout_s=0.5, retries=0), 1.0, clock=clock)
    assert watcher.current() == catalog
    caplog.set_level(logging.INFO, logger="state.catalog")

    def checks(n: int, *, down: bool) -> None:
        for _ in range(n):
            clock.now += 1.0
            redis_attempts.take()
            assert watcher.current() == catalog
            # a refused connection fails fast: one attempt (none on a live connection), no backoff
            connects, sleeps = redis_attempts.take()
            assert (connects == 1 if down else connects <= 1) and sleeps == [], (connects, sleeps)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    server.stop()
    checks(5, down=True)
    assert len(warnings()) == 1 and "still serving catalog" in warnings()[0]
    server.start()  # same port, empty (no persistence): the catalog key is gone
    checks(3, down=False)
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    assert len(warnings()) == 1
    server.stop()
    checks(4, down=True)
    assert len(warnings()) == 2


def test_watcher_with_a_factory_reports_an_unreachable_redis_before_its_first_catalog(
    make_redis_server,
):
    server = make_redis_server()
    url = server.url
    server.stop()
    made: list[int] = []

    def factory():
        made.append(1)
        return connect(url, timeout_s=0.5, retries=0)

    clock = FakeClock()
    watcher = CatalogWatcher(factory, 1.0, clock=clock)
    with pytest.raises(BackendUnavailable, match="cannot read the catalog"):
        watcher.current()
    with pytest.raises(BackendUnavailable):  # remembered until the next check: no retry
        watcher.current()
    assert len(made) == 1
    server.start()
    CatalogStore(connect(url)).save(Catalog.from_yaml(YAML_V1))
    clock.now += 1.0
    assert watcher.current().store("S1") is not None
    assert len(made) == 2


def test_watcher_keeps_the_good_catalog_when_a_broken_one_appears(redis_client, caplog):
    store = CatalogStore(redis_client)
    v1 = store.save(Catalog.from_yaml(YAML_V1))
    clock = FakeClock()
    watcher = CatalogWatcher(redis_client, 1.0, clock=clock)
    watcher.current()
    redis_client.mset({"sp:{catalog}:json": b"[]", "sp:{catalog}:version": b"broken"})
    for _ in range(3):
        clock.now += 1.0
        assert watcher.current().store("S1").name == "Beans"
    assert watcher.version == v1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "broken" in errors[0].getMessage()


def connect_url(client: redis.Redis) -> redis.Redis:
    """A separate client (through ``connect``) to the server ``client`` talks to."""
    kwargs = client.connection_pool.connection_kwargs
    return connect(f"redis://{kwargs['host']}:{kwargs['port']}/0")  # type: ignore[return-value]
