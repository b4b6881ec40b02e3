"""Visit rules of ``flows.visits``, table style: where one device was heard each second in,
visits out (start, end, dwell; seconds). Expected values are worked out by hand in the
comments from the rules in the module docstring; nothing here calls the code under test
to compute them.

Shared facts: rule = 120 s minimum dwell, 600 s timeout. A visit's start is the midpoint
between its first inside second and the nearest probe heard outside before it (within the
timeout), else its first second minus its mean probe interval ((last - first)/(n - 1));
likewise at the end.
"""

from __future__ import annotations

import math

import pytest

from flows.probing import crossing, walk_bursts
from flows.visits import Rule, VisitTracker

RULE = Rule(min_dwell_s=120, timeout_s=600)
Heard = list[tuple[int, str | None]]  # (second, store the device was inside, or None)


def feed(tracker: VisitTracker, heard: Heard, *, device: int = 1, randomized: bool = False) -> None:
    for second, store in heard:
        tracker.heard(device, second, store, RULE.timeout_s if store is not None else None)
        if store is not None:
            tracker.add(store, device, second * 1000, randomized, 0, None, RULE)


def visits(heard: Heard, *, randomized: bool = False, every_s: int | None = None) -> list[tuple]:
    """Visits of one device as (store, start, end, dwell) in seconds. ``every_s``: close
    as event time passes each multiple of it (as minutes close), not once at the end."""
    t = VisitTracker()
    out = []
    if every_s is None:
        feed(t, heard, randomized=randomized)
    else:
        last = heard[-1][0]
        for horizon in range(every_s, last + every_s + 1, every_s):
            feed(t, [h for h in heard if horizon - every_s <= h[0] < horizon], randomized=randomized)
            out += t.close(horizon_ms=horizon * 1000)
    out += t.close(horizon_ms=None)
    return sorted((v.store_id, v.start_ts / 1000, v.end_ts / 1000, v.dwell_s) for v in out)


def inside(store: str, *seconds: int) -> Heard:
    return [(s, store) for s in seconds]


def corridor(*seconds: int) -> Heard:
    return [(s, None) for s in seconds]


EVERY_30 = tuple(range(0, 301, 30))  # 0, 30, ..., 300: 11 probes, 30 s apart
LATER_30 = tuple(range(330, 631, 30))  # 330, ..., 630: 11 more

BURSTS = [
    # In S1 every 30 s; in between, S2's sensor hears it loudest at 310 and 311: one burst
    # (seconds within 2 s are one scan), so not inside elsewhere on two probes: one visit.
    # 0..630 in 22 probes, mean interval 30, nothing heard outside: -30 .. 660. (The S2
    # second is one burst between S1 probes: noise, no S2 visit.)
    ("one burst in two seconds", inside("S1", *EVERY_30) + inside("S2", 310, 311) + inside("S1", *LATER_30),
     [("S1", -30.0, 660.0, 690.0)]),
    # Two bursts at S2 (310, 320): the visit ends. First: ends between 300 and 310 (305),
    # starts 30 s before 0. Second: starts between 320 and 330 (325), ends 30 s after 630.
    # S2's two bursts: (300 + 310)/2 = 305 .. (320 + 330)/2 = 325, 20 s, too short.
    ("two bursts elsewhere end it", inside("S1", *EVERY_30) + inside("S2", 310, 320) + inside("S1", *LATER_30),
     [("S1", -30.0, 305.0, 335.0), ("S1", 325.0, 660.0, 335.0)]),
]

