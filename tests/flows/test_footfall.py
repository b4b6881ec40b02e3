"""Footfall flow: literal events in, exact outputs out (expected values worked by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bytewax.recovery import RecoveryConfig
from bytewax.testing import TestingSink, TestingSource, run_main

from connectors.catalog import Catalog
from connectors.records import DeviceVisit, PartitionId, RawBatch, RawMessage
from connectors.schemas import DeadLetter, FootfallMinute, StoreHour, Visit
from flows.engine import Sinks, Sources, build_flow
from flows.testing import ScriptedReads, run_reads
from storepulse.settings import Settings

CATALOG_YAML = """
malls: [{mall_id: M1, name: Joy, tz: Asia/Shanghai, lat: 0, lon: 0}]
stores:
  - {store_id: S1, merchant_id: X, mall_id: M1, name: Beans, category: coffee, tz: Asia/Shanghai, lat: 0, lon: 0}
  - {store_id: S2, merchant_id: Y, mall_id: M1, name: Books, category: books, tz: Asia/Shanghai, lat: 0, lon: 0}
sensors:
  - {sensor_id: AP-1, mall_id: M1, store_id: S1, zone: S1-floor, lat: 0, lon: 0,
     visit_rssi: -70, min_dwell_s: 120, visit_timeout_s: 300}
  - {sensor_id: AP-2, mall_id: M1, store_id: S2, zone: S2-floor, lat: 0, lon: 0}
  - {sensor_id: C-1, mall_id: M1, zone: M1-corridor, lat: 0, lon: 0}
"""
CATALOG = Catalog.from_yaml(CATALOG_YAML)
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


def run(probes: list, txns: list | None = None, recovery: RecoveryConfig | None = None, **kw):
    """Run the engine over literal partition reads; the partitions are those the reads name."""
    return run_reads(SETTINGS, CATALOG, probes, txns, recovery=recovery, **kw)


def of(kind: type, items: list) -> list:
    return [i for i in items if isinstance(i, kind)]


def heard(items: list) -> dict:
    """The minutes in which a scope heard a device or made a sale, by (scope, id, minute).
    The others are the zero minutes written for quiet scopes at each close, which depend
    on when minutes close; these must not."""
    return {(m.scope, m.scope_id, m.minute_ts): m for m in of(FootfallMinute, items) if m.devices or m.sales}


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
    # The stable phone's visit also went to member visits, as a DeviceVisit (its device
    # id): split off before the footfall sinks, which never see a device id.
    assert of(DeviceVisit, out) == []
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
    assert heard(out_ahead) == heard(out_inter)


def idle(topic: str, partition: int) -> RawBatch:
    """What a source emits for a partition with nothing new for its idle timeout."""
    return RawBatch(topic=topic, partition=partition, messages=[], idle=True)


def closed_before_abort(probes: list, txns: list | None = None, **kw) -> list[int]:
    """Mall minutes (from T0) the engine wrote before the reads stop without an end of
    input (no flush): what a running engine has written by then."""
    out, dead = run([*probes, TestingSource.ABORT()], txns, **kw)
    assert dead == []
    return sorted({m.minute_ts - T0 for m in of(FootfallMinute, out) if m.scope == "mall"})


# Thirty minutes of one phone in S1, read as six partition reads of five minutes each.
HALF_HOUR = [probe(T0 + s * 1000, PHONE, -60) for s in range(0, 1800, 30)]
LIVE_READS = [batch("wifi.probes", 0, HALF_HOUR[i : i + 10], first_offset=i) for i in range(0, 60, 10)]
# Event time reaches 12:29:30; with 60 s lateness, minutes up to 12:27 close (12:28 is open).
CLOSED_LIVE = [m * MIN for m in range(28)]


def test_an_empty_transactions_topic_does_not_stall_footfall() -> None:
    # pos.transactions/0 never carries a record: the source says it is idle, and every site
    # stops waiting for it. Without that, no minute closes while the engine runs.
    txns = [idle("pos.transactions", 0)]
    assert closed_before_abort(LIVE_READS, txns) == CLOSED_LIVE


def test_a_probes_partition_that_never_carries_data_does_not_stall_footfall() -> None:
    # wifi.probes/1 exists, is read, and is empty: its idle report releases every site.
    reads = [idle("wifi.probes", 1), *LIVE_READS]
    assert closed_before_abort(reads) == CLOSED_LIVE
    # Until it has reported once, a site waits for it (it might carry older records).
    assert closed_before_abort(LIVE_READS, also=[PartitionId("wifi.probes", 1)]) == []


def test_a_sale_on_a_partition_that_was_idle_is_counted_not_late() -> None:
    # The transactions partition is idle from the start; its first sale, at 12:29:30, comes
    # whenever it comes relative to the probe reads: nothing stalls and it is not late.
    # (That the engine writes minutes before such a first record arrives is shown against
    # the real broker in tests/integration/test_quiet_inputs.py.)
    txns = [idle("pos.transactions", 0), batch("pos.transactions", 0, [sale(T0 + 29 * MIN + 30_000, "T1", 990)])]
    assert closed_before_abort(LIVE_READS, txns) == CLOSED_LIVE
    out, dead = run(LIVE_READS, txns)
    assert dead == []
    mall_sales = [(m.minute_ts - T0, m.sales, m.sales_amount) for m in heard(out).values() if m.scope == "mall"]
    assert [s for s in mall_sales if s[1]] == [(29 * MIN, 1, 990)]


def test_a_partition_carrying_only_other_sites_records_still_holds_a_site_back_in_a_backlog() -> None:
    # Partition 1 carries only mall M2's records at first, then M1's from 12:05. Read with
    # partition 0 two hours ahead (a backlog), M1 must still wait for partition 1: its
    # 12:05 records are not late, and M1's minutes equal those of reading in time order.
    two_malls = Catalog.from_yaml(
        CATALOG_YAML.replace("malls: [", "malls: [{mall_id: M2, name: Two, tz: UTC, lat: 0, lon: 0}, ")
        + "  - {sensor_id: M2-1, mall_id: M2, zone: M2-hall, lat: 0, lon: 0}\n"
    )
    p0 = [probe(T0 + s * 1000, PHONE, -60) for s in range(0, 7200, 30)]
    p1_m2 = [probe(T0 + s * 1000, RANDOM_A, -70, "M2-1") for s in range(0, 300, 30)]
    p1_m1 = [probe(T0 + 5 * MIN + s * 1000, RANDOM_B, -62, "AP-2") for s in range(0, 600, 30)]
    ahead = [batch("wifi.probes", 1, p1_m2), batch("wifi.probes", 0, p0), batch("wifi.probes", 1, p1_m1, 10)]
    in_order = [
        batch("wifi.probes", 1, p1_m2),
        batch("wifi.probes", 0, p0[:40]),
        batch("wifi.probes", 1, p1_m1, 10),
        batch("wifi.probes", 0, p0[40:], 40),
    ]
    out_ahead, dead_ahead = run_reads(SETTINGS, two_malls, ahead)
    out_order, dead_order = run_reads(SETTINGS, two_malls, in_order)
    assert dead_ahead == dead_order == []
    assert heard(out_ahead) == heard(out_order)
    assert ("zone", "S2-floor", T0 + 5 * MIN) in heard(out_ahead)


def skewed_reads(fast_ms: int) -> list[RawBatch]:
    """45 minutes of AP-1 (S1) and AP-2 (S2) on one partition, one probe each per 10 s, read
    live: each read holds what arrived in those 10 s. AP-2's clock is ``fast_ms`` ahead."""
    return [
        batch(
            "wifi.probes",
            0,
            [probe(T0 + s * 1000, PHONE, -60, "AP-1"), probe(T0 + s * 1000 + fast_ms, RANDOM_A, -60, "AP-2")],
            first_offset=s // 5,
        )
        for s in range(0, 45 * 60, 10)
    ]


