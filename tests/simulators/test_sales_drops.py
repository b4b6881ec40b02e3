"""The sales-drop scenario generator: deterministic, on the brief, and its labels true to the data.

Local times come from zoneinfo per transaction, counts from plain loops over the txns; the
generator's own helpers are not used to compute expected values.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from simulators.sales_drops import PAYMENTS, DropLabel, DropScenario, Txn, drop_scenario

DAY, WEEK, BUCKET = 86_400_000, 7 * 86_400_000, 300_000


@pytest.fixture(scope="module")
def full() -> DropScenario:
    return drop_scenario()


@pytest.fixture(scope="module")
def local(full: DropScenario) -> list[datetime]:
    """The local time of each of ``full.txns``, in its store's zone."""
    zone = {s.store_id: ZoneInfo(s.tz) for s in full.stores}
    return [datetime.fromtimestamp(t.ts / 1000, zone[t.store_id]) for t in full.txns]


@pytest.fixture(scope="module")
def by_store(full: DropScenario) -> dict[str, list[Txn]]:
    """``full.txns`` per store, in time order: one pass, not one per incident."""
    out: dict[str, list[Txn]] = defaultdict(list)
    for t in full.txns:
        out[t.store_id].append(t)
    return out


def digest(sc: DropScenario) -> str:
    h = hashlib.sha256()
    h.update(repr([(t.ts, t.store_id, t.amount, t.payment, t.refund) for t in sc.txns]).encode())
    h.update(repr(sc.labels).encode())
    for sid in sorted(sc.footfall):
        h.update(sc.footfall[sid].tobytes())
    return h.hexdigest()


def minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def sales_in(txns: list[Txn], start: int, end: int) -> list[Txn]:
    return [t for t in txns if start <= t.ts < end and not t.refund]


def test_same_seed_same_data_and_another_seed_differs() -> None:
    first = drop_scenario(11, stores=8, weeks=3, drops=4)
    assert len(first.txns) > 1000
    assert digest(first) == digest(drop_scenario(11, stores=8, weeks=3, drops=4))
    assert digest(first) != digest(drop_scenario(12, stores=8, weeks=3, drops=4))


def test_sizes_and_shapes(full: DropScenario) -> None:
    assert datetime.fromtimestamp(full.start_ms / 1000, UTC) == datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
    assert (full.days, full.bucket_ms, full.bucket_start(288)) == (56, BUCKET, full.start_ms + DAY)
    assert [s.store_id for s in full.stores] == [f"D{i:03d}" for i in range(1, 121)]
    assert {s.tz for s in full.stores} == {"Asia/Shanghai", "Asia/Urumqi", "Asia/Hong_Kong"}
    assert any(s.hours is None for s in full.stores) and any(s.closed_weekdays for s in full.stores)
    peaks = [s.peak_per_hour for s in full.stores]
    assert min(peaks) < 3 and max(peaks) > 45
    assert 300_000 <= len(full.txns) <= 2_000_000
    assert all(a.ts <= b.ts for a, b in zip(full.txns, full.txns[1:], strict=False))
    assert full.start_ms <= full.txns[0].ts and full.txns[-1].ts < full.start_ms + 56 * DAY
    assert all(t.amount > 0 and t.payment in PAYMENTS for t in full.txns)
    refunds = sum(t.refund for t in full.txns)
    assert 0.015 < refunds / len(full.txns) < 0.025
    pay = Counter(t.payment for t in full.txns)
    assert (pay["wechat"] + pay["alipay"]) / len(full.txns) > 0.8 and set(pay) == set(PAYMENTS)
    assert set(full.footfall) == {s.store_id for s in full.stores}
    assert all(f.shape == (56 * 288,) and f.dtype.kind == "i" and f.min() >= 0 for f in full.footfall.values())


def test_footfall_tracks_sales_by_the_conversion_rate(full: DropScenario) -> None:
    sales = Counter(t.store_id for t in full.txns if not t.refund)
    for s in full.stores:
        if sales[s.store_id] > 5000:  # enough for a 5% check
            ratio = sales[s.store_id] / full.footfall[s.store_id].sum()
            assert abs(ratio / s.conversion - 1) < 0.05, s


def test_bucket_counts_are_sales_minus_refunds_in_their_own_buckets(full: DropScenario) -> None:
    sid = "D003"
    mine = [t for t in full.txns if t.store_id == sid]
    counts = full.bucket_counts(sid)
    assert counts.shape == (56 * 288,)
    assert counts.sum() == sum(not t.refund for t in mine) - sum(t.refund for t in mine)
    first = mine[0]
    i = (first.ts - full.start_ms) // BUCKET
    assert full.bucket_start(i) <= first.ts < full.bucket_start(i + 1) and counts[i] != 0


