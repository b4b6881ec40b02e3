"""The sales watch: buckets from closed minutes, alerts with their context, store health.

Expected values are worked by hand from the detector's stated method (a Poisson CUSUM of
"half the expected rate" against "the expected rate", 11 nats to alert).
"""

from __future__ import annotations

import json
import math
import pickle

from connectors.catalog import Catalog, Store
from connectors.schemas import SalesBucket, StoreHealth, StoreMembers
from flows.alert_notices import AlertNotice
from flows.sales_watch import StoreWatch
from flows.testing import run_reads
from storepulse.settings import Settings

MIN = 60_000
BUCKET = 5 * MIN
DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC, a Thursday
STORE = Store(
    store_id="S1", merchant_id="M1", name="Beans", category="coffee", tz="UTC", lat=0.0, lon=0.0, hours="10:00-22:00"
)


def of(kind: type, items: list) -> list:
    return [i for i in items if isinstance(i, kind)]


def feed(watch: StoreWatch, start: int, buckets: int, per_bucket: dict[str, int], devices: int = 20) -> list:
    """One closed minute per bucket carrying the bucket's sales (the other minutes of a
    bucket add nothing), while open (10:00-22:00 UTC); closed time gets empty minutes."""
    out = []
    for k in range(buckets):
        ts = start + k * BUCKET
        open_now = 10 <= (ts % DAY) // 3_600_000 < 22
        sales = per_bucket if open_now else {}
        out += watch.minute(
            ts, sales=sum(sales.values()), refunds=0, payments=sales, devices=devices if open_now else 0
        )
    return out


NOON = T0 + 15 * DAY + 12 * 3_600_000  # day 16, 12:00: the feeds after warm_watch start here


