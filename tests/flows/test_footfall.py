"""Footfall flow: literal events in, exact outputs out (expected values worked by hand)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from bytewax.recovery import RecoveryConfig
from bytewax.testing import TestingSink, TestingSource, run_main

from connectors.catalog import Catalog
from connectors.records import RawBatch, RawMessage
from connectors.schemas import DeadLetter, FootfallMinute, StoreHour, Visit
from flows.engine import Sinks, Sources, build_flow
from storepulse.settings import Settings

CATALOG = Catalog.from_yaml("""
malls: [{mall_id: M1, name: Joy, tz: Asia/Shanghai, lat: 0, lon: 0}]
stores:
  - {store_id: S1, merchant_id: X, mall_id: M1, name: Beans, category: coffee, tz: Asia/Shanghai, lat: 0, lon: 0}
  - {store_id: S2, merchant_id: Y, mall_id: M1, name: Books, category: books, tz: Asia/Shanghai, lat: 0, lon: 0}
sensors:
  - {sensor_id: AP-1, mall_id: M1, store_id: S1, zone: S1-floor, lat: 0, lon: 0,
     visit_rssi: -70, min_dwell_s: 120, visit_timeout_s: 300}
  - {sensor_id: AP-2, mall_id: M1, store_id: S2, zone: S2-floor, lat: 0, lon: 0}
  - {sensor_id: C-1, mall_id: M1, zone: M1-corridor, lat: 0, lon: 0}
