"""The mall simulator's stream: deterministic, on contract, with consistent ground truth.

Expected values come from the decoded stream and plain computations over it, never from
the simulator's own helpers.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from connectors.schemas import BindDevice, Consent, Profile, Signup
from simulators.mall import MallSimulator
from simulators.scenario import Scenario

TZ = ZoneInfo("Asia/Shanghai")


def local(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, TZ)


def small(**changes: object) -> Scenario:
    base = dict(name="small", start_date="2025-03-14", stores_per_mall=4,
                shoppers_per_mall_per_day=150, probe_interval_s=60.0)
    base.update(changes)
    return Scenario.load("demo").replace(**base)


def test_same_seed_same_bytes_and_another_seed_differs() -> None:
    scenario = small(street_stores=1, street_passers_per_store_per_day=50, bad_record_share=0.02)
    first = list(MallSimulator(scenario, seed=5).events())
    again = list(MallSimulator(scenario, seed=5).events())
    other = list(MallSimulator(scenario, seed=6).events())
    assert len(first) > 1000
    assert first == again
    assert [e.value for e in first[:200]] != [e.value for e in other[:200]]


def test_yesterday_is_the_last_complete_local_day() -> None:
    now = datetime(2025, 6, 2, 0, 30, tzinfo=ZoneInfo("UTC"))  # 08:30 on 2 June in Shanghai
    sim = MallSimulator(small(start_date="yesterday"), seed=1, now=now)
    events = list(sim.events())
    days = {local(e.ts).date().isoformat() for e in events}
    assert days == {"2025-06-01"}


def test_every_value_decodes_with_the_contract_types_and_keys_match(base_run) -> None:
    kinds: Counter[str] = Counter()
    for event, value in zip(base_run.events, base_run.decoded, strict=True):
        if event.topic == "wifi.probes":
            assert event.key == value.sensor_id.encode()
            if value.observations is not None:
                kinds["batched"] += 1
                assert value.ts is None and value.mac is None and value.observations
                assert all(o.ts <= event.ts for o in value.observations)
                assert event.ts - min(o.ts for o in value.observations) <= 5000
            else:
                kinds["single"] += 1
                assert value.ts == event.ts and value.mac and value.rssi is not None
        elif event.topic == "pos.transactions":
            kinds[value.type] += 1
            assert event.key == value.store_id.encode() and value.ts == event.ts
            assert value.currency == "CNY" and value.amount > 0
            assert value.amount == sum(i.qty * i.unit_price for i in value.items)
        else:
            kinds[type(value).__name__] += 1
            assert event.key == value.member_id.encode() and value.ts == event.ts
    assert min(kinds.values()) > 0, kinds
    assert set(kinds) >= {"batched", "single", "sale", "refund", "Signup", "BindDevice",
                          "Consent", "Profile"}


def test_events_are_in_write_time_order_and_catalog_is_complete(base_run) -> None:
    ts = [e.ts for e in base_run.events]
    assert ts == sorted(ts)
    cat = base_run.sim.catalog
    stores = {s.store_id for s in cat.stores}
    floor = {s.store_id for s in cat.sensors if s.store_id is not None}
    assert floor == stores  # one sensor inside every store
    for sensor in cat.sensors:
        assert sensor.zone == (f"{sensor.store_id}-floor" if sensor.store_id
                               else f"{sensor.mall_id}-corridor")
        assert (sensor.visit_rssi, sensor.min_dwell_s, sensor.visit_timeout_s) == (-70, 120, 600)
    assert any(s.store_id is None for s in cat.sensors)
    assert all(s.tz == "Asia/Shanghai" and 30 < s.lat < 32 and 120 < s.lon < 123
               for s in cat.stores)
    assert {s.mall_id for s in cat.stores} == {"MALL-01", None} and cat.campaigns
    heard = {sid for sid, _, _ in base_run.observations()}
    assert heard == {s.sensor_id for s in cat.sensors}


def test_probe_fields_are_in_range(base_run) -> None:
    for _, o, _ in base_run.observations():
        assert -95 <= o.rssi < -20
        if o.seq is not None:
            assert 0 <= o.seq <= 4095
            assert o.ch in range(2412, 2463, 5)
            assert o.ie and o.vendor_ie


def test_randomised_macs_have_the_local_bit_and_stable_ones_do_not(base_run) -> None:
    truth = base_run.sim.truth
    owner = truth.mac_owner
    randomized = {p: t.randomized for p, t in truth.people.items()}
    seen = {o.mac for _, o, _ in base_run.observations()}
    first_octets: Counter[bool] = Counter()
    for mac in seen:
        octet = int(mac[:2], 16)
        assert not octet & 0x01  # unicast
        assert bool(octet & 0x02) == randomized[owner[mac]], mac
        first_octets[bool(octet & 0x02)] += 1
    assert first_octets[True] > 100 and first_octets[False] > 100


def test_rotation_period_and_seq_continue_across_rotations(make_run, base_scenario) -> None:
    # every randomised phone rotates every 10 minutes exactly (no spread)
    r = make_run(base_scenario.replace(mac_rotation_median_min=10.0, mac_rotation_sigma=0.0,
                                       shoppers_per_mall_per_day=250, street_stores=0), 3)
    owner = r.sim.truth.mac_owner
    frames: dict[str, set[tuple[int, int, str]]] = defaultdict(set)
    fingerprints: dict[str, set[tuple]] = defaultdict(set)
    for _, o, _ in r.observations():
        if int(o.mac[:2], 16) & 0x02 and o.seq is not None:
            frames[owner[o.mac]].add((o.ts, o.seq, o.mac))
            fingerprints[owner[o.mac]].add((tuple(o.ie), tuple(o.vendor_ie)))
    lifetimes, jumps = [], []
    for person, frame_set in frames.items():
        fs = sorted(frame_set)
        macs = list(dict.fromkeys(m for _, _, m in fs))
        spans = {m: (min(t for t, _, x in fs if x == m), max(t for t, _, x in fs if x == m))
                 for m in macs}
        lifetimes += [spans[m][1] - spans[m][0] for m in macs[1:-1]]  # whole periods only
        for (_, s0, m0), (_, s1, m1) in zip(fs, fs[1:], strict=False):
            if m0 != m1:
                jumps.append((s1 - s0) % 4096)
        assert len(fingerprints[person]) == 1  # same ie / vendor_ie across rotations
    assert len(lifetimes) > 50 and len(jumps) > 100
    assert max(lifetimes) <= 600_000
    assert statistics.median(lifetimes) > 480_000
    # seq goes on by a few frames at a rotation; a fresh counter would be uniform in 0..4095
    assert sum(1 <= j <= 12 for j in jumps) / len(jumps) > 0.95


def test_truth_visits_lie_inside_opening_hours(base_run) -> None:
    truth = base_run.sim.truth
    hours = {s.store_id: s.hours for s in base_run.sim.catalog.stores}
    assert len(truth.visits) > 500
    for v in truth.visits:
        assert v.end_ts > v.start_ts
        start, end = local(v.start_ts), local(v.end_ts)
        opens, closes = hours[v.store_id].split("-")
        assert start.date() == end.date()
        assert opens <= start.strftime("%H:%M") and end.strftime("%H:%M") < closes
    dwell = sorted(v.dwell_s for v in truth.visits)
    assert 6 * 60 < statistics.median(dwell) < 14 * 60
    assert 0.03 < sum(d < 120 for d in dwell) / len(dwell) < 0.3
    assert 0.005 < sum(d > 3600 for d in dwell) / len(dwell) < 0.1
    assert any(v.mall_id == v.store_id for v in truth.visits)  # the street store's own site


def test_truth_sales_match_the_sale_messages(base_run) -> None:
    sales: dict[str, list[int]] = defaultdict(list)
    by_id = {}
    for t in base_run.of_topic("pos.transactions"):
        by_id[t.txn_id] = t
        if t.type == "sale":
            sales[t.store_id].append(t.amount)
    expected = {s: (len(a), sum(a)) for s, a in sales.items()}
    assert base_run.sim.truth.sales_by_store() == expected
    refunds = [t for t in by_id.values() if t.type == "refund"]
    assert refunds
    for r in refunds:
        sale = by_id[r.ref_txn_id]
        assert sale.type == "sale" and sale.store_id == r.store_id and sale.ts < r.ts
        assert (sale.amount, sale.payment) == (r.amount, r.payment)
    payments = Counter(t.payment for t in by_id.values())
    assert {"wechat", "alipay"} <= set(payments) and payments["wechat"] > payments["cash"]


def test_sales_happen_during_a_visit_of_the_store(base_run) -> None:
    visits = defaultdict(list)
    for v in base_run.sim.truth.visits:
        visits[v.store_id].append((v.start_ts, v.end_ts))
    for t in base_run.of_topic("pos.transactions"):
        if t.type == "sale":
            assert any(a <= t.ts <= z for a, z in visits[t.store_id]), t.txn_id


def test_member_events_are_consistent(base_run) -> None:
    events = base_run.of_topic("members.events")
    signup = {e.member_id: e.ts for e in events if isinstance(e, Signup)}
    assert len(signup) > 50
    for e in events:
        assert e.ts >= signup[e.member_id]
    bound = {e.mac for e in events if isinstance(e, BindDevice)}
    probed = {o.mac for _, o, _ in base_run.observations()}
    stable_bound = {m for m in bound if not int(m[:2], 16) & 0x02}
    # a stable phone binds the MAC it probes with (a short trip may go unheard)
    assert len(stable_bound & probed) > 0.95 * len(stable_bound) > 20
    assert not {m for m in bound if int(m[:2], 16) & 0x02} & probed  # private WiFi MACs never probe
    consents = [e.push for e in events if isinstance(e, Consent)]
    assert 0.3 < sum(consents) / len(consents) < 0.9
    profiles = [p for p in events if isinstance(p, Profile)]
    birthdays = [p.birthday for p in profiles if p.birthday is not None]
    assert len(birthdays) == len(profiles) == len(signup)  # every member gives a birthday
    assert all(len(b) == 10 and 1950 < int(b[:4]) < 2010 for b in birthdays)
    assert any(b.endswith("-03-15") for b in birthdays)  # a few have their birthday today
    for t in base_run.of_topic("pos.transactions"):
        if t.member_id is not None:
            assert signup[t.member_id] <= t.ts


def test_arrivals_peak_at_lunch_and_evening_and_weekends_are_busier(make_run) -> None:
    scenario = small(start_date="2025-03-14", days=2, shoppers_per_mall_per_day=1500,
                     stores_per_mall=6, probe_interval_s=900.0)  # Friday and Saturday
    truth = MallSimulator(scenario, seed=2).truth
    first_visit: dict[str, int] = {}
    for v in truth.visits:
        day = local(v.start_ts).date()
        key = f"{v.person_id}@{day}"
        first_visit[key] = min(first_visit.get(key, v.start_ts), v.start_ts)
    by_hour = Counter(local(t).hour for t in first_visit.values())
    assert by_hour[12] > 1.5 * by_hour[10] and by_hour[19] > 1.3 * by_hour[15]
    by_day = Counter(local(t).weekday() for t in first_visit.values())
    assert 1.2 < by_day[5] / by_day[4] < 1.65


@pytest.mark.parametrize("field,value", [("phone_share", 0.5), ("member_share", 0.0)])
def test_shares_shape_the_people(field: str, value: float) -> None:
    truth = MallSimulator(small(**{field: value}, shoppers_per_mall_per_day=600), seed=4).truth
    people = list(truth.people.values())
    if field == "phone_share":
        assert 0.4 < sum(p.has_phone for p in people) / len(people) < 0.6
    else:
        assert not any(p.member_id for p in people)