def warm_watch() -> StoreWatch:
    """15 days and a morning of 4 sales a bucket while open, half by wechat, half by alipay."""
    watch = StoreWatch.for_store(STORE, {})
    out = feed(watch, T0, (NOON - T0) // BUCKET, {"wechat": 2, "alipay": 2})
    assert of(AlertNotice, out) == []  # a regular series never alerts
    return watch


def test_buckets_net_refunds_and_fill_gaps_with_zeros() -> None:
    watch = StoreWatch.for_store(STORE, {})
    out = watch.minute(T0 + 1 * MIN, sales=3, refunds=1, payments={"cash": 3}, devices=5)
    out += watch.minute(T0 + 4 * MIN, sales=1, refunds=0, payments={"card": 1}, devices=2)
    assert out == []  # the bucket 00:00-00:05 is still open
    out += watch.minute(T0 + 17 * MIN, sales=0, refunds=2, payments={}, devices=0)  # closes 00:00, 00:05, 00:10
    assert [(b.bucket_ts - T0, b.net_sales, b.expected) for b in of(SalesBucket, out)] == [
        (0, 3, None),  # 3 + 1 sales - 1 refund
        (BUCKET, 0, None),  # nothing heard: a zero bucket
        (2 * BUCKET, 0, None),
    ]
    out = watch.minute(T0 + 20 * MIN, sales=0, refunds=0, payments={}, devices=0)
    assert [(b.bucket_ts - T0, b.net_sales) for b in of(SalesBucket, out)] == [(3 * BUCKET, 0)]  # 2 refunds: not < 0


def test_a_silent_payment_method_fires_a_named_alert_and_recovery_resolves_it() -> None:
    watch = warm_watch()
    noon = NOON
    # At noon wechat stops: 2 sales a bucket where 4 are expected. Each bucket adds at
    # most 0.5 * 4 + 2 * ln(0.5) nats to the drop CUSUM (less as the level adapts to the
    # first, not yet suspect, buckets); it alerts at 11 nats.
    per_bucket = 0.5 * 4 + 2 * math.log(0.5)
    soonest = math.ceil(11 / per_bucket)  # 18 buckets: 90 minutes
    out = feed(watch, noon, 48, {"alipay": 2})
    firing = of(AlertNotice, out)
    assert [n.status for n in firing] == ["firing"]
    notice = firing[0]
    fired = (next(b for b in of(SalesBucket, out) if b.firing).bucket_ts - noon) // BUCKET + 1  # buckets seen
    assert soonest <= fired <= 2 * soonest
    assert notice.fingerprint.store_id == "S1" and notice.merchant_id == "M1"
    assert notice.cause == "payment:wechat" and notice.severity == "warning"
    assert notice.actual % 2 == 0 and notice.actual / notice.expected < 0.65
    assert notice.summary.startswith(f"Sales at store S1 are {notice.drop_pct:g}% below expected for ")
    assert "wechat payment outage" in notice.description
    # wechat is back: the alert resolves, with the context it fired with
    out = feed(watch, noon + 48 * BUCKET, 24, {"wechat": 2, "alipay": 2})
    resolved = of(AlertNotice, out)
    assert [n.status for n in resolved] == ["resolved"]
    assert (resolved[0].fingerprint, resolved[0].cause, resolved[0].actual) == (
        notice.fingerprint,
        notice.cause,
        notice.actual,
    )


def test_an_outage_is_critical_and_says_when_the_last_sale_was() -> None:
    watch = warm_watch()
    noon = NOON
    out = feed(watch, noon, 12, {})  # nothing sells: the 90% outage CUSUM, 0.9 * 4 nats a bucket, 12 to alert
    firing = of(AlertNotice, out)
    assert len(firing) == 1 and firing[0].severity == "critical" and firing[0].actual == 0
    fired_bucket = next(b for b in of(SalesBucket, out) if b.firing)
    assert (fired_bucket.bucket_ts - noon) // BUCKET == math.ceil(12 / 3.6) - 1
    assert firing[0].last_sale_ts == noon - BUCKET  # the last bucket before noon sold


def test_closed_hours_and_holidays_from_the_catalog_are_not_watched() -> None:
    watch = warm_watch()
    day16 = T0 + 15 * DAY
    watch.follow(STORE, {"2026-01-16": None})  # the catalog closes the store for the rest of day 16
    out = feed(watch, NOON, 36, {})
    assert of(AlertNotice, out) == []
    assert {b.expected for b in of(SalesBucket, out)} == {None}
    late = Store(**{**{f: getattr(STORE, f) for f in STORE.__struct_fields__}, "hours": "10:00-23:00"})
    watch.follow(late, {})
    assert watch.sales.expected(day16 + DAY + 22 * 3_600_000) is not None  # 22:00 is open now


def test_health_of_a_steady_store_and_its_repurchase_rate() -> None:
    watch = warm_watch()
    watch.members(StoreMembers(store_id="S1", as_of_ts=T0, members_active=10, members_repeat=5, repurchase_rate=0.5))
    out = feed(watch, NOON, 13, {"wechat": 2, "alipay": 2})
    health = of(StoreHealth, out)  # one as each hour closes: 12:00 (its first minute closes 11:55) and 13:00
    assert [h.as_of_ts for h in health] == [NOON, NOON + 3_600_000]
    h = health[-1]
    # Sales and footfall at their normal: each index ~1, conversion ~1: 100*(0.4*.5 + 0.2*.5 + 0.2*.5 + 0.2*.5)
    assert abs(h.sales_index - 1) < 0.02 and abs(h.footfall_index - 1) < 0.02
    assert abs(h.score - 50.0) < 1.0 and h.repurchase_rate == 0.5


def test_health_falls_when_a_store_sells_less_than_it_used_to() -> None:
    watch = warm_watch()
    out = feed(watch, NOON, 7 * 288, {"wechat": 1, "alipay": 1})  # a week at half the sales
    last = of(StoreHealth, out)[-1]
    # The alert fires and, after three days, the drop is the new normal, but the week's
    # sales against the seasonal normal (a three-week half-life) are well below 1.
    assert last.sales_index < 0.8 and last.score < 40


def test_a_watch_resumed_from_its_pickle_writes_what_the_uninterrupted_one_does() -> None:
    watch = warm_watch()
    noon = NOON
    resumed = pickle.loads(pickle.dumps(watch))
    assert feed(resumed, noon, 40, {"alipay": 2}) == feed(watch, noon, 40, {"alipay": 2})


# ---- through the engine ------------------------------------------------------------------

CATALOG = Catalog.from_yaml(
    """
stores:
  - {store_id: S1, merchant_id: M1, name: Beans, category: coffee, tz: UTC, lat: 0, lon: 0, hours: "00:00-00:00"}
sensors:
  - {sensor_id: AP-1, mall_id: null, store_id: S1, zone: S1-floor, lat: 0, lon: 0}
"""
)


def txn(ts: int, txn_id: str, kind: str = "sale", payment: str = "wechat") -> bytes:
    body = {"type": kind, "txn_id": txn_id, "ts": ts, "merchant_id": "M1", "store_id": "S1", "amount": 100,
            "currency": "CNY", "payment": payment}  # fmt: skip
    if kind == "refund":
        body["ref_txn_id"] = "T0"
    return json.dumps(body).encode()


def test_the_engine_watches_closed_minutes_net_of_refunds() -> None:
    from connectors.records import RawBatch, RawMessage

    values = [txn(T0 + 30_000, "T0"), txn(T0 + 90_000, "T1", payment="cash"), txn(T0 + 200_000, "T2", "refund")]
    values.append(txn(T0 + 14 * MIN, "T3"))  # moves event time past the first two buckets
    read = RawBatch(
        topic="pos.transactions", partition=0, messages=[RawMessage(i, b"S1", v) for i, v in enumerate(values)]
    )
    settings = Settings(mac_hash_key=b"0123456789abcdef", max_event_age_s=1e10, allowed_lateness_s=60)
    watched: list = []
    _, dead = run_reads(settings, CATALOG, [], [read], watched=watched)
    assert dead == []
    # 00:00-00:05: two sales, one refund; 00:05-00:10 empty; the end of input closes
    # every minute, and the bucket of 00:14 is the open one when the input ends.
    assert [(b.bucket_ts - T0, b.net_sales) for b in of(SalesBucket, watched)] == [(0, 1), (BUCKET, 0)]


def test_a_new_time_zone_from_the_catalog_moves_the_opening_hours() -> None:
    watch = warm_watch()
    assert watch.sales.expected(NOON + 11 * 3_600_000) is None  # 23:00 UTC: closed
    assert watch.sales.expected(NOON + DAY - 8 * 3_600_000) is None  # 04:00 UTC: closed
    shanghai = Store(**{**{f: getattr(STORE, f) for f in STORE.__struct_fields__}, "tz": "Asia/Shanghai"})
    watch.follow(shanghai, {})
    # 23:00 UTC is 07:00 in Shanghai (closed) and 04:00 UTC is 12:00 there (open)
    assert watch.sales.expected(NOON + 11 * 3_600_000) is None
    assert watch.sales.expected(NOON + DAY - 8 * 3_600_000) is not None
    assert watch.sales.expected(NOON + DAY - 8 * 3_600_000 - 5 * 3_600_000) is None  # 23:00 UTC before: 07:00 local
