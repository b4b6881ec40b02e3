"""Member visits: device visits credited through the device binding, then stores visited and
last seen per member. Literal records in, exact outputs out (worked by hand from the rules
in flows/member_visits.py); the steps in a dataflow with erasures checked in the snapshots;
footfall's emission of device visits; the Redis sink through a real redis-server."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import redis
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from connectors.catalog import Catalog
from connectors.records import DeviceBinding, DeviceVisit, Sighting, SiteBatch
from connectors.schemas import MemberVisits, Visit, VisitsErased
from flows.clock import EventClock
from flows.footfall import SiteFootfall
from flows.member_visits import (
    HISTORY_KEPT,
    STORES_KEPT,
    DeviceHistory,
    DeviceLogic,
    DeviceSnapshot,
    MemberVisit,
    MemberVisitsLogic,
    MemberVisitsSnapshot,
    MemberVisitsState,
    build_device_logic,
    build_member_visits_logic,
    resolve_devices,
    track_member_visits,
)
from flows.redis_sinks import RedisMemberVisitsSink
from state.member_visits import MemberVisitsStore
from state.redis import Backoff
from storepulse.health import Readiness
from tests.fixtures.redis import RedisServer
from tests.flows.test_outputs import write_through_an_outage
from tests.flows.test_profiles import snaps

T0 = 1_763_870_400_000  # 2025-11-23 04:00:00 UTC
MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def bind(device: int, member: str, ts: int) -> DeviceBinding:
    return DeviceBinding(device, member, ts, True)


def unbind(device: int, member: str, ts: int) -> DeviceBinding:
    return DeviceBinding(device, member, ts, False)


def erased(device: int, member: str, ts: int) -> DeviceBinding:
    return DeviceBinding(device, member, ts, False, erased=True)


def visit(device: int, store: str, start: int, end: int) -> DeviceVisit:
    return DeviceVisit(device, store, start, end)


def credited(*batches: Sequence[DeviceBinding | DeviceVisit]) -> list[tuple[str, str, int]]:
    """(member, store, start) credited by one device's step, batch by batch."""
    logic = DeviceLogic(None, now=lambda: NOW)
    out: list[tuple[str, str, int]] = []
    for values in batches:
        items, _ = logic.on_batch(list(values))
        out += [(member, v.store_id, v.start_ts) for member, v in items]
    return out


# ---- footfall emits device visits ---------------------------------------------------

CATALOG = Catalog.from_yaml("""
malls: [{mall_id: M1, name: Joy, tz: UTC, lat: 0, lon: 0}]
stores:
  - {store_id: S1, merchant_id: X, mall_id: M1, name: Beans, category: coffee, tz: UTC, lat: 0, lon: 0}
sensors:
  - {sensor_id: AP-1, mall_id: M1, store_id: S1, zone: S1-floor, lat: 0, lon: 0,
     visit_rssi: -70, min_dwell_s: 120, visit_timeout_s: 300}
""")


def test_footfall_emits_a_device_visit_per_closed_visit_of_a_stable_device_only() -> None:
    # Device 7 (stable) and device 9 (randomised) each probe inside S1 every 30 s from
    # T0+60 s to T0+210 s (6 probes), heard nowhere else: one mean interval (30 s) is added
    # at each end, so each visit is T0+30 s .. T0+240 s (210 s >= the 120 s minimum dwell).
    sightings = [
        Sighting(T0 + s * 1000, "AP-1", "S1", "S1-floor", device, randomized, -60, None, 0, 0)
        for s in (60, 90, 120, 150, 180, 210)
        for device, randomized in ((7, False), (9, True))
    ]
    site = SiteFootfall("M1", MIN, clock=EventClock(expected={"wifi.probes/0"}))
    out = site.process(SiteBatch(site="M1", source="wifi.probes/0", progress_ts=T0, sightings=sightings), CATALOG)
    assert [o for o in out if isinstance(o, DeviceVisit | Visit)] == []  # nothing closed yet
    out = site.flush(CATALOG)
    assert [(v.randomized, v.start_ts, v.end_ts) for v in out if isinstance(v, Visit)] == [
        (False, T0 + 30_000, T0 + 240_000),
        (True, T0 + 30_000, T0 + 240_000),
    ]
    assert [o for o in out if isinstance(o, DeviceVisit)] == [DeviceVisit(7, "S1", T0 + 30_000, T0 + 240_000)]