def test_one_sensor_clock_running_fast_does_not_make_its_partition_mates_late() -> None:
    # AP-2 two minutes fast (inside the accepted 300 s skew). Before, the partition's
    # progress was AP-2's clock, and AP-1's records fell 120 s behind a 60 s lateness.
    # Only the event-time rule may release a sensor here (no wall-clock idleness).
    settings = Settings(mac_hash_key=b"test-key", max_event_age_s=1e10, idle_partition_s=1e9)
    correct, dead_correct = run_reads(settings, CATALOG, skewed_reads(0))
    skewed, dead_skewed = run_reads(settings, CATALOG, skewed_reads(120_000))
    assert dead_correct == dead_skewed == []
    s1 = {k: m for k, m in heard(skewed).items() if k[1] in ("S1", "S1-floor")}
    assert s1 == {k: m for k, m in heard(correct).items() if k[1] in ("S1", "S1-floor")}
    assert len(s1) == 2 * 45  # every minute of the store and its zone
    # AP-2's own minutes are where its clock puts them: two minutes later
    assert min(k[2] for k in heard(skewed) if k[1] == "S2-floor") == T0 + 2 * MIN
    # Two sources, one off by more than the accepted skew: the other is released and its
    # records are late (dead-lettered, counted). Three or more: see the next test.
    _, dead_far = run_reads(settings, CATALOG, skewed_reads(400_000))
    assert {d.reason for d in dead_far} == {"late"}


