"""CatalogWatcher counts its failed checks: ``storepulse_catalog_check_failures_total``."""

from __future__ import annotations

from prometheus_client import REGISTRY

from connectors.catalog import Catalog
from state.catalog import CatalogStore, CatalogWatcher
from state.redis import connect

YAML = """
malls:
  - {mall_id: M1, name: Joy City, tz: Asia/Shanghai, lat: 31.2, lon: 121.4}
stores:
  - {store_id: S1, merchant_id: X, mall_id: M1, name: Beans, category: coffee,
     tz: Asia/Shanghai, lat: 31.2, lon: 121.4}
sensors:
  - {sensor_id: AP-1, mall_id: M1, store_id: S1, zone: S1-floor, lat: 31.2, lon: 121.4}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def failures(reason: str) -> float:
    return REGISTRY.get_sample_value("storepulse_catalog_check_failures_total", {"reason": reason}) or 0.0


def test_each_failed_check_is_counted_by_reason_and_successful_ones_are_not(make_redis_server):
    server = make_redis_server()
    CatalogStore(connect(server.url)).save(Catalog.from_yaml(YAML))
    clock = Clock()
    watcher = CatalogWatcher(connect(server.url, timeout_s=0.5, retries=0), 1.0, clock=clock)
    unreachable, invalid = failures("unreachable"), failures("invalid")

    for _ in range(3):  # three good checks
        watcher.current()
        clock.now += 1.0
    assert (failures("unreachable"), failures("invalid")) == (unreachable, invalid)

    server.stop()
    for _ in range(4):  # four due checks while Redis is down, plus calls between checks
        watcher.current()
        watcher.current()  # not due: no check, nothing counted
        clock.now += 1.0
    assert failures("unreachable") - unreachable == 4

    server.start()  # same port, empty; a broken catalog appears
    connect(server.url).mset({"sp:{catalog}:json": b"[]", "sp:{catalog}:version": b"broken"})
    watcher.current()
    assert failures("invalid") - invalid == 1
    assert failures("unreachable") - unreachable == 4