# ---- resolving devices: the rules, one device at a time -----------------------------


def test_bind_then_visit_is_credited() -> None:
    assert credited([bind(42, "M1", T0)], [visit(42, "S1", T0 + MIN, T0 + 5 * MIN)]) == [("M1", "S1", T0 + MIN)]


def test_a_visit_that_began_before_the_bind_is_not_credited() -> None:
    # bound at T0 + 2 min, the visit began at T0 + 1 min: the newest event <= its start is none
    assert credited([bind(42, "M1", T0 + 2 * MIN)], [visit(42, "S1", T0 + MIN, T0 + 5 * MIN)]) == []
    # at exactly the bind's ts it is (<=)
    assert credited([bind(42, "M1", T0 + MIN)], [visit(42, "S1", T0 + MIN, T0 + 5 * MIN)]) == [("M1", "S1", T0 + MIN)]


def test_a_visit_then_a_late_bind_in_one_batch_is_credited_by_event_time() -> None:
    # the visit arrives first; the bind (event time T0, before the visit) after it, in the
    # same batch: bindings are applied first, so the visit is credited
    assert credited([visit(42, "S1", T0 + MIN, T0 + 5 * MIN), bind(42, "M1", T0)]) == [("M1", "S1", T0 + MIN)]


def test_binding_events_count_by_event_time_not_arrival() -> None:
    # Arriving out of ts order, in three batches: M2's bind at T0 + 3 h, then M1's bind at
    # T0, then M1's unbind at T0 + 1 h. Visits beginning at T0 + 30 min (M1's), T0 + 2 h
    # (nobody's) and T0 + 4 h (M2's).
    visits = [visit(42, "S1", T0 + 30 * MIN, T0 + 40 * MIN), visit(42, "S2", T0 + 2 * HOUR, T0 + 3 * HOUR),
              visit(42, "S3", T0 + 4 * HOUR, T0 + 5 * HOUR)]  # fmt: skip
    out = credited([bind(42, "M2", T0 + 3 * HOUR)], [bind(42, "M1", T0)], [unbind(42, "M1", T0 + HOUR)], visits)
    assert out == [("M1", "S1", T0 + 30 * MIN), ("M2", "S3", T0 + 4 * HOUR)]
    # the bind and unbind in one batch, reversed
    out = credited([unbind(42, "M1", T0 + HOUR), bind(42, "M1", T0)], visits[:2])
    assert out == [("M1", "S1", T0 + 30 * MIN)]


def test_unbind_then_visit_is_not_credited() -> None:
    out = credited(
        [bind(42, "M1", T0)],
        [unbind(42, "M1", T0 + HOUR)],
        [visit(42, "S1", T0 + 2 * HOUR, T0 + 3 * HOUR)],
    )
    assert out == []


def test_rebind_to_another_member_credits_each_in_their_time() -> None:
    # M1 binds at T0 and never unbinds; M2 binds the same device at T0 + 1 day
    out = credited(
        [bind(42, "M1", T0), bind(42, "M2", T0 + DAY)],
        [visit(42, "S1", T0 + HOUR, T0 + 2 * HOUR), visit(42, "S2", T0 + DAY + HOUR, T0 + DAY + 2 * HOUR)],
    )
    assert out == [("M1", "S1", T0 + HOUR), ("M2", "S2", T0 + DAY + HOUR)]


def test_equal_ts_the_later_arrival_wins() -> None:
    assert credited([bind(42, "M1", T0), unbind(42, "M1", T0)], [visit(42, "S1", T0, T0 + MIN)]) == []
    assert credited([unbind(42, "M1", T0), bind(42, "M1", T0)], [visit(42, "S1", T0, T0 + MIN)]) == [("M1", "S1", T0)]


