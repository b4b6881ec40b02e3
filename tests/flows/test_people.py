"""The people estimator (flows.people): literal sightings in, window counts out.

Expected values are worked by hand from the module docstring's definitions; the arithmetic
is in the comments. Timestamps are real ones (a UTC midnight, not 1970): window indexes
near 0 would meet the estimator's "never heard" sentinels.
"""

from __future__ import annotations

import json
import math
import pickle
import random

import numpy as np
import pytest

from connectors.catalog import Catalog, PeopleCalibration
from connectors.records import RawBatch, RawMessage, Sighting
from connectors.schemas import PeopleCount
from flows.people import (
    COUNTS,
    DAY_MS,
    WINDOW_MS,
    Params,
    PeopleWindow,
    SensorPeople,
    estimate,
    fit_calibration,
)
from flows.testing import run_reads
from storepulse.settings import Settings

T0 = 1_709_769_600_000  # 2024-03-07 00:00:00 UTC: a UTC midnight, so a multiple of the 5-minute window
W = WINDOW_MS
Row = tuple[int, int, bool, int, int, int]  # ts, device, randomized, rssi, seq, fingerprint


def stable(ts: int, device: int, rssi: int) -> Row:
    return (ts, device, False, rssi, -1, 0)


def rand(ts: int, device: int, rssi: int, seq: int, fp: int) -> Row:
    return (ts, device, True, rssi, seq, fp)


def feed(sp: SensorPeople, rows: list[Row]) -> None:
    """One batch, as the footfall step hands it over (the sensor's sightings)."""
    sp.add(Sighting(ts, "AP-1", None, "hall", d, rnd, rssi, None if seq < 0 else seq, fp, 0)
           for ts, d, rnd, rssi, seq, fp in rows)  # fmt: skip