SILENCE = [
    # A stable phone probing every 100 s (three intervals of 100 s: mean 100) goes unheard
    # for 800 s, more than the 600 s timeout but within 10 mean intervals (1000 s), then
    # is inside again: one visit. 0..1200 in 6 probes: mean interval 240; -240 .. 1440.
    ("silent 800 s after 100 s probing", inside("S1", 0, 100, 200, 300, 1100, 1200),
     [("S1", -240.0, 1440.0, 1680.0)]),
    # Heard in the corridor at 700 in that gap: the gap is not silent, so the timeout ends
    # the visit. First: -100 (mean interval 100) .. (300 + 700)/2 = 500. Second:
    # (700 + 1100)/2 = 900 .. 1200 + 100 = 1300.
    ("heard elsewhere in the gap", inside("S1", 0, 100, 200, 300) + corridor(700) + inside("S1", 1100, 1200),
     [("S1", -100.0, 500.0, 600.0), ("S1", 900.0, 1300.0, 400.0)]),
    # Silent for 1100 s, more than 10 mean intervals: two visits, -100..400 and 1300..1600.
    ("silent longer than 10 intervals", inside("S1", 0, 100, 200, 300, 1400, 1500),
     [("S1", -100.0, 400.0, 500.0), ("S1", 1300.0, 1600.0, 300.0)]),
    # Probing every 500 s: 10 intervals would be 5000 s, but the limit is an hour. Silent
    # for 3500 s: one visit, 0..5000 in 5 probes, mean interval 1250: -1250 .. 6250.
    ("slow prober silent 3500 s", inside("S1", 0, 500, 1000, 1500, 5000), [("S1", -1250.0, 6250.0, 7500.0)]),
    # Silent for 3700 s: two segments; the second, one probe unbounded, is not a visit.
    ("slow prober silent 3700 s", inside("S1", 0, 500, 1000, 1500, 5200), [("S1", -500.0, 2000.0, 2500.0)]),
    # Only two intervals before the silence: too few to estimate, the timeout stands.
    # -100..300 and 900..1300 (mean interval 100 each).
    ("too few intervals to estimate", inside("S1", 0, 100, 200, 1000, 1100, 1200),
     [("S1", -100.0, 300.0, 400.0), ("S1", 900.0, 1300.0, 400.0)]),
]

NOISE = [
    # In S2 (0, 60, 120 and 480, 540); one probe at 300 heard loudest at S1, with S2 the
    # nearest place before and after it: radio noise, no S1 visit. One S2 burst does not
    # end the S2 visit: 0..540 in 5 probes, mean interval 135: -135 .. 675.
    ("one burst between probes in one other store",
     inside("S2", 0, 60, 120) + inside("S1", 300) + inside("S2", 480, 540),
     [("S2", -135.0, 675.0, 810.0)]),
    # Corridor after it instead: an S1 visit (120 + 300)/2 = 210 .. (300 + 480)/2 = 390;
    # S2's visit ends at (120 + 300)/2 = 210 and starts 60 s before 0.
    ("one burst, then the corridor", inside("S2", 0, 60, 120) + inside("S1", 300) + corridor(480),
     [("S1", 210.0, 390.0, 180.0), ("S2", -60.0, 210.0, 270.0)]),
    # Two bursts at S1 (300, 310): a visit 210 .. (310 + 480)/2 = 395, and they end the S2
    # visit: -60 .. 210, then (310 + 480)/2 = 395 .. 540 + 60 = 600.
    ("two bursts between probes in one other store",
     inside("S2", 0, 60, 120) + inside("S1", 300, 310) + inside("S2", 480, 540),
     [("S1", 210.0, 395.0, 185.0), ("S2", -60.0, 210.0, 270.0), ("S2", 395.0, 600.0, 205.0)]),
]


TABLE = BURSTS + SILENCE + NOISE


@pytest.mark.parametrize(("case", "heard", "expected"), TABLE, ids=[c[0] for c in TABLE])
def test_visit_rules(case: str, heard: Heard, expected: list[tuple]) -> None:
    heard = sorted(heard)
    assert visits(heard) == expected
    # the same whether closed once at the end or minute by minute as event time passes
    assert visits(heard, every_s=60) == expected


def test_a_randomised_mac_that_falls_silent_has_the_timeout_only() -> None:
    # As "silent 800 s after 100 s probing", but a randomised MAC: it has probably rotated,
    # so the 600 s timeout ends the visit: -100..400 and 1000..1300 (mean interval 100).
    heard = inside("S1", 0, 100, 200, 300, 1100, 1200)
    assert visits(heard, randomized=True) == [("S1", -100.0, 400.0, 500.0), ("S1", 1000.0, 1300.0, 300.0)]