def test_a_device_without_a_bind_holds_no_state() -> None:
    # never bound: a visit writes nothing and the key is discarded
    assert DeviceLogic(None).on_batch([visit(42, "S1", T0, T0 + MIN)]) == ([], DeviceLogic.DISCARD)
    # only an unbind: nothing it could credit, discarded
    assert DeviceLogic(None).on_batch([unbind(42, "M1", T0)]) == ([], DeviceLogic.DISCARD)
    # a bind: kept
    assert DeviceLogic(None).on_batch([bind(42, "M1", T0)]) == ([], DeviceLogic.RETAIN)


def test_the_history_keeps_the_20_newest_binding_events() -> None:
    h = DeviceHistory()
    for i in range(HISTORY_KEPT + 1):  # binds of M0..M20 at T0 + i min
        h.apply(bind(42, f"M{i}", T0 + i * MIN))
    assert len(h.events) == HISTORY_KEPT and h.events[0].member_id == "M1"  # M0's went
    assert h.member_at(T0 + 30 * 1000) is None  # before the oldest kept event: unknown
    h.apply(bind(42, "OLD", T0 - DAY))  # older than the 20th: changes nothing
    assert len(h.events) == HISTORY_KEPT and h.events[0].member_id == "M1"
    h.apply(bind(42, "M5", T0 + 5 * MIN))  # a replay of a kept event: changes nothing
    assert [e.member_id for e in h.events] == [f"M{i}" for i in range(1, HISTORY_KEPT + 1)]


def test_an_erasure_names_nobody_and_does_not_revive_an_older_bind() -> None:
    # M1 bound at T0, M2 at T0 + 1 day (M1 never unbound); M2 erased at T0 + 2 days. A visit
    # at T0 + 3 days was M2's time: not credited to anyone (not to M1), and M2 is gone.
    logic = DeviceLogic(None, now=lambda: NOW)
    logic.on_batch([bind(42, "M1", T0), bind(42, "M2", T0 + DAY)])
    out, keep = logic.on_batch([erased(42, "M2", T0 + 2 * DAY), visit(42, "S1", T0 + 3 * DAY, T0 + 3 * DAY + HOUR)])
    assert (out, keep) == ([], DeviceLogic.RETAIN)  # M1's bind remains
    assert b"M2" not in logic.snapshot() and b"M1" in logic.snapshot()
    out, _ = logic.on_batch([visit(42, "S2", T0 + HOUR, T0 + 2 * HOUR)])  # M1's time still M1's
    assert out == [("M1", MemberVisit("M1", "S2", T0 + HOUR, T0 + 2 * HOUR))]


def test_an_erasure_keeps_the_members_events_after_it() -> None:
    # M1 bound at T0 and, after being erased at T0 + 1 day, again at T0 + 2 days (the member
    # step sends the new bind before the erase when the erase arrives late)
    logic = DeviceLogic(None, now=lambda: NOW)
    logic.on_batch([bind(42, "M1", T0), bind(42, "M1", T0 + 2 * DAY)])
    logic.on_batch([erased(42, "M1", T0 + DAY)])
    out, _ = logic.on_batch(
        [visit(42, "S1", T0 + HOUR, T0 + 2 * HOUR), visit(42, "S2", T0 + 3 * DAY, T0 + 3 * DAY + 1)]
    )
    assert [(m, v.store_id) for m, v in out] == [("M1", "S2")]


def test_an_erasure_of_the_only_member_discards_the_device() -> None:
    logic = DeviceLogic(None, now=lambda: NOW)
    logic.on_batch([bind(42, "M1", T0)])
    assert logic.on_batch([erased(42, "M1", T0 + DAY)]) == ([], DeviceLogic.DISCARD)


