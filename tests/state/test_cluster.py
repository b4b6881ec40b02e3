"""The state stores on a Redis Cluster (one real node owning all 16384 slots)."""

from __future__ import annotations

import redis
from redis.cluster import RedisCluster

from connectors.catalog import Catalog
from connectors.schemas import FootfallMinute, StoreHour
from state.catalog import CatalogStore, CatalogWatcher
from state.footfall import FootfallStore
from state.redis import connect

CATALOG = Catalog.from_yaml("""
malls: [{mall_id: M1, name: Joy City, tz: Asia/Shanghai, lat: 31.2, lon: 121.4}]
stores:
  - {store_id: S1, merchant_id: X, mall_id: M1, name: Beans, category: coffee,
     tz: Asia/Shanghai, lat: 31.2, lon: 121.4}
""")


def test_connect_gives_a_cluster_client_and_the_stores_work_on_it(redis_cluster_server):
    client = connect(redis_cluster_server.url)
    assert isinstance(client, RedisCluster)
    client.flushall()

    version = CatalogStore(client).save(CATALOG)
    assert CatalogStore(client).load() == CATALOG
    assert CatalogWatcher(client, 2.0).current() == CATALOG
    assert client.keyslot("sp:{catalog}:json") == client.keyslot("sp:{catalog}:version")
    assert client.get("sp:{catalog}:version") == version.encode()

    minute = FootfallMinute(scope="store", scope_id="S1", mall_id="M1", minute_ts=60_000,
                            devices=2, devices_15m=3, devices_1h=4)
    other = FootfallMinute(scope="zone", scope_id="Z9", mall_id="M1", minute_ts=60_000,
                           devices=1, devices_15m=1, devices_1h=1)
    hour = StoreHour(mall_id="M1", store_id="S1", hour_ts=0, visitors=1, visitors_stable=1,
                     new_visitors=1, returning_visitors=0, passers_by=2, dwell_median_s=60.0,
                     dwell_buckets=(1, 0, 0, 0, 0), sales=0, sales_amount=0, capture_rate=0.5,
                     conversion=0.0)
    store = FootfallStore(client)
    client.script_flush()  # the NOSCRIPT path through a cluster pipeline
    store.write([minute, other, hour])
    store.write([minute, other, hour])
    assert store.live("store", "S1") == minute
    assert store.minutes("zone", "Z9", 0) == [other]
    assert store.hours("S1", 0, 3_600_000) == [hour]
    slots = {client.keyslot(k) for k in client.keys("sp:footfall:store:*")}
    assert len(slots) == 1  # every key of store S1 in one slot (the {S1} hash tag)
    client.close()


def test_a_plain_client_on_a_cluster_node_is_not_what_connect_returns(redis_cluster_server):
    url = redis_cluster_server.url.replace("redis+cluster://", "redis://")
    assert type(connect(url)) is redis.Redis