def test_a_silent_visit_closes_only_once_its_silence_limit_has_passed() -> None:
    # Probing every 100 s until 300, then nothing: the silence limit is 1000 s, so the visit
    # is still open at 1300 (it could still go on) and closes once event time is past it.
    t = VisitTracker()
    feed(t, inside("S1", 0, 100, 200, 300))
    assert t.close(horizon_ms=1_300_000) == []
    assert [(v.start_ts, v.end_ts) for v in t.close(horizon_ms=1_302_000)] == [(-100_000, 400_000)]
    # Heard in the corridor at 500: the silence is broken, the timeout (600 s after 300) rules.
    t = VisitTracker()
    feed(t, inside("S1", 0, 100, 200, 300) + corridor(500))
    assert t.close(horizon_ms=900_000) == []
    assert [(v.start_ts, v.end_ts) for v in t.close(horizon_ms=902_000)] == [(-100_000, 400_000)]


WALKS = [
    # (marks, outside bursts of the walk the last mark confirms, or None)
    # Two bursts in A, a walk heard twice (60 and 61 are one burst, then 90), two in B.
    ([(0, "A"), (30, "A"), (60, None), (61, None), (90, None), (120, "B"), (150, "B")], 2),
    # No probe on the way: a walk of 0 bursts (it counts: walks too short to be heard).
    ([(0, "A"), (30, "A"), (60, "B"), (90, "B")], 0),
    # A weak second inside B (130) is not part of the walk: 1 burst (60).
    ([(0, "A"), (30, "A"), (60, None), (120, "B"), (130, None), (150, "B")], 1),
    # The first burst in B does not confirm the stay yet; the third has been counted.
    ([(0, "A"), (30, "A"), (60, None), (120, "B")], None),
    ([(0, "A"), (30, "A"), (60, None), (120, "B"), (150, "B"), (180, "B")], None),
    # One burst in A (0 and 1 are one burst) is radio noise, not a stay.
    ([(0, "A"), (1, "A"), (60, None), (120, "B"), (150, "B")], None),
    # One burst in C between A and B: the stay before B is C's, too short.
    ([(0, "A"), (30, "A"), (60, "C"), (90, None), (120, "B"), (150, "B")], None),
    # A gap over the 600 s timeout on the way: out of range, not a measurable walk.
    ([(0, "A"), (30, "A"), (700, None), (760, "B"), (790, "B")], None),
    # No gap over the timeout, but A's stay ended more than an hour before (3680 - 30):
    # not measured (a walk is looked for in the hour before only).
    ([(0, "A"), (30, "A"), *[(s, None) for s in range(400, 3401, 500)], (3650, "B"), (3680, "B")], None),
    # A's stay (1100, 1130) within the hour before 4680: the walk was heard on 7 bursts.
    ([(1100, "A"), (1130, "A"), *[(s, None) for s in range(1400, 4401, 500)], (4650, "B"), (4680, "B")], 7),
]


@pytest.mark.parametrize(("marks", "expected"), WALKS)
def test_walks_between_stores(marks: list[tuple[int, str | None]], expected: int | None) -> None:
    assert walk_bursts(marks, 600) == expected


def posterior_mean(gap: float, outside: str | None, walk: float) -> float:
    """The crossing's posterior mean by numerical integration (midpoint rule), from the
    model stated in ``crossing``'s docstring, not from its closed form."""
    steps = 4000
    h = gap / steps
    num = den = 0.0
    for i in range(steps):
        c = (i + 0.5) * h  # the walk (corridor: what is left of it)
        if outside is None:
            weight, mean = math.exp(-c / walk), c
        else:  # left the other store uniformly over (0, gap - c), then walked c
            weight, mean = (gap - c) * math.exp(-c / walk), (gap - c) / 2 + c
        num += weight * mean
        den += weight
    return num / den


@pytest.mark.parametrize(("gap", "outside", "walk"), [(60, None, 30), (30, "S2", 30), (600, None, 30), (5, "S2", 40)])
def test_crossing_is_the_posterior_mean(gap: float, outside: str | None, walk: float) -> None:
    assert crossing(gap, outside, walk) == pytest.approx(posterior_mean(gap, outside, walk), abs=0.01)
    assert crossing(gap, outside, None) == gap / 2