def windows(sp: SensorPeople, rows: list[Row], until: int = 1 << 62) -> dict[int, dict[str, float]]:
    """Feed one batch, close up to ``until``; features by window number counted from T0."""
    feed(sp, rows)
    return {(w.window_start_ts - T0) // W: w.features for w in sp.close(until)}


def counts(features: dict[str, float]) -> dict[str, float]:
    return {c: features[c] for c in COUNTS}


# ---- the rssi floor ---------------------------------------------------------------------


def test_a_device_below_the_floor_is_not_counted() -> None:
    # floor -65; a device counts if its max rssi in the window is >= -65.
    #   stable 1 at -60: counts          stable 2 at -70: below
    #   stable 5 at -80 then -65: max -65, on the floor: counts
    #   random 3 at -64 (fp 1): counts, its own chain counts
    #   random 4 at -66 (fp 2, another chain): below, and so is its chain
    # macs = stable 2 + random 1 = 3; chains 1; stable_np 2 (nobody is always-present yet);
    # nothing was heard before, so nothing persists.
    sp = SensorPeople(Params(floor=-65))
    rows = [
        stable(T0 + 1_000, 1, -60),
        stable(T0 + 2_000, 2, -70),
        stable(T0 + 3_000, 5, -80),
        stable(T0 + 4_000, 5, -65),
        rand(T0 + 5_000, 3, -64, 10, 1),
        rand(T0 + 6_000, 4, -66, 500, 2),
    ]
    got = windows(sp, rows)
    assert list(got) == [0]
    assert counts(got[0]) == {
        "macs": 3,
        "stable": 2,
        "random": 1,
        "chains": 1,
        "stable_np": 2,
        "chains_p": 0,
        "stable_np_p": 0,
    }


# ---- persistence ------------------------------------------------------------------------


def test_a_device_heard_in_the_window_before_persists() -> None:
    # random 21 (fp 3) at -60 in windows 0 and 1: its chain counts in chains at both, in
    # chains_p only at 1 (window 0 has no window before it in which it was heard).
    # random 22 (fp 4) at -90 in window 0 (below the floor: not counted there) and -60 in
    # window 1: persistence looks at any rssi, so it counts in chains_p at 1 too.
    # stable 31 at -60 in windows 0 and 1: stable_np_p 0 then 1.
    sp = SensorPeople(Params(floor=-70))
    rows = [
        rand(T0 + 10_000, 21, -60, 100, 3),
        rand(T0 + 11_000, 22, -90, 900, 4),
        stable(T0 + 12_000, 31, -60),
        rand(T0 + W + 10_000, 21, -60, 140, 3),
        rand(T0 + W + 11_000, 22, -60, 940, 4),
        stable(T0 + W + 12_000, 31, -60),
    ]
    got = windows(sp, rows)
    assert (got[0]["chains"], got[0]["chains_p"], got[0]["stable_np"], got[0]["stable_np_p"]) == (1, 0, 1, 0)
    assert (got[1]["chains"], got[1]["chains_p"], got[1]["stable_np"], got[1]["stable_np_p"]) == (2, 2, 1, 1)


@pytest.mark.parametrize(("later", "persists"), [(12, 1), (13, 0)])
def test_persistence_reaches_back_persist_windows_and_no_further(later: int, persists: int) -> None:
    # persist_windows 12: heard in window 0 and again in window 12, window 0 is one of the
    # 12 before (12 - 12 = 0); in window 13 it is not (13 - 12 = 1 > 0).
    sp = SensorPeople(Params(floor=-70))
    rows = [
        rand(T0 + 10_000, 21, -60, 100, 3),
        stable(T0 + 12_000, 31, -60),
        rand(T0 + later * W + 10_000, 21, -60, 300, 3),
        stable(T0 + later * W + 12_000, 31, -60),
    ]
    got = windows(sp, rows)
    assert list(got) == [0, later]
    assert (got[later]["chains"], got[later]["chains_p"]) == (1, persists)
    assert (got[later]["stable_np"], got[later]["stable_np_p"]) == (1, persists)


# ---- always-present stable devices ------------------------------------------------------


def test_a_stable_device_heard_in_present_windows_windows_stops_counting() -> None:
    # present_windows 2.5, half-life 288 windows: lam = 0.5 ** (1/288) = 0.99760.
    # Scores after each window it is heard in: 1; 1 * lam + 1 = 1.9976; 1.9976 * lam + 1 =
    # 2.9928 >= 2.5: in the third window it is fixed equipment. It is still a MAC heard
    # (macs, stable), just not a person (stable_np).
    sp = SensorPeople(Params(present_windows=2.5))
    got = windows(sp, [stable(T0 + i * W + 1_000, 41, -50) for i in range(3)])
    assert [(got[i]["stable"], got[i]["stable_np"]) for i in range(3)] == [(1, 1), (1, 1), (1, 0)]
    assert got[2]["macs"] == 1


@pytest.mark.parametrize(
    ("last", "between", "counted"),
    [
        (1, [], 0),  # score 1 * 0.5 ** 1 + 1 = 1.5, not < 1.5
        (10_000, [], 0),  # 9,999 silent windows (35 days) do not decay it: still 1.5
        (2, [1], 1),  # window 1 heard another device: 1 * 0.5 ** 2 + 1 = 1.25 < 1.5
    ],
)
def test_the_present_score_decays_per_window_with_sightings_not_per_window(
    last: int, between: list[int], counted: int
) -> None:
    # half-life 1 window (lam = 0.5), present_windows 1.5; stable 41 heard in window 0 and
    # in window ``last``; another stable device (42) heard in the windows ``between``.
    rows = [stable(T0 + 1_000, 41, -50), stable(T0 + last * W + 1_000, 41, -50)]
    rows += [stable(T0 + w * W + 2_000, 42, -50) for w in between]
    sp = SensorPeople(Params(halflife_windows=1, present_windows=1.5))
    got = windows(sp, rows)
    assert list(got) == sorted([0, last, *between])
    assert got[0]["stable_np"] == 1
    assert (got[last]["stable"], got[last]["stable_np"]) == (1, counted)


# ---- association of randomised MACs -----------------------------------------------------


@pytest.mark.parametrize(
    ("first_seq", "new_ts", "new_seq", "new_rssi", "new_fp", "chains"),
    [
        (100, 21_000, 110, -52, 5, 1),  # gap 19,990 ms, seq step 9, same fp, rssi 2 dB: one phone
        (100, 21_000, 165, -52, 5, 1),  # seq step 165 - 101 = 64 = max_seq_step: still one
        (100, 21_000, 166, -52, 5, 2),  # seq step 65 > 64: two
        (100, 21_000, 101, -52, 5, 2),  # seq repeated (step 0): two
        (4090, 21_000, 5, -52, 5, 1),  # seq wraps at 4096: (5 - 4091) mod 4096 = 10: one
        (100, 21_000, 110, -52, 6, 2),  # another fingerprint: two
        (100, 31_010, 110, -52, 5, 1),  # gap 30,000 ms = gap_ms: one
        (100, 31_011, 110, -52, 5, 2),  # gap 30,001 ms: two
        (100, 21_000, 110, -70, 5, 1),  # rssi -50 -> -70, 20 dB = max_rssi_jump: one
        (100, 21_000, 110, -71, 5, 2),  # 21 dB: two
        (100, 21_000, -1, -52, 5, 2),  # no sequence number: nothing to continue, two
    ],
)
def test_a_mac_change_that_continues_the_chain_is_one_phone(
    first_seq: int, new_ts: int, new_seq: int, new_rssi: int, new_fp: int, chains: int
) -> None:
    # random 11 (fp 5) at 1,000 and 1,010 ms (seq first_seq, first_seq + 1; max rssi -50),
    # then random 12 from new_ts, in the same window. Floor -90: every MAC counts.
    sp = SensorPeople(Params(floor=-90))
    rows = [
        rand(T0 + 1_000, 11, -50, first_seq, 5),
        rand(T0 + 1_010, 11, -51, (first_seq + 1) % 4096, 5),
        rand(T0 + new_ts, 12, new_rssi, new_seq, new_fp),
    ]
    got = windows(sp, rows)
    assert (got[0]["random"], got[0]["chains"]) == (2, chains)


@pytest.mark.parametrize(("at", "chains_p"), [(12 * 3_600_000, 1), (DAY_MS, 0)])
def test_association_never_crosses_a_utc_day(at: int, chains_p: int) -> None:
    # random 11 heard 10 s before ``at`` (the end of a window), random 12 continuing it 5 s
    # after (gap 15,010 ms, seq step 1, same fp), in the next window. At noon they are one
    # chain, heard in the window before: chains_p 1 in the second window. At midnight UTC
    # the chains are dropped, so 12 starts a chain never heard before: chains_p 0.
    sp = SensorPeople(Params(floor=-70))
    rows = [
        rand(T0 + at - 10_000, 11, -60, 200, 5),
        rand(T0 + at - 9_990, 11, -60, 201, 5),
        rand(T0 + at + 5_000, 12, -60, 202, 5),
    ]
    got = windows(sp, rows)
    second = at // W
    assert list(got) == [second - 1, second]
    assert (got[second]["chains"], got[second]["chains_p"]) == (1, chains_p)


# ---- smoothing, lateness ----------------------------------------------------------------


def test_s2_is_the_mean_with_the_window_before_or_with_0() -> None:
    # stable devices at -50: window 0 hears 2, window 1 hears 4 others, window 2 nothing,
    # window 3 hears 1.  macs_s2: (2 + 0) / 2 = 1.0; (4 + 2) / 2 = 3.0; window 3's
    # previous window was not heard: (1 + 0) / 2 = 0.5 (not (1 + 4) / 2).
    rows = [stable(T0 + 1_000, d, -50) for d in (1, 2)]
    rows += [stable(T0 + W + 1_000, d, -50) for d in (3, 4, 5, 6)]
    rows += [stable(T0 + 3 * W + 1_000, 7, -50)]
    got = windows(SensorPeople(), rows)
    assert list(got) == [0, 1, 3]
    assert [got[w]["macs_s2"] for w in (0, 1, 3)] == [1.0, 3.0, 0.5]
    assert [got[w]["stable_np_s2"] for w in (0, 1, 3)] == [1.0, 3.0, 0.5]
    assert [got[w]["chains_s2"] for w in (0, 1, 3)] == [0.0, 0.0, 0.0]


def test_sightings_of_a_closed_window_are_late_counted_and_dropped() -> None:
    sp = SensorPeople()
    # close(T0 + W + 1): windows ending at or before it close, so window 0 only.
    assert list(windows(sp, [stable(T0 + 1_000, 1, -50), stable(T0 + W + 1_000, 2, -50)], T0 + W + 1)) == [0]
    # two sightings of window 0 (late), one of window 1 (open)
    feed(sp, [stable(T0 + 100, 3, -50), stable(T0 + 200, 4, -50), stable(T0 + W + 2_000, 5, -50)])
    assert sp.late == 2
    feed(sp, [stable(T0 + 300, 6, -50)])  # a batch of late sightings only
    assert sp.late == 3
    got = {(w.window_start_ts - T0) // W: w.features for w in sp.close(1 << 62)}
    assert list(got) == [1]
    assert got[1]["macs"] == 2  # devices 2 and 5; 3, 4 and 6 were dropped


# ---- calibration ------------------------------------------------------------------------


def test_calibration_estimate_is_the_clipped_log1p_sum() -> None:
    cal = PeopleCalibration(intercept=1.0, coef={"macs": 2.0, "chains": 0.5})
    # 1 + 2 ln(1 + 3) + 0.5 ln(1 + 1) = 1 + 2.7725887222 + 0.3465735903 = 4.1191623125;
    # features without a coefficient do not count
    assert estimate(cal, {"macs": 3, "chains": 1, "stable": 50}) == pytest.approx(4.1191623125)
    # -3 + ln(1 + 3) = -1.61: clipped to 0
    assert estimate(PeopleCalibration(intercept=-3.0, coef={"macs": 1.0}), {"macs": 3}) == 0.0
    assert estimate(PeopleCalibration(intercept=0.25), {}) == 0.25


def test_a_window_carries_its_sensors_calibration() -> None:
    sp = SensorPeople(Params(floor=-70), PeopleCalibration(floor=-70, intercept=1.0, coef={"macs": 2.0}))
    feed(sp, [stable(T0 + 1_000 + d, d, -50) for d in (1, 2, 3)])
    [w] = sp.close(1 << 62)
    # 3 stable MACs: 1 + 2 ln 4 = 3.7725887
    assert w.people == pytest.approx(3.7725887, abs=1e-7)
    feed(uncalibrated := SensorPeople(), [stable(T0 + 1_000, 1, -50)])
    assert [w.people for w in uncalibrated.close(1 << 62)] == [None]


def _design(seed: int, n: int = 300) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 40, size=(n, 3)).astype(float)


def test_fit_calibration_recovers_known_coefficients() -> None:
    X = _design(7)
    L = np.log1p(X)
    y = 0.7 + 1.5 * L[:, 0] + 0.0 * L[:, 1] + 3.2 * L[:, 2]  # no noise
    cal = fit_calibration(X, y, ("a", "b", "c"))
    assert cal.intercept == pytest.approx(0.7, abs=1e-6)
    assert cal.coef == pytest.approx({"a": 1.5, "b": 0.0, "c": 3.2}, abs=1e-6)
    assert min(cal.coef.values()) >= 0.0


def test_fit_calibration_keeps_coefficients_non_negative() -> None:
    X = _design(8)
    L = np.log1p(X)
    y = 2.0 + 1.0 * L[:, 0] - 1.0 * L[:, 1] + 0.5 * L[:, 2]
    free = fit_calibration(X, y, ("a", "b", "c"), nonneg=False)
    assert free.coef == pytest.approx({"a": 1.0, "b": -1.0, "c": 0.5}, abs=1e-6)
    cal = fit_calibration(X, y, ("a", "b", "c"))
    assert min(cal.coef.values()) >= 0.0
    # The oracle: with b at its bound 0, ordinary least squares on the other columns; it is
    # the constrained optimum because raising b from 0 would only add error (KKT: the
    # residual correlates negatively with column b).
    A = np.c_[L[:, 0], L[:, 2], np.ones(len(y))]
    a, c, b0 = np.linalg.lstsq(A, y, rcond=None)[0]
    assert float(L[:, 1] @ (y - A @ np.array([a, c, b0]))) < 0
    assert cal.coef == pytest.approx({"a": a, "b": 0.0, "c": c}, abs=1e-4)
    assert cal.intercept == pytest.approx(b0, abs=1e-4)


# ---- state: pickle mid-stream -----------------------------------------------------------


def _stream(seed: int) -> list[list[Row]]:
    """Batches of 80 sightings in time order, 2 h either side of a UTC midnight: 12 phones
    rotating their MAC every 5 frames with seq continuing (fingerprint = phone mod 3), 8
    stable MACs, 2 of them heard every 20 s (always present)."""
    rng = random.Random(seed)
    start, end = T0 + DAY_MS - 7_200_000, T0 + DAY_MS + 7_200_000
    rows: list[Row] = []
    for phone in range(12):
        t, seq, mac, n = start + rng.randrange(60_000), rng.randrange(4096), 1000 + phone * 1000, 0
        while t < end:
            rows.append(rand(t, mac, rng.randrange(-85, -45), seq, phone % 3))
            n += 1
            if n % 5 == 0:
                mac += 1
            t += rng.randrange(5_000, 40_000)
            seq = (seq + rng.randrange(1, 4)) % 4096
    for device in range(8):
        step = 20_000 if device < 2 else rng.randrange(200_000, 900_000)
        rows += [stable(t, device, rng.randrange(-80, -45)) for t in range(start + device, end, step)]
    rows.sort()
    return [rows[i : i + 80] for i in range(0, len(rows), 80)]


def _run(sp: SensorPeople, batches: list[list[Row]]) -> list[PeopleWindow]:
    out = []
    for b in batches:
        feed(sp, b)
        out += sp.close(max(r[0] for r in b) // W * W)  # windows before the newest are complete
    return out


def test_a_counter_pickled_mid_stream_resumes_with_the_same_windows() -> None:
    batches = _stream(11)
    params = Params(floor=-70, present_windows=6)
    cal = PeopleCalibration(floor=-70, intercept=0.1, coef={"chains_p_s2": 1.0, "stable_np": 0.5})
    whole_sp = SensorPeople(params, cal)
    whole = _run(whole_sp, batches) + whole_sp.close(1 << 62)
    half = len(batches) // 2
    first = SensorPeople(params, cal)
    before = _run(first, batches[:half])
    resumed: SensorPeople = pickle.loads(pickle.dumps(first))
    after = _run(resumed, batches[half:]) + resumed.close(1 << 62)
    assert before + after == whole
    # the stream exercised the state a resume must carry
    assert len(whole) == 48  # 4 h of 5-minute windows
    assert any(w.features["chains"] < w.features["random"] for w in whole)  # MACs associated
    assert any(w.features["chains_p"] > 0 for w in whole)
    assert any(w.features["stable_np"] < w.features["stable"] for w in whole)  # always-present


# ---- in the engine ----------------------------------------------------------------------

CATALOG = Catalog.from_yaml("""
malls: [{mall_id: M1, name: Joy, tz: UTC, lat: 0, lon: 0}]
stores:
  - {store_id: S1, merchant_id: X, mall_id: M1, name: Beans, category: coffee, tz: UTC, lat: 0, lon: 0}
sensors:
  - {sensor_id: AP-1, mall_id: M1, store_id: S1, zone: S1-floor, lat: 0, lon: 0,
     people: {floor: -75, intercept: 1, coef: {macs: 2}}}
  - {sensor_id: C-1, mall_id: M1, zone: M1-corridor, lat: 0, lon: 0}
""")
SETTINGS = Settings(mac_hash_key=b"test-key", max_event_age_s=1e10, allowed_lateness_s=60)


def probe(ts: int, mac: str, rssi: int, sensor: str) -> bytes:
    return json.dumps({"sensor_id": sensor, "ts": ts, "mac": mac, "rssi": rssi}).encode()


def test_the_footfall_step_writes_people_per_sensor_and_window_with_the_catalogs_calibration() -> None:
    # AP-1 (floor -75, people = 1 + 2 log1p(macs)): 3 stable MACs at -50 and one at -80
    # (below -75) in the window T0..T0+5min: macs 3, people 1 + 2 ln 4 = 3.7726 -> 3.77,
    # devices = chains 0 + stable_np 3.
    # C-1 has no calibration: the default floor -65 drops its MAC at -70, which AP-1's floor
    # would keep; one at -60 counts. Default calibration: stable_np 1, stable_np_s2
    # (1 + 0) / 2 = 0.5, chains_s2 = chains_p_s2 = 0:
    # -0.0011 + 0.1051 ln 1.5 = -0.0011 + 0.1051 * 0.4054651 = 0.0415144 -> 0.04.
    values = [probe(T0 + 10_000 * i, f"a4:5e:60:00:00:0{i}", -50, "AP-1") for i in (1, 2, 3)]
    values += [probe(T0 + 40_000, "a4:5e:60:00:00:04", -80, "AP-1")]
    values += [probe(T0 + 50_000, "a4:5e:60:00:00:05", -70, "C-1"), probe(T0 + 60_000, "a4:5e:60:00:00:06", -60, "C-1")]
    read = RawBatch(topic="wifi.probes", partition=0, messages=[RawMessage(i, b"k", v) for i, v in enumerate(values)])
    out, dead = run_reads(SETTINGS, CATALOG, [read])
    assert dead == []
    people = sorted((p for p in out if isinstance(p, PeopleCount)), key=lambda p: p.sensor_id)
    assert people == [
        PeopleCount(
            sensor_id="AP-1", zone="S1-floor", store_id="S1", mall_id="M1", window_ts=T0, people=3.77, macs=3, devices=3
        ),
        PeopleCount(
            sensor_id="C-1",
            zone="M1-corridor",
            store_id=None,
            mall_id="M1",
            window_ts=T0,
            people=0.04,
            macs=1,
            devices=1,
        ),
    ]
    assert people[0].people == round(1 + 2 * math.log(4), 2)
