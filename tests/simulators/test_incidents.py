"""Incidents do what the scenario says, measured on the stream against a run without them."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from simulators.scenario import SalesDrop, Scenario

TZ = ZoneInfo("Asia/Shanghai")


def at(hhmm: str) -> int:
    h, m = map(int, hhmm.split(":"))
    return int(datetime(2025, 3, 14, h, m, tzinfo=TZ).timestamp() * 1000)


@pytest.fixture(scope="module")
def runs(make_run):
    scenario = Scenario.load("incidents").replace(
        start_date="2025-03-14", shoppers_per_mall_per_day=2000, probe_interval_s=300.0)
    no_drop = scenario.replace(
        incidents=[i for i in scenario.incidents if not isinstance(i, SalesDrop)])
    out = {}
    for name, sc in (("all", scenario), ("no_drop", no_drop),
                     ("none", scenario.replace(incidents=[]))):
        r = make_run(sc, 21)
        out[name] = list(zip(r.events, r.decoded, strict=True))
    return out


def sales(run, store: str | None = None) -> list:
    return [d for e, d in run if e.topic == "pos.transactions" and d.type == "sale"
            and (store is None or d.store_id == store)]


def test_sales_drop_scales_the_store_sales_in_its_window_only(runs) -> None:
    lo, hi = at("12:00"), at("18:00")
    inside = [len([s for s in sales(runs[k], "S0101") if lo <= s.ts < hi])
              for k in ("all", "no_drop")]
    outside = [sorted(s.txn_id for s in sales(runs[k], "S0101") if not lo <= s.ts < hi)
               for k in ("all", "no_drop")]
    assert inside[1] > 80
    assert 0.08 < inside[0] / inside[1] < 0.35  # factor 0.2
    assert outside[0] == outside[1]  # the same baskets outside the window
    others = [sorted(s.txn_id for s in sales(runs[k]) if s.store_id != "S0101")
              for k in ("all", "no_drop")]
    assert others[0] == others[1]


def test_payment_outage_removes_the_method_in_its_window(runs) -> None:
    lo, hi = at("14:00"), at("15:30")
    txns = [d for e, d in runs["all"] if e.topic == "pos.transactions"]
    assert not [t for t in txns if t.payment == "wechat" and lo <= t.ts < hi]
    assert len([t for t in txns if t.payment == "wechat" and not lo <= t.ts < hi]) > 100
    assert len([t for t in txns if t.payment != "wechat" and lo <= t.ts < hi]) > 50


def test_dark_sensor_sends_nothing_in_its_window(runs) -> None:
    lo, hi = at("13:00"), at("15:00")
    mine = [(e, d) for e, d in runs["all"] if e.topic == "wifi.probes" and d.sensor_id == "AP-0103"]
    ts = [o.ts for _, d in mine for o in (d.observations or [d])]
    assert not [t for t in ts if lo <= t < hi]
    assert not [e for e, _ in mine if lo <= e.ts < hi]
    assert len([t for t in ts if hi <= t < hi + 3600_000]) > 100  # back afterwards
    before = [d for e, d in runs["none"] if e.topic == "wifi.probes" and d.sensor_id == "AP-0103"
              and lo <= e.ts < hi]
    assert len(before) > 100  # it would have sent plenty


def test_flash_crowd_multiplies_arrivals_in_its_window(runs) -> None:
    lo, hi = at("19:00"), at("20:00")

    def devices(run) -> int:
        return len({o.mac for e, d in run if e.topic == "wifi.probes" and lo <= e.ts < hi
                    for o in (d.observations or [d])})

    # distinct MACs heard in the hour: new arrivals x3, people already inside x1
    assert devices(runs["all"]) > 1.8 * devices(runs["none"])