def test_a_clock_a_day_fast_in_a_backlog_releases_no_one() -> None:
    # Three sensors on one partition, read as a backlog (so no wall-clock check refuses the
    # future records): C-1 stamps a day ahead. The median decides who is behind, so AP-1
    # and AP-2 are not released and not late; C-1's records land where its clock says.
    day = 86_400_000
    settings = Settings(mac_hash_key=b"test-key", max_event_age_s=1e10, idle_partition_s=1e9)

    def reads(c1_fast_ms: int) -> list[RawBatch]:
        out = []
        for s in range(0, 30 * 60, 10):
            values = [probe(T0 + s * 1000, PHONE, -60, "AP-1"), probe(T0 + s * 1000, RANDOM_A, -60, "AP-2"),
                      probe(T0 + s * 1000 + c1_fast_ms, RANDOM_B, -80, "C-1")]
            out.append(batch("wifi.probes", 0, values, first_offset=s // 10 * 3))
        return out

    correct, _ = run_reads(settings, CATALOG, reads(0))
    fast, dead = run_reads(settings, CATALOG, reads(day))
    assert dead == []
    stores = {k: m for k, m in heard(fast).items() if k[0] == "store"}
    assert stores == {k: m for k, m in heard(correct).items() if k[0] == "store"}
    assert len(stores) == 2 * 30
    assert min(k[2] for k in heard(fast) if k[1] == "M1-corridor") == T0 + day


def test_a_quiet_store_shows_zero_at_the_newest_closed_minute_and_a_gap_costs_nothing() -> None:
    # The phone is in S1 from 12:00 to 12:09:30, then only the corridor hears anything, until
    # 12:29:30. S2 never hears a thing. Read in 5-minute reads, stopped without a flush.
    s1 = [probe(T0 + s * 1000, PHONE, -60) for s in range(0, 600, 30)]
    corridor = [probe(T0 + s * 1000, RANDOM_A, -80, "C-1") for s in range(600, 1800, 30)]
    values = s1 + corridor
    reads = [batch("wifi.probes", 0, values[i : i + 10], first_offset=i) for i in range(0, 60, 10)]
    out, _ = run([*reads, TestingSource.ABORT()])
    newest: dict = {}
    for m in of(FootfallMinute, out):  # the live view: each scope's newest minute
        newest[(m.scope, m.scope_id)] = m
    assert {k: m.minute_ts - T0 for k, m in newest.items()} == {
        k: 27 * MIN for k in [("mall", "M1"), ("store", "S1"), ("store", "S2"), ("zone", "S1-floor"),
                              ("zone", "S2-floor"), ("zone", "M1-corridor")]
    }
    # S1: nothing heard at 12:27, one device in the last hour (at 12:00-12:09), none in 15 min
    s1_live = newest[("store", "S1")]
    assert (s1_live.devices, s1_live.devices_15m, s1_live.devices_1h, s1_live.visitors_inside) == (0, 0, 1, 0)
    assert (newest[("zone", "M1-corridor")].devices, newest[("mall", "M1")].devices) == (1, 1)
    # A month without a sighting costs one record per scope, not one per empty minute.
    later = batch("wifi.probes", 0, [probe(T0 + 30 * 1440 * MIN + s * 1000, RANDOM_B, -80, "C-1")
                                     for s in range(0, 600, 30)], first_offset=60)
    out, _ = run([*reads, later, TestingSource.ABORT()])
    assert len(of(FootfallMinute, out)) < 400


def test_a_repeat_sent_after_its_minute_closed_is_a_duplicate_not_late() -> None:
    # T1 at 12:00 is counted; event time moves to 12:10 (minutes before 12:09 close); the
    # POS sends T1 again: it is a duplicate (counted as such), not a late record.
    first = batch("pos.transactions", 0, [sale(T0, "T1", 500), sale(T0 + 10 * MIN, "T2", 700)])
    again = batch("pos.transactions", 0, [sale(T0, "T1", 500)], first_offset=2)
    probes = batch("wifi.probes", 0, [probe(T0, PHONE, -90), probe(T0 + 10 * MIN, PHONE, -90)])
    out, dead = run([probes], [first, again])
    assert dead == []
    assert sum(m.sales_amount for m in heard(out).values() if m.scope == "store") == 1200


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
    a = [probe(T0 + s * 1000, RANDOM_A, -60, seq=100 + i, ie=ie["ie"], vendor_ie=ie["vendor_ie"])
         for i, s in enumerate(range(0, 300, 30))]
    b = [probe(T0 + s * 1000, RANDOM_B, -60, seq=110 + i, ie=ie["ie"], vendor_ie=ie["vendor_ie"])
         for i, s in enumerate(range(300, 600, 30))]
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

    from bytewax.recovery import init_db_dir

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
            probes=ScriptedReads(
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
        name: {key[2] - T0: m.visitors_inside for key, m in heard(out).items() if key[:2] == ("store", "S1")}
        for name, out in (("one read", one_read), ("minute reads", minute_reads))
    }
    assert inside["one read"] == inside["minute reads"]
    # inside from the 2nd minute of each visit (120 s after its first probe), not at 12:25
    assert [inside["one read"][m * MIN] for m in (0, 1, 2, 25, 26, 27)] == [0, 1, 1, 0, 1, 1]


def test_a_minute_snapshotted_before_refunds_and_payments_resumes_and_counts_them() -> None:
    import pickle

    from flows.footfall import Minute

    old = Minute()
    old.sales["S1"] = [2, 1200]  # [count, amount]: the layout before refunds were counted
    del old.__dict__["payments"]  # and no payment methods
    resumed = pickle.loads(pickle.dumps(old))
    assert resumed.sales == {"S1": [2, 1200, 0]} and resumed.payments == {}