def walkers(tracker: VisitTracker, n: int) -> None:
    """``n`` phones probing every 30 s: S2 at 0..90, the corridor at 120, S1 at 150, 180.
    Each confirms at 180 a walk of 1 burst; mean interval 30 s: a 30 s walk each."""
    for d in range(n):
        feed(tracker, inside("S2", 0, 30, 60, 90) + corridor(120) + inside("S1", 150, 180), device=1000 + d)


@pytest.mark.parametrize(("n_walkers", "expected"), [
    # With 20 walks of 30 s measured in the hour before (MIN_WALKS = 20): from the corridor
    # at 600 to S1 at 660 (gap 60), the crossing is 30 - 60/(e^2 - 1) = 20.609 s after 600;
    # likewise 20.609 s before the corridor probe at 960 that follows S1 at 900.
    (20, (620.609, 939.391)),
    # 19 walks are too few: the midpoints, 630 .. 930.
    (19, (630.0, 930.0)),
])
def test_a_visit_bounded_by_corridor_probes_uses_the_measured_walk(n_walkers: int, expected: tuple) -> None:
    t = VisitTracker()
    walkers(t, n_walkers)
    feed(t, corridor(600) + inside("S1", 660, 720, 780, 840, 900) + corridor(960), device=1)
    (visit,) = [v for v in t.close(horizon_ms=None) if v.device == 1]
    assert (visit.start_ts / 1000, visit.end_ts / 1000) == pytest.approx(expected, abs=0.001)


def test_a_visit_after_another_store_uses_the_measured_walk() -> None:
    # From S2 (last at 630) to S1 (first at 660), gap 30, walk 30 (u = 1): the mean walk
    # within the gap is 30 (2u + (u + 2)(e^-u - 1))/(u + e^-u - 1) = 8.4515, and the
    # crossing (30 + 8.4515)/2 = 19.2258 s after 630. Out to the corridor at 960 (gap 60):
    # 20.609 s before it, as above.
    t = VisitTracker()
    walkers(t, 20)
    feed(t, inside("S2", 570, 600, 630) + inside("S1", 660, 720, 780, 840, 900) + corridor(960), device=1)
    (visit,) = [v for v in t.close(horizon_ms=None) if v.device == 1 and v.store_id == "S1"]
    assert (visit.start_ts / 1000, visit.end_ts / 1000) == pytest.approx((649.226, 939.391), abs=0.001)


def test_walks_expire_while_a_long_visit_keeps_the_walk_it_started_with() -> None:
    # Walks of 30 s measured at 180 (minute 3). A phone comes from the corridor (300) into
    # S1 (360) and stays four hours, probing every 60 s. At a horizon of 14460 s the walks
    # of minute 3 are gone (kept: from two hours before the horizon, minute 120 on), and
    # the open visit still starts 30 - 60/(e^2 - 1) = 20.609 s after 300; it ends one mean
    # interval (60 s) after its last probe at 14400.
    t = VisitTracker()
    walkers(t, 20)
    feed(t, corridor(300) + inside("S1", *range(360, 14401, 60)), device=1)
    assert list(t.walks) == [3]
    assert [v for v in t.close(horizon_ms=14_460_000) if v.device == 1] == []
    assert t.walks == {}
    (visit,) = [v for v in t.close(horizon_ms=None) if v.device == 1]
    assert (visit.start_ts / 1000, visit.end_ts / 1000) == pytest.approx((320.609, 14460.0), abs=0.001)


Event = tuple[int, int, str | None, int | None]  # (second, device, store or None, 802.11 seq)