def test_labels_meet_the_brief(full: DropScenario) -> None:
    labels = full.labels
    assert len(labels) >= 50
    causes = Counter(lab.cause.split(":")[0] for lab in labels)
    assert causes["drop"] >= 0.5 * len(labels) and causes["traffic"] >= 8 and causes["payment"] >= 8
    assert {lab.cause for lab in labels} <= {"drop", "traffic", "payment:wechat", "payment:alipay"}
    for lab in labels:
        assert 0.3 <= lab.depth <= 1.0
        assert 30 * 60_000 <= lab.end_ms - lab.start_ms <= 2 * DAY
        assert full.start_ms + 2 * WEEK <= lab.start_ms and lab.end_ms <= full.start_ms + full.days * DAY
        assert lab.missing_txns == pytest.approx(lab.expected_txns * lab.depth)
        assert lab.detectable == (lab.missing_txns >= 10)
        if lab.cause.startswith("payment:"):
            assert 0.3 <= lab.depth <= 0.5
    assert sum(lab.detectable for lab in labels) >= len(labels) / 2
    by_store: dict[str, list[DropLabel]] = defaultdict(list)
    for lab in labels:
        by_store[lab.store_id].append(lab)
    for mine in by_store.values():
        mine.sort(key=lambda lab: lab.start_ms)
        assert all(a.end_ms <= b.start_ms for a, b in zip(mine, mine[1:], strict=False))


def test_incidents_start_in_opening_hours(full: DropScenario) -> None:
    spec = {s.store_id: s for s in full.stores}
    for lab in full.labels:
        s = spec[lab.store_id]
        start = datetime.fromtimestamp(lab.start_ms / 1000, ZoneInfo(s.tz))
        assert start.weekday() not in s.closed_weekdays and (s.store_id, start.date().isoformat()) not in full.closures
        if s.hours is not None:
            opens, closes = (minutes(x) for x in s.hours.split("-"))
            assert opens <= start.hour * 60 + start.minute < closes


def test_sales_left_in_incident_windows_match_the_labels(full: DropScenario, by_store: dict[str, list[Txn]]) -> None:
    # Thinning keeps a Poisson process: sales left in the windows ~ Poisson(sum(expected - missing)).
    left = expected = 0.0
    for lab in full.labels:
        left += len(sales_in(by_store[lab.store_id], lab.start_ms, lab.end_ms))
        expected += lab.expected_txns - lab.missing_txns
    assert abs(left - expected) < 4 * math.sqrt(expected) + 1


def neighbour_ratio(sc: DropScenario, lab: DropLabel, series: np.ndarray) -> float:
    """The window's total in ``series`` over the mean of the same window 1 and 2 weeks away
    (inside the run and free of other incidents at the store)."""
    b0, b1 = (lab.start_ms - sc.start_ms) // BUCKET + 1, (lab.end_ms - sc.start_ms) // BUCKET  # whole buckets
    others = [o for o in sc.labels if o.store_id == lab.store_id and o is not lab]
    around = []
    for k in (-2, -1, 1, 2):
        a, b = b0 + k * 7 * 288, b1 + k * 7 * 288
        t0, t1 = sc.bucket_start(a), sc.bucket_start(b)
        if a >= 0 and b <= len(series) and all(o.end_ms <= t0 or t1 <= o.start_ms for o in others):
            around.append(float(series[a:b].sum()))
    assert around, lab
    return float(series[b0:b1].sum()) / (sum(around) / len(around))


def test_a_deep_long_drop_really_cuts_sales_but_not_footfall(full: DropScenario) -> None:
    deep = [lab for lab in full.labels if lab.cause == "drop" and lab.depth >= 0.6]
    lab = max(deep, key=lambda lab: lab.expected_txns)
    assert lab.expected_txns > 50
    assert neighbour_ratio(full, lab, full.bucket_counts(lab.store_id)) < 1 - lab.depth + 0.25
    assert neighbour_ratio(full, lab, full.footfall[lab.store_id]) > 0.75


def test_a_traffic_incident_cuts_footfall_and_sales(full: DropScenario) -> None:
    deep = [lab for lab in full.labels if lab.cause == "traffic" and lab.depth >= 0.5]
    lab = max(deep, key=lambda lab: lab.expected_txns)
    assert lab.expected_txns > 30
    assert neighbour_ratio(full, lab, full.bucket_counts(lab.store_id)) < 1 - lab.depth + 0.3
    assert neighbour_ratio(full, lab, full.footfall[lab.store_id]) < 1 - lab.depth + 0.3


def test_a_payment_outage_removes_that_method_in_its_window(
    full: DropScenario, by_store: dict[str, list[Txn]]
) -> None:
    outages = [lab for lab in full.labels if lab.cause.startswith("payment:")]
    for lab in outages:
        method = lab.cause.split(":")[1]
        inside = [t for t in by_store[lab.store_id] if lab.start_ms <= t.ts < lab.end_ms]
        assert not [t for t in inside if t.payment == method]
    lab = max(outages, key=lambda lab: lab.expected_txns)
    assert len(sales_in(by_store[lab.store_id], lab.start_ms, lab.end_ms)) > 0  # others still pay
    before = sales_in(by_store[lab.store_id], lab.start_ms - WEEK, lab.end_ms - WEEK)
    assert Counter(t.payment for t in before)[lab.cause.split(":")[1]] > 0