""")
T0 = 1_763_870_400_000  # 2025-11-23 04:00:00 UTC, 12:00 in Shanghai
MIN = 60_000
PHONE = "a4:5e:60:1b:22:9c"  # globally administered: a stable MAC
RANDOM_A, RANDOM_B = "a6:11:22:33:44:55", "b2:66:77:88:99:aa"  # locally administered
SETTINGS = Settings(mac_hash_key=b"test-key", max_event_age_s=1e10, allowed_lateness_s=60)


def probe(ts: int, mac: str, rssi: int, sensor: str = "AP-1", **extra: object) -> bytes:
    return json.dumps({"sensor_id": sensor, "ts": ts, "mac": mac, "rssi": rssi, **extra}).encode()


def sale(ts: int, txn: str, amount: int, store: str = "S1") -> bytes:
    return json.dumps(
        {
            "type": "sale",
            "txn_id": txn,
            "ts": ts,
            "merchant_id": "X",
            "store_id": store,
            "amount": amount,
            "currency": "CNY",
            "payment": "wechat",
        }
    ).encode()


def batch(topic: str, partition: int, values: list[bytes], first_offset: int = 0) -> RawBatch:
    msgs = [RawMessage(first_offset + i, b"k", v) for i, v in enumerate(values)]
    return RawBatch(topic=topic, partition=partition, messages=msgs)


def run(probes: list, txns: list | None = None, recovery: RecoveryConfig | None = None):
    """Run the engine over literal partition reads; the partitions are those the reads name."""
    out: list = []
    dead: list = []
    reads = [r for r in probes + (txns or []) if isinstance(r, RawBatch)]
    flow = build_flow(
        SETTINGS,
        sources=Sources(
            probes=TestingSource(probes),
            transactions=TestingSource(txns) if txns is not None else None,
            partitions=frozenset(r.source for r in reads),
        ),
        sinks=Sinks(deadletter={"dead": TestingSink(dead)}, footfall={"out": TestingSink(out)}),
        catalog=lambda: CATALOG,
    )
    epoch = None if recovery is None else timedelta(0)
    run_main(flow, epoch_interval=epoch, recovery_config=recovery)
    return out, dead


def of(kind: type, items: list) -> list:
    return [i for i in items if isinstance(i, kind)]


def test_a_visit_its_dwell_and_its_store_hour() -> None:
    # A stable phone inside S1 probing every 30 s from 12:01:00 to 12:03:30 (6 probes), not
    # heard anywhere else: one mean interval (30 s) is added at each end, so the visit is
    # 12:00:30-12:04:00, 210 s. A second phone only in the corridor at 12:00:10.
    # Sales: two in S1 at 12:01 and 12:02.
    values = [probe(T0 + s * 1000, PHONE, -60) for s in (60, 90, 120, 150, 180, 210)]
    values.append(probe(T0 + 10_000, "a4:5e:60:00:00:01", -80, "C-1"))
    out, dead = run(
        [batch("wifi.probes", 0, values)],
        [batch("pos.transactions", 0, [sale(T0 + MIN, "T1", 1200), sale(T0 + 2 * MIN, "T2", 3000)])],
    )
    assert dead == []
    assert of(Visit, out) == [
        Visit(
            mall_id="M1",
            store_id="S1",
            start_ts=T0 + 30_000,
            end_ts=T0 + 240_000,
            dwell_s=210.0,
            randomized=False,
            returning=False,
        )
    ]
    final_hour = of(StoreHour, out)[-1]
    assert final_hour == StoreHour(
        mall_id="M1",
        store_id="S1",
        hour_ts=T0,
        visitors=1,
        visitors_stable=1,
        new_visitors=1,
        returning_visitors=0,
        passers_by=1,
        dwell_median_s=210.0,
        dwell_buckets=(1, 0, 0, 0, 0),
        sales=2,
        sales_amount=4200,
        capture_rate=1.0,
        conversion=2.0,
    )
    minutes = {(m.scope, m.scope_id, m.minute_ts): m for m in of(FootfallMinute, out)}
    first = minutes[("mall", "M1", T0)]
    assert (first.devices, first.devices_15m, first.devices_1h) == (1, 1, 1)
    s1 = minutes[("store", "S1", T0 + MIN)]
    assert (s1.devices, s1.visitors_inside, s1.sales, s1.sales_amount) == (1, 0, 1, 1200)
    assert minutes[("mall", "M1", T0 + MIN)].devices_15m == 2  # the corridor phone still counts
    assert ("zone", "M1-corridor", T0 + MIN) not in minutes
    # 12:03: inside since 12:01:00, so at the minute's end for 180 s >= the 120 s minimum
    assert minutes[("store", "S1", T0 + 3 * MIN)].visitors_inside == 1


def test_short_stays_and_weak_signals_are_not_visits() -> None:
    # Two strong probes 30 s apart: dwell estimate 30 * 3/1 = 90 s, under the 120 s minimum.
    # Weak (-75 < -70) probes for ten minutes: heard (a passer-by), never inside.
    values = [probe(T0, PHONE, -60), probe(T0 + 30_000, PHONE, -60)]
    values += [probe(T0 + s * 1000, RANDOM_A, -75) for s in range(0, 600, 30)]
    out, _ = run([batch("wifi.probes", 0, values)])
    assert of(Visit, out) == []
    hour = of(StoreHour, out)[-1]
    assert (hour.visitors, hour.passers_by, hour.capture_rate, hour.conversion) == (0, 2, 0.0, None)


def test_a_late_record_is_dead_lettered_with_its_position() -> None:
    # The first read moves event time to 12:10; the allowed lateness is 60 s, so minutes
    # before 12:09 are closed and a sighting at 12:05 in the next read is late.
    first = batch("wifi.probes", 0, [probe(T0, PHONE, -60), probe(T0 + 10 * MIN, PHONE, -60)])
    second = batch("wifi.probes", 0, [probe(T0 + 5 * MIN, PHONE, -60)], first_offset=2)
    _, dead = run([first, second])
    assert [(d.topic, d.partition, d.offset, d.reason) for d in dead] == [("wifi.probes", 0, 2, "late")]
    assert PHONE not in dead[0].raw


def test_reading_one_partition_ahead_does_not_make_the_other_late() -> None:
    # Two partitions feed mall M1. Read in event-time order, or with partition 0 read
    # two hours ahead first, the results must be the same and nothing is late.
    p0 = [probe(T0 + s * 1000, PHONE, -60) for s in range(0, 7200, 30)]
    p1 = [probe(T0 + s * 1000, RANDOM_A, -62, "AP-2") for s in range(0, 1800, 30)]
    ahead = [batch("wifi.probes", 0, p0), batch("wifi.probes", 1, p1)]
    interleaved = [
        batch("wifi.probes", 0, p0[:60]),
        batch("wifi.probes", 1, p1[:30]),
        batch("wifi.probes", 1, p1[30:], first_offset=30),
        batch("wifi.probes", 0, p0[60:], first_offset=60),
    ]
    out_ahead, dead_ahead = run(ahead)
    out_inter, dead_inter = run(interleaved)
    assert dead_ahead == dead_inter == []
    assert sorted(of(Visit, out_ahead), key=repr) == sorted(of(Visit, out_inter), key=repr)
    assert len(of(Visit, out_ahead)) == 2
    final = {(m.scope, m.scope_id, m.minute_ts): m for m in of(FootfallMinute, out_ahead)}
    assert final == {(m.scope, m.scope_id, m.minute_ts): m for m in of(FootfallMinute, out_inter)}


def test_an_idle_partition_stops_holding_event_time_back() -> None:
    # Partition 1 fed M1 once at 12:00 and then went idle; partition 0 goes on to 12:30.
    # Without the idle marker the site's clock would stay at 12:00 and close nothing.
    p1 = batch("wifi.probes", 1, [probe(T0, RANDOM_A, -80, "C-1")])
    p0 = batch("wifi.probes", 0, [probe(T0 + s * 1000, PHONE, -60) for s in range(0, 1800, 30)])
    held_out, _ = run([p1, p0])  # the input ends, so everything closes at the end anyway
    idle = RawBatch(topic="wifi.probes", partition=1, messages=[], idle=True)
    released, _ = run([p1, p0, idle, batch("wifi.probes", 0, [probe(T0 + 31 * MIN, RANDOM_B, -90, "C-1")], 60)])
    assert of(Visit, held_out) == of(Visit, released)
    # The order of outputs shows when minutes closed: with the idle marker, minute 12:20
    # closes before the end of input (before the last read's minute 12:31 exists).
    minutes = [m.minute_ts for m in of(FootfallMinute, released) if m.scope == "mall"]
    assert minutes == sorted(minutes) and T0 + 20 * MIN in minutes


def test_duplicate_transactions_count_once() -> None:
    txns = [sale(T0, "T1", 500), sale(T0 + 1000, "T1", 500), sale(T0 + 2000, "T2", 700)]
    out, dead = run([batch("wifi.probes", 0, [probe(T0, PHONE, -90)])], [batch("pos.transactions", 0, txns)])
    hour = of(StoreHour, out)[-1]
    assert (hour.sales, hour.sales_amount, dead) == (2, 1200, [])


def test_a_rotated_random_mac_is_one_visit_when_seq_and_fingerprint_continue() -> None:
    # One phone: MAC A for 5 minutes (seq 100..), then MAC B 30 s later (seq continues),
    # same information elements. One visit over the joint seconds 0..570 step 30, heard
    # nowhere else: one mean interval (570/19 = 30 s) at each end, -30..600 s, 630 s.
    ie = {"ie": [0, 1, 50, 3, 45, 127, 221], "vendor_ie": [6130]}
    a = [probe(T0 + s * 1000, RANDOM_A, -60, seq=100 + i, **ie) for i, s in enumerate(range(0, 300, 30))]
    b = [probe(T0 + s * 1000, RANDOM_B, -60, seq=110 + i, **ie) for i, s in enumerate(range(300, 600, 30))]
    out, _ = run([batch("wifi.probes", 0, a + b)])
    assert [(v.start_ts, v.end_ts, v.dwell_s, v.randomized) for v in of(Visit, out)] == [
        (T0 - 30_000, T0 + 600_000, 630.0, True)
    ]
    # Another model (different elements): two phones, two visits.
    other = [
        probe(T0 + s * 1000, RANDOM_B, -60, seq=110 + i, ie=[0, 1], vendor_ie=[])
        for i, s in enumerate(range(300, 600, 30))
    ]
    out, _ = run([batch("wifi.probes", 0, a + other)])
    assert len(of(Visit, out)) == 2


def test_returning_visitors_are_stable_devices_seen_on_an_earlier_day() -> None:
    day = 86_400_000
    values = []
    for d in (0, 1):
        for mac in (PHONE, RANDOM_A):
            values += [probe(T0 + d * day + s * 1000, mac, -60) for s in range(60, 360, 30)]
    out, _ = run([batch("wifi.probes", 0, values)])
    assert [(v.start_ts - T0) // day for v in of(Visit, out) if v.returning] == [1]
    assert sum(v.returning for v in of(Visit, out) if v.randomized) == 0


def test_crash_and_resume_gives_the_uninterrupted_results(tmp_path: Path) -> None:
    values = [probe(T0 + s * 1000, PHONE, -60) for s in range(0, 3600, 30)]
    reads = [batch("wifi.probes", 0, values[i : i + 20], first_offset=i) for i in range(0, len(values), 20)]
    expected, _ = run(reads)

    from bytewax._bytewax import init_db_dir

    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    crashing = reads[:3] + [TestingSource.ABORT()] + reads[3:]  # the abort fires once
    first, _ = run(crashing, recovery=recovery)
    assert of(Visit, first) == []  # crashed before the visit ended
    second, _ = run(crashing, recovery=recovery)
    # At-least-once output: the resumed run may repeat what followed the last snapshot,
    # but together the runs hold exactly the uninterrupted results.
    assert sorted(set(map(repr, first + second))) == sorted(set(map(repr, expected)))
    assert of(Visit, second) == of(Visit, expected)


@pytest.mark.parametrize("lateness_s", [0, 60])
def test_minutes_close_only_after_the_allowed_lateness(lateness_s: int) -> None:
    # Event time reaches 12:03:30. Minute 12:02 closes only if 12:03:30 - lateness >= 12:03.
    settings = Settings(mac_hash_key=b"k", max_event_age_s=1e10, allowed_lateness_s=lateness_s)
    out: list = []
    flow = build_flow(
        settings,
        sources=Sources(
            probes=TestingSource(
                [
                    batch("wifi.probes", 0, [probe(T0 + s * 1000, PHONE, -60) for s in (0, 60, 120, 210)]),
                    TestingSource.ABORT(),
                ]
            )
        ),
        sinks=Sinks(footfall={"out": TestingSink(out)}),
        catalog=lambda: CATALOG,
    )
    run_main(flow)
    closed = sorted({m.minute_ts - T0 for m in of(FootfallMinute, out)})
    assert closed == ([0, MIN, 2 * MIN] if lateness_s == 0 else [0, MIN])


def test_dead_letters_never_carry_a_raw_mac() -> None:
    bad = [
        b'{"sensor_id": "NOPE", "ts": 1, "mac": "' + PHONE.encode() + b'", "rssi": -1}',
        b'{"sensor_id": "AP-1", "mac": "' + PHONE.upper().encode() + b'"}',
    ]
    _, dead = run([batch("wifi.probes", 0, bad)])
    assert [d.reason for d in dead] == ["unknown_sensor", "bad_schema"]
    assert all(isinstance(d, DeadLetter) and PHONE not in d.raw.lower() for d in dead)


def test_each_second_a_device_is_inside_only_the_store_that_hears_it_loudest() -> None:
    # Every 30 s for 10 minutes S2's sensor hears the phone at -60 and S1's at -65 (both
    # above -70): it is in S2, not in both. Not heard before or after: 30 s added per end.
    values = []
    for s in range(0, 600, 30):
        values += [probe(T0 + s * 1000, PHONE, -65, "AP-1"), probe(T0 + s * 1000, PHONE, -60, "AP-2")]
    out, _ = run([batch("wifi.probes", 0, values)])
    assert [(v.store_id, v.start_ts - T0, v.end_ts - T0) for v in of(Visit, out)] == [("S2", -30_000, 600_000)]
    hours = {h.store_id: h for h in of(StoreHour, out)}
    assert (hours["S1"].visitors, hours["S1"].passers_by) == (0, 1)  # heard at S1, not a visitor there


def test_probes_heard_outside_bound_the_visit() -> None:
    # Corridor at 12:00:00 and 12:04:00; inside S1 at 12:01:00 and 12:03:00. The visit
    # starts between 12:00:00 and 12:01:00 and ends between 12:03:00 and 12:04:00: the
    # midpoints give 12:00:30-12:03:30, 180 s. With no corridor probes it would be the
    # Poisson estimate, one mean interval (120 s) on each end: 11:59:00-12:05:00, 360 s.
    inside = [probe(T0 + 60_000, PHONE, -60), probe(T0 + 180_000, PHONE, -60)]
    corridor = [probe(T0, PHONE, -55, "C-1"), probe(T0 + 240_000, PHONE, -55, "C-1")]
    out, _ = run([batch("wifi.probes", 0, corridor[:1] + inside + corridor[1:])])
    assert [(v.start_ts - T0, v.end_ts - T0, v.dwell_s) for v in of(Visit, out)] == [(30_000, 210_000, 180.0)]
    out, _ = run([batch("wifi.probes", 0, inside)])
    assert [(v.start_ts - T0, v.end_ts - T0, v.dwell_s) for v in of(Visit, out)] == [(-60_000, 300_000, 360.0)]


def test_door_crossings_use_the_walk_between_stores_measured_in_the_hour_before() -> None:
    # 20 phones probe every 30 s: in S2 at 0..90, the corridor at 120, S1 at 150 and 180.
    # Each confirms a walk S2 -> S1 heard on 1 burst, at a mean interval of 30 s: 30 s
    # each, the site's mean walk (20 walks, enough). Then a phone in the corridor at 600,
    # in S1 at 660..900 and in the corridor at 960: the crossings are what is left of a
    # 30 s walk within each 60 s gap, 30 - 60/(e^2 - 1) = 20.609 s after 600 and before
    # 960 (the midpoints, 630 and 930, without the walks).
    values = []
    for d in range(20):
        mac = f"a4:5e:60:00:01:{d:02x}"
        values += [probe(T0 + s * 1000, mac, -60, "AP-2") for s in (0, 30, 60, 90)]
        values += [probe(T0 + 120_000, mac, -60, "C-1")]
        values += [probe(T0 + s * 1000, mac, -60) for s in (150, 180)]
    values += [probe(T0 + 600_000, PHONE, -60, "C-1"), probe(T0 + 960_000, PHONE, -60, "C-1")]
    values += [probe(T0 + s * 1000, PHONE, -60) for s in range(660, 901, 60)]
    out, _ = run([batch("wifi.probes", 0, sorted(values, key=lambda v: json.loads(v)["ts"]))])
    # (the walkers' S1 stays, 150..180, are too short to be visits)
    assert [(v.start_ts - T0, v.end_ts - T0, v.dwell_s) for v in of(Visit, out) if v.store_id == "S1"] == [
        (620_609, 939_391, 318.8)
    ]


def test_visitors_inside_do_not_depend_on_how_minutes_are_closed() -> None:
    # Two visits of one phone to S1, 12:00-12:05 and 12:25-12:30 (20 minutes apart, over the
    # 600 s timeout). At 12:25 it has just come back: not inside for the minimum dwell yet,
    # whether the first visit was closed before that minute (reads of one minute each) or
    # not (one read, everything closed at the end).
    values = [probe(T0 + s * 1000, PHONE, -60) for s in [*range(0, 301, 30), *range(1500, 1801, 30)]]
    one_read, _ = run([batch("wifi.probes", 0, values)])
    per_minute = [
        batch("wifi.probes", 0, [v for v in values if m * MIN <= json.loads(v)["ts"] - T0 < (m + 1) * MIN], 0)
        for m in range(31)
    ]
    minute_reads, _ = run([b for b in per_minute if b.messages])
    inside = {
        name: {m.minute_ts - T0: m.visitors_inside for m in of(FootfallMinute, out) if m.scope == "store"}
        for name, out in (("one read", one_read), ("minute reads", minute_reads))
    }
    assert inside["one read"] == inside["minute reads"]
    # inside from the 2nd minute of each visit (120 s after its first probe), not at 12:25
    assert [inside["one read"][m * MIN] for m in (0, 1, 2, 25, 26, 27)] == [0, 1, 1, 0, 1, 1]