def test_an_unbound_device_is_kept_for_late_visits_then_discarded() -> None:
    clock = [NOW]
    logic = DeviceLogic(None, retain=timedelta(days=8), now=lambda: clock[0])
    logic.on_batch([bind(42, "M1", T0)])
    assert logic.notify_at() is None  # bound: kept while bound
    logic.on_batch([unbind(42, "M1", T0 + HOUR)])
    assert logic.notify_at() == NOW + timedelta(days=8)
    # a visit from while it was bound arrives late, and is credited
    out, _ = logic.on_batch([visit(42, "S1", T0 + MIN, T0 + 2 * MIN)])
    assert [m for m, _ in out] == ["M1"]
    resumed = build_device_logic(logic.snapshot())  # the deadline survives a snapshot
    assert resumed.notify_at() == NOW + timedelta(days=8)
    assert resumed.on_notify() == ([], DeviceLogic.DISCARD)
    # bound again before the deadline: kept
    logic.on_batch([bind(42, "M1", T0 + 2 * HOUR)])
    assert logic.notify_at() is None and logic.on_notify() == ([], DeviceLogic.RETAIN)


def test_device_state_round_trips_through_pickle() -> None:
    logic = DeviceLogic(None, now=lambda: NOW)
    logic.on_batch([bind(42, "M1", T0), unbind(42, "M1", T0 + DAY)])
    snap = pickle.loads(logic.snapshot())
    assert isinstance(snap, DeviceSnapshot) and snap.history == logic.history and snap.unbound_until is not None


# ---- member visits ------------------------------------------------------------------


def mv(member: str, store: str, start: int, end: int) -> MemberVisit:
    return MemberVisit(member, store, start, end)


def test_stores_visited_and_last_seen() -> None:
    # M1: S2 ending T0 + 2 h, S1 ending T0 + 1 h, S2 again ending T0 + 30 min (older: S2
    # stays at 2 h). Last seen: S2 at T0 + 2 h.
    logic = MemberVisitsLogic(None, now=lambda: NOW)
    out, _ = logic.on_batch([mv("M1", "S2", T0, T0 + 2 * HOUR), mv("M1", "S1", T0, T0 + HOUR)])
    out2, _ = logic.on_batch([mv("M1", "S2", T0, T0 + 30 * MIN)])
    expected = MemberVisits(
        member_id="M1", as_of_ts=T0 + 2 * HOUR, stores_visited=("S1", "S2"), last_seen_ts=T0 + 2 * HOUR,
        last_seen_store="S2",
    )  # fmt: skip
    assert out == [expected] and out2 == [expected]  # one absolute record per batch
    # a tie on the newest end: the smaller store id is the one last seen
    out3, _ = logic.on_batch([mv("M1", "S0", T0, T0 + 2 * HOUR)])
    assert out3 == [
        MemberVisits(member_id="M1", as_of_ts=T0 + 2 * HOUR, stores_visited=("S0", "S1", "S2"),
                     last_seen_ts=T0 + 2 * HOUR, last_seen_store="S0"),
    ]  # fmt: skip


def test_stores_keep_the_100_most_recently_visited() -> None:
    state = MemberVisitsState()
    for i in range(STORES_KEPT):  # S000..S099 ending at T0 + i min
        state.visit(mv("M1", f"S{i:03d}", T0, T0 + i * MIN))
    state.visit(mv("M1", "S100", T0, T0 + STORES_KEPT * MIN))  # the 101st: S000 goes
    record = state.record("M1")
    assert record is not None and len(record.stores_visited) == STORES_KEPT
    assert "S000" not in record.stores_visited and "S100" in record.stores_visited
    state.visit(mv("M1", "OLD", T0, T0))  # older than every kept store: goes at once
    assert "OLD" not in state.stores and len(state.stores) == STORES_KEPT
    # ties at the bound: the larger store id goes
    tied = MemberVisitsState()
    for i in range(STORES_KEPT + 1):
        tied.visit(mv("M1", f"S{i:03d}", T0, T0))
    assert "S100" not in tied.stores and "S000" in tied.stores