def test_no_sales_outside_hours_on_closed_weekdays_or_closures(full: DropScenario, local: list[datetime]) -> None:
    spec = {s.store_id: s for s in full.stores}
    closures = set(full.closures)
    assert len(closures) >= 5 and {sid for sid, _ in closures} <= set(spec)
    for t, when in zip(full.txns, local, strict=True):
        s = spec[t.store_id]
        assert when.weekday() not in s.closed_weekdays, t
        assert (t.store_id, when.date().isoformat()) not in closures, t
        if s.hours is not None:
            opens, closes = (minutes(x) for x in s.hours.split("-"))
            assert opens <= when.hour * 60 + when.minute < closes, (t, when)
    assert sum(len(s.closed_weekdays) for s in full.stores) > 0


def test_no_visitors_when_closed(full: DropScenario) -> None:
    for s in [s for s in full.stores if s.hours is not None][:4]:
        opens, closes = (minutes(x) for x in s.hours.split("-"))  # type: ignore[union-attr]
        zone = ZoneInfo(s.tz)
        foot = full.footfall[s.store_id]
        for i in range(len(foot)):
            when = datetime.fromtimestamp(full.bucket_start(i) / 1000, zone)
            if not opens <= when.hour * 60 + when.minute < closes or when.weekday() in s.closed_weekdays:
                assert foot[i] == 0, (s, i)


def test_holidays_scale_sales_by_the_stores_factor(full: DropScenario, local: list[datetime]) -> None:
    assert [d for d, n in full.holidays.items() if n == "Qingming"] == ["2026-04-04", "2026-04-05", "2026-04-06"]
    assert len(full.holidays) == 4
    spec = {s.store_id: s for s in full.stores}
    day = Counter((t.store_id, when.date().isoformat()) for t, when in zip(full.txns, local, strict=True)
                  if not t.refund)
    holiday = [datetime(2026, 4, 4) + timedelta(days=k) for k in range(3)]
    around = [d + timedelta(days=k) for d in holiday for k in (-7, 7)]
    quiet = {lab.store_id for lab in full.labels
             if lab.start_ms < int(datetime(2026, 4, 14, tzinfo=UTC).timestamp() * 1000)
             and lab.end_ms > int(datetime(2026, 3, 27, tzinfo=UTC).timestamp() * 1000)}
    quiet |= {sid for sid, _ in full.closures}
    for factor in (0.4, 1.6):
        stores = [sid for sid, s in spec.items() if s.holiday_factor == factor and sid not in quiet]
        assert len(stores) >= 10
        on = sum(day[sid, d.date().isoformat()] for sid in stores for d in holiday)
        off = sum(day[sid, d.date().isoformat()] for sid in stores for d in around) / 2
        assert on / off == pytest.approx(factor, rel=0.15)


def test_time_zones_are_honoured(full: DropScenario, local: list[datetime]) -> None:
    urumqi = [s for s in full.stores if s.tz == "Asia/Urumqi" and s.hours is not None]
    s = max(urumqi, key=lambda s: s.peak_per_hour)
    assert s.peak_per_hour > 5
    opens = minutes(s.hours.split("-")[0])  # type: ignore[union-attr]
    first: dict[str, int] = {}
    for t, when in zip(full.txns, local, strict=True):
        if t.store_id == s.store_id and not t.refund:
            first.setdefault(when.date().isoformat(), when.hour * 60 + when.minute)
    assert opens <= min(first.values()) < opens + 15  # sales start at the local opening ...
    beijing = ZoneInfo("Asia/Shanghai")
    earliest = min(datetime.fromtimestamp(t.ts / 1000, beijing) for t in full.txns if t.store_id == s.store_id
                   and datetime.fromtimestamp(t.ts / 1000, beijing).date() > datetime(2026, 3, 2).date())
    assert earliest.hour * 60 + earliest.minute >= opens + 120  # ... two hours after it in Beijing time


def test_refunds_follow_a_sale_of_the_same_store_within_a_day() -> None:
    sc = drop_scenario(5, stores=10, weeks=3, drops=4)
    open_sales: dict[tuple[str, int, str], list[int]] = defaultdict(list)
    refunds = 0
    for t in sc.txns:
        key = (t.store_id, t.amount, t.payment)
        if not t.refund:
            open_sales[key].append(t.ts)
            continue
        refunds += 1
        match = [ts for ts in open_sales[key] if t.ts - DAY <= ts < t.ts]
        assert match, t
        open_sales[key].remove(match[0])
    assert refunds > 50


def test_small_runs_need_three_weeks() -> None:
    from storepulse.errors import ConfigError

    with pytest.raises(ConfigError, match="weeks >= 3"):
        drop_scenario(1, stores=3, weeks=2, drops=1)