def rotated(events: list[Event], *, every_s: int | None = None) -> list[tuple]:
    """Visits of randomised MACs of one phone model (fingerprint 7), as (store, device,
    start, end, dwell); closed once at the end, or as event time passes each multiple of
    ``every_s``."""
    t = VisitTracker()
    out = []
    events = sorted(events)
    horizons = [None] if every_s is None else list(range(every_s, events[-1][0] + every_s + 1, every_s))
    fed = 0
    for horizon in horizons:
        while fed < len(events) and (horizon is None or events[fed][0] < horizon):
            second, device, store, seq = events[fed]
            t.heard(device, second, store, RULE.timeout_s if store is not None else None)
            if store is not None:
                t.add(store, device, second * 1000, True, 7, seq, RULE)
            fed += 1
        if horizon is not None:
            out += t.close(horizon_ms=horizon * 1000)
    out += t.close(horizon_ms=None)
    return sorted((v.store_id, v.device, v.start_ts / 1000, v.end_ts / 1000, v.dwell_s) for v in out)


def test_rotated_macs_are_stitched_in_order_of_their_last_second_however_far_time_jumps() -> None:
    # MAC 14 (0, 5) rotates to 13 (10, 40; seq continues), which is then inside S2 on two
    # bursts (60, 90): 13's first segment, 0..40, ends at (40 + 60)/2 = 50 and starts
    # 40/3 s before 0: 63 s, not a visit. 13 is back in S1 at 660, 700 (seq 104, 105).
    # Another phone's MAC 12 is in S1 at 650, 680 (seq 200, 201). MAC 15 appears at 760
    # with seq 300: it continues both 12 (+99) and 13 (+195). In order of last seconds,
    # 12's segment (680) is handed on first: 15 holds 650..820, 5 probes, mean interval
    # 42.5, nothing heard outside: 607.5 .. 862.5. 13's segment 660..700 then has no heir
    # (15's first second is before it): from (90 + 660)/2 = 375 to 700 + 40 = 740. And 13
    # was in S2 from (40 + 60)/2 = 50 to (90 + 660)/2 = 375 (nothing heard in between).
    events: list[Event] = [
        (0, 14, "S1", 98), (5, 14, "S1", 99),
        (10, 13, "S1", 100), (40, 13, "S1", 101), (60, 13, "S2", 102), (90, 13, "S2", 103),
        (660, 13, "S1", 104), (700, 13, "S1", 105),
        (650, 12, "S1", 200), (680, 12, "S1", 201),
        (760, 15, "S1", 300), (790, 15, "S1", 301), (820, 15, "S1", 302),
    ]
    expected = [("S1", 13, 375.0, 740.0, 365.0), ("S1", 15, 607.5, 862.5, 255.0), ("S2", 13, 50.0, 375.0, 325.0)]
    assert rotated(events) == expected
    assert rotated(events, every_s=60) == expected


NOT_CONTINUED = [
    # MAC 11 in S1 (0, 30, 60; seq 100..102); MAC 12 continues its seq (105) at 100, but
    # was inside S2 on two bursts (70, 80) first: not the same stay. 11's visit stands on
    # its own: -30 .. 90 (mean interval 30, nothing heard outside), 120 s. 12's stay,
    # (80 + 100)/2 = 90 .. 130 + 30 = 160, is too short.
    [(0, 11, "S1", 100), (30, 11, "S1", 101), (60, 11, "S1", 102),
     (70, 12, "S2", 103), (80, 12, "S2", 104), (100, 12, "S1", 105), (130, 12, "S1", 106)],
    # MAC 12 continues 11's seq at 120 (after 11's last probe at 90), but was inside S2
    # on two bursts (40, 50) while 11 was in S1: another phone. 11: -30 .. 120, 150 s.
    # 12 in S1, (50 + 120)/2 = 85 .. 150 + 30 = 180, and in S2, 30 .. 85: too short.
    [(0, 11, "S1", 10), (30, 11, "S1", 11), (60, 11, "S1", 12), (90, 11, "S1", 13),
     (40, 12, "S2", 500), (50, 12, "S2", 501), (120, 12, "S1", 14), (150, 12, "S1", 15)],
]


@pytest.mark.parametrize(("events", "expected"), list(zip(NOT_CONTINUED, [
    [("S1", 11, -30.0, 90.0, 120.0)], [("S1", 11, -30.0, 120.0, 150.0)]], strict=True)))
def test_a_new_mac_inside_another_store_meanwhile_does_not_continue_a_visit(events: list, expected: list) -> None:
    assert rotated(events) == rotated(events, every_s=60) == expected