def test_an_erasure_forgets_visits_up_to_it_and_drops_later_arriving_older_ones() -> None:
    # M1 visited S1 (ends T0 + 1 h) and S2 (ends T0 + 3 h); erased at E = T0 + 2 h: S1 goes,
    # S2 stays (it ended after E). Then S3 ending T0 + 90 min arrives late (<= E: dropped)
    # and S4 ending T0 + 4 h (> E: kept).
    logic = MemberVisitsLogic(None, now=lambda: NOW)
    logic.on_batch([mv("M1", "S1", T0, T0 + HOUR), mv("M1", "S2", T0, T0 + 3 * HOUR)])
    out, keep = logic.on_batch([VisitsErased(member_id="M1", ts=T0 + 2 * HOUR)])
    assert out == [
        VisitsErased(member_id="M1", ts=T0 + 2 * HOUR),
        MemberVisits(member_id="M1", as_of_ts=T0 + 3 * HOUR, stores_visited=("S2",), last_seen_ts=T0 + 3 * HOUR,
                     last_seen_store="S2"),
    ]  # fmt: skip
    now_s2_s4 = MemberVisits(member_id="M1", as_of_ts=T0 + 4 * HOUR, stores_visited=("S2", "S4"),
                             last_seen_ts=T0 + 4 * HOUR, last_seen_store="S4")  # fmt: skip
    out, _ = logic.on_batch([mv("M1", "S3", T0, T0 + 90 * MIN), mv("M1", "S4", T0, T0 + 4 * HOUR)])
    assert out == [now_s2_s4]
    # an older erasure changes nothing; the ts in force is the newer one
    out, _ = logic.on_batch([VisitsErased(member_id="M1", ts=T0)])
    assert out == [VisitsErased(member_id="M1", ts=T0 + 2 * HOUR), now_s2_s4]


def test_an_erasure_of_everything_leaves_only_the_tombstone_until_its_notify() -> None:
    logic = MemberVisitsLogic(None, tombstone=timedelta(days=8), now=lambda: NOW)
    logic.on_batch([mv("M1", "S1", T0, T0 + HOUR)])
    assert logic.notify_at() is None
    out, keep = logic.on_batch([VisitsErased(member_id="M1", ts=T0 + DAY)])
    assert (out, keep) == ([VisitsErased(member_id="M1", ts=T0 + DAY)], MemberVisitsLogic.RETAIN)
    assert logic.state == MemberVisitsState(stores={}, erased_ts=T0 + DAY)
    out, _ = logic.on_batch([mv("M1", "S1", T0, T0 + 2 * HOUR)])  # older than E: dropped, no record
    assert out == []
    resumed = build_member_visits_logic(logic.snapshot())
    assert isinstance(pickle.loads(logic.snapshot()), MemberVisitsSnapshot)
    assert resumed.notify_at() == NOW + timedelta(days=8)
    assert resumed.on_notify() == ([], MemberVisitsLogic.DISCARD)


# ---- both steps in a dataflow -------------------------------------------------------


def run_steps(
    items: list[Any], out: list[Any], recovery: RecoveryConfig | None = None, *, retain_s: float = 8 * 86_400,
    tombstone_s: float = 8 * 86_400,
) -> None:  # fmt: skip
    """``items``: DeviceBinding, DeviceVisit, or ("erase", member, E) (the member step
    sends DeviceBinding(erased) to each of the member's devices and (member, E))."""
    flow = Dataflow("member_visits_test")
    source = op.input("read", flow, TestingSource(items))
    bindings = op.filter("bindings", source, lambda i: isinstance(i, DeviceBinding))
    visits = op.filter("visits", source, lambda i: isinstance(i, DeviceVisit))
    erasures = op.filter_map("erasures", source, lambda i: (i[1], i[2]) if isinstance(i, tuple) else None)
    member_visits = resolve_devices("resolve_devices", bindings, visits, retain_s=retain_s)
    records = track_member_visits("track_member_visits", member_visits, erasures, tombstone_s=tombstone_s)
    op.output("write", records, TestingSink(out))
    run_main(flow, epoch_interval=None if recovery is None else timedelta(0), recovery_config=recovery)


def newest_snapshot(recovery_dir: Path, step: str, key: str) -> tuple[int, bytes | None]:
    rows = sorted((epoch, change) for s, k, epoch, change in snaps(recovery_dir) if s.endswith(f".{step}") and k == key)
    assert rows, f"no snapshot of {step} {key}"
    return rows[-1]


def test_the_steps_in_a_dataflow() -> None:
    items = [
        bind(42, "M1", T0),
        visit(42, "S1", T0 + MIN, T0 + 10 * MIN),
        visit(99, "S1", T0 + MIN, T0 + 10 * MIN),  # never bound
        bind(43, "M1", T0),
        visit(43, "S2", T0 + HOUR, T0 + 2 * HOUR),
        unbind(42, "M1", T0 + DAY),
        visit(42, "S3", T0 + 2 * DAY, T0 + 2 * DAY + HOUR),  # after the unbind
    ]
    out: list[Any] = []
    run_steps(items, out)
    assert out[-1] == MemberVisits(
        member_id="M1", as_of_ts=T0 + 2 * HOUR, stores_visited=("S1", "S2"), last_seen_ts=T0 + 2 * HOUR,
        last_seen_store="S2",
    )  # fmt: skip
    assert {o.member_id for o in out} == {"M1"}


def test_an_erasure_leaves_no_state_naming_the_member(tmp_path: Path) -> None:
    # Epoch after every item. M1 binds device 42 and visits S1 through it; M2 binds 43 and
    # visits S2; M1 is erased at E = T0 + 1 day; a late visit of 42 (before E) comes; M2
    # visits again (an epoch after the erase).
    items: list[Any] = [
        bind(42, "MEMBER-ONE", T0),
        visit(42, "STORE-OF-M1", T0 + MIN, T0 + 10 * MIN),
        bind(43, "M2", T0),
        visit(43, "S2", T0 + MIN, T0 + 10 * MIN),
        erased(42, "MEMBER-ONE", T0 + DAY),
        ("erase", "MEMBER-ONE", T0 + DAY),
        visit(42, "S9", T0 + HOUR, T0 + 2 * HOUR),
        visit(43, "S3", T0 + DAY, T0 + DAY + HOUR),
    ]
    # Control run without the erasure: device 42 and member MEMBER-ONE hold what names them.
    (tmp_path / "control").mkdir()
    init_db_dir(tmp_path / "control", 1)
    control_out: list[Any] = []
    run_steps([i for i in items if i not in items[4:6]], control_out, RecoveryConfig(str(tmp_path / "control")))
    _, device = newest_snapshot(tmp_path / "control", "resolve_devices", "42")
    _, member = newest_snapshot(tmp_path / "control", "track_member_visits", "MEMBER-ONE")
    assert device is not None and b"MEMBER-ONE" in device
    assert member is not None and b"STORE-OF-M1" in member
    assert [o.stores_visited for o in control_out if o.member_id == "MEMBER-ONE"][-1] == ("S9", "STORE-OF-M1")

    # With the erasure: the device key is deleted at once (nobody left to credit), the member
    # key holds the erase ts and nothing else (the late visit was not credited).
    (tmp_path / "erased").mkdir()
    init_db_dir(tmp_path / "erased", 1)
    out: list[Any] = []
    run_steps(items, out, RecoveryConfig(str(tmp_path / "erased")))
    assert VisitsErased(member_id="MEMBER-ONE", ts=T0 + DAY) in out
    assert [o.stores_visited for o in out if isinstance(o, MemberVisits) and o.member_id == "MEMBER-ONE"] == [
        ("STORE-OF-M1",)
    ]
    assert newest_snapshot(tmp_path / "erased", "resolve_devices", "42")[1] is None
    _, member = newest_snapshot(tmp_path / "erased", "track_member_visits", "MEMBER-ONE")
    assert member is not None and b"STORE-OF-M1" not in member
    tombstone = pickle.loads(pickle.loads(member))
    assert tombstone.state == MemberVisitsState(stores={}, erased_ts=T0 + DAY)

    # A tombstone of 0 s: discarded on the next activation, the newest snapshot a deletion.
    (tmp_path / "expired").mkdir()
    init_db_dir(tmp_path / "expired", 1)
    run_steps(items, [], RecoveryConfig(str(tmp_path / "expired")), tombstone_s=0)
    assert newest_snapshot(tmp_path / "expired", "track_member_visits", "MEMBER-ONE")[1] is None


def test_an_unbound_device_is_discarded_after_its_retention(tmp_path: Path) -> None:
    items = [bind(42, "M1", T0), unbind(42, "M1", T0 + HOUR), bind(43, "M2", T0), visit(43, "S1", T0, T0 + 1)]
    init_db_dir(tmp_path, 1)
    run_steps(items, [], RecoveryConfig(str(tmp_path)), retain_s=0)
    assert newest_snapshot(tmp_path, "resolve_devices", "42")[1] is None
    assert newest_snapshot(tmp_path, "resolve_devices", "43")[1] is not None  # bound: kept


def test_the_steps_resume_after_a_crash(tmp_path: Path) -> None:
    items: list[Any] = [
        bind(42, "M1", T0),
        visit(42, "S1", T0 + MIN, T0 + 10 * MIN),
        visit(42, "S2", T0 + HOUR, T0 + 2 * HOUR),
        unbind(42, "M1", T0 + DAY),
        visit(42, "S3", T0 + 2 * DAY, T0 + 3 * DAY),  # not credited
        visit(42, "S4", T0 + 3 * HOUR, T0 + 4 * HOUR),  # late, while bound: credited
    ]
    expected: list[Any] = []
    run_steps(items, expected)
    assert expected[-1].stores_visited == ("S1", "S2", "S4") and expected[-1].last_seen_store == "S4"
    init_db_dir(tmp_path, 1)
    crashing = items[:3] + [TestingSource.ABORT()] + items[3:]
    first: list[Any] = []
    run_steps(crashing, first, RecoveryConfig(str(tmp_path)))
    second: list[Any] = []
    run_steps(crashing, second, RecoveryConfig(str(tmp_path)))
    assert (first + second)[-1] == expected[-1]
    assert set(map(repr, first + second)) <= set(map(repr, expected))


# ---- the Redis sink -----------------------------------------------------------------

ALICE = MemberVisits(member_id="ALICE", as_of_ts=T0 + HOUR, stores_visited=("S1", "S2"), last_seen_ts=T0 + HOUR,
                     last_seen_store="S2")  # fmt: skip


def test_the_sink_writes_visits_and_erasures_and_ignores_other_items(redis_server, redis_client) -> None:
    readiness = Readiness()
    part = RedisMemberVisitsSink(redis_server.url, readiness=readiness).build("write_member_visits_redis", 0, 1)
    assert readiness.report().ready and readiness.is_up("redis-visits[0]")
    part.write_batch([ALICE, "not a record", visit(42, "S1", T0, T0 + 1)])
    store = MemberVisitsStore(redis_client)
    assert store.read("ALICE") == ALICE
    assert sorted(redis_client.keys("*")) == [b"sp:member:{ALICE}:visits"]
    part.write_batch([VisitsErased(member_id="ALICE", ts=T0 + DAY)])
    assert store.read("ALICE") is None
    part.close()


def test_the_sink_holds_its_batch_through_a_redis_outage(make_redis_server) -> None:
    server: RedisServer = make_redis_server()
    readiness = Readiness()
    sink = RedisMemberVisitsSink(server.url, backoff=Backoff(base_s=0.01, cap_s=0.1), readiness=readiness)
    part = sink.build("write_member_visits_redis", 0, 1)
    write_through_an_outage(part, server, ALICE, readiness, "redis-visits[0]")
    assert MemberVisitsStore(redis.Redis.from_url(server.url)).read("ALICE") == ALICE
    part.close()
