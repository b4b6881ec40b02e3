"""Phones that probe the way real ones do (``mac_behaviour: realistic``) and devices that
never leave (``simulators.fixed``), against the lab captures (issue 16)."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from simulators.capture import capture_stats
from simulators.mall import MallSimulator, SimEvent
from simulators.phones import DEVICE_MODELS, FINGERPRINTS, MacTable, probe_frames
from simulators.scenario import Scenario
from storepulse.errors import ConfigError

T0 = 1_741_939_200_000  # 2025-03-14 08:00 UTC


# ---- the realistic evaluation scenario looks like the lab capture ----------------------


@pytest.fixture(scope="module")
def realistic_eval(make_run):
    return make_run(Scenario.load("eval-footfall-realistic"), 7)


def test_realistic_capture_statistics_match_the_lab(realistic_eval) -> None:
    # The lab (two sniffers, /work/shared/data/lab-probes, 1.39M sightings): 0.395 of
    # sightings randomised (0.35 in the table), 0.97 of distinct MACs, 4.46
    # sightings per randomised MAC. eval-footfall-realistic, seed 7, gives 0.371, 0.995
    # and 4.83 (seeds 1-3: 0.353-0.385, 0.995, 4.53-4.72); the bounds leave room for a
    # reseed, not for a change of behaviour (legacy eval-footfall: 0.41, 0.70, 106).
    per_mac: Counter[str] = Counter()
    for _, o, _ in realistic_eval.observations():
        per_mac[o.mac] += 1
    randomized = {m for m in per_mac if int(m[:2], 16) & 0x02}
    sightings = sum(per_mac.values())
    r_sightings = sum(per_mac[m] for m in randomized)
    assert 0.33 <= r_sightings / sightings <= 0.42
    assert len(randomized) / len(per_mac) >= 0.95  # the target: >= 0.9
    assert 4.0 <= r_sightings / len(randomized) <= 5.5
    # the helper the evaluation can call says the same (an independent count above)
    stats = capture_stats(e.value for e in realistic_eval.events if e.topic == "wifi.probes")
    assert (stats.sightings, stats.randomized_sightings, stats.macs, stats.randomized_macs) == (
        sightings, r_sightings, len(per_mac), len(randomized))


# ---- rotation and seq, frame by frame --------------------------------------------------


def _frames(*, per_burst: bool | None, seq_restart: bool | None, n: int = 40):
    """An hour of probes (every 30 s on average) of ``n`` randomised phones that would
    rotate every 10 minutes, all at phase 0."""
    macs = MacTable(np.random.default_rng(5))
    arrive = np.full(n, T0, dtype=np.int64)
    frames = probe_frames(
        np.random.default_rng(4), arrive_ms=arrive, depart_ms=arrive + 3_600_000,
        mean_interval_s=np.full(n, 30.0), randomized=np.ones(n, dtype=bool),
        stable_mac=np.full(n, -1, dtype=np.int64), rotation_s=np.full(n, 600.0),
        rotation_phase_s=np.zeros(n), owner=[f"p{i}" for i in range(n)], macs=macs,
        per_burst=None if per_burst is None else np.full(n, per_burst),
        seq_restart=None if seq_restart is None else np.full(n, seq_restart))
    return frames, macs


def _runs(key: np.ndarray) -> np.ndarray:
    """Index of the first frame of each run of equal consecutive ``key`` values."""
    return np.flatnonzero(np.r_[True, key[1:] != key[:-1]])


def test_per_burst_rotation_gives_a_new_mac_every_burst() -> None:
    frames, macs = _frames(per_burst=True, seq_restart=False)
    assert frames.burst is not None
    bursts: dict[int, set[int]] = defaultdict(set)
    for b, m in zip(frames.burst.tolist(), frames.mac.tolist(), strict=True):
        bursts[b].add(m)
    assert all(len(m) == 1 for m in bursts.values())  # one MAC per burst
    assert len(set(frames.mac.tolist())) == len(bursts) == len(macs.text)  # never reused
    assert all(int(m[:2], 16) & 0x03 == 0x02 for m in macs.text)


def test_interval_rotation_keeps_a_mac_for_its_period() -> None:
    frames, _ = _frames(per_burst=False, seq_restart=False)
    epoch = (frames.ts - T0) // 600_000
    # one MAC per (phone, 10-minute period), and a new one in each period
    pairs = set(zip(frames.trip.tolist(), epoch.tolist(), strict=True))
    per_mac: dict[int, set[tuple[int, int]]] = defaultdict(set)
    for m, t, e in zip(frames.mac.tolist(), frames.trip.tolist(), epoch.tolist(), strict=True):
        per_mac[m].add((t, e))
    assert all(len(v) == 1 for v in per_mac.values()) and len(per_mac) == len(pairs)


def test_seq_continues_across_rotations_unless_the_model_restarts_it() -> None:
    cont, _ = _frames(per_burst=True, seq_restart=False)
    same_trip = cont.trip[1:] == cont.trip[:-1]
    # carries on: +1 per frame of a phone, across every MAC change
    assert np.all((np.diff(cont.seq)[same_trip] % 4096) == 1)
    for per_burst in (True, False):
        rest, _ = _frames(per_burst=per_burst, seq_restart=True)
        step = np.diff(rest.seq) % 4096
        same_trip = rest.trip[1:] == rest.trip[:-1]
        new_mac = rest.mac[1:] != rest.mac[:-1]
        assert np.all(step[same_trip & ~new_mac] == 1)  # +1 while the MAC lasts
        changes = same_trip & new_mac
        # restarts at random: a step of 1 by chance is 1 in 4096
        assert changes.sum() >= 200 and (step[changes] == 1).sum() <= 2  # 40 phones x 5 at least


def test_without_the_new_switches_frames_are_as_before() -> None:
    old, old_macs = _frames(per_burst=None, seq_restart=None)
    new, new_macs = _frames(per_burst=False, seq_restart=False)
    for field in ("trip", "ts", "seq", "ch", "mac"):
        assert np.array_equal(getattr(old, field), getattr(new, field)), field
    assert old_macs.text == new_macs.text


# ---- the models behave as the table says, end to end -----------------------------------


def _model_of_fingerprint() -> dict[tuple[tuple[int, ...], tuple[int, ...]], int]:
    return {fp: m for m, model in enumerate(DEVICE_MODELS) for fp in model.fingerprints}


def test_every_fingerprint_names_one_model() -> None:
    assert len(set(FINGERPRINTS)) == len(FINGERPRINTS) == len(_model_of_fingerprint())


@pytest.fixture(scope="module")
def realistic_small(make_run):
    base = Scenario.load("demo").replace(
        name="realistic-small", start_date="2025-03-15", stores_per_mall=6, street_stores=1,
        shoppers_per_mall_per_day=400, street_passers_per_store_per_day=150,
        probe_interval_s=30.0, batched_sensor_share=0.0, mac_behaviour="realistic",
        store_devices_per_store=1.0, staff_phones_per_store=1.0)
    return make_run(base, 5)


def test_models_rotate_and_continue_seq_as_specified(realistic_small) -> None:
    truth = realistic_small.sim.truth
    model_of = _model_of_fingerprint()
    heard: dict[str, list[tuple[int, int, str]]] = defaultdict(list)  # owner -> (ts, seq, mac)
    model: dict[str, int] = {}
    for _, o, _ in realistic_small.observations():
        owner = truth.mac_owner[o.mac]
        if owner in truth.people and int(o.mac[:2], 16) & 0x02:
            heard[owner].append((o.ts, o.seq, o.mac))
            model[owner] = model_of[tuple(o.ie), tuple(o.vendor_ie)]
    lifetimes: dict[str, list[int]] = defaultdict(list)
    steps: dict[str, list[int]] = defaultdict(list)  # seq step from one MAC to the next
    for owner, frames in heard.items():
        frames.sort()
        first: dict[str, tuple[int, int]] = {}
        last: dict[str, tuple[int, int]] = {}
        for ts, seq, mac in frames:
            first.setdefault(mac, (ts, seq))
            last[mac] = (ts, seq)
        m = DEVICE_MODELS[model[owner]]
        lifetimes[m.rotation] += [last[k][0] - first[k][0] for k in first]
        order = sorted(first, key=first.__getitem__)
        steps[m.seq] += [(first[b][1] - last[a][1]) % 4096 for a, b in zip(order, order[1:], strict=False)]
    # per burst: a MAC lasts one burst (at most 3 frames 20 ms apart)
    assert len(lifetimes["burst"]) > 5000 and max(lifetimes["burst"]) <= 40
    # per interval: most MACs outlive a burst
    assert np.median(lifetimes["interval"]) > 60_000
    # seq: after a rotation the next frame heard is a few frames on, or anywhere
    near = {k: np.mean([1 <= s <= 64 for s in v]) for k, v in steps.items()}
    assert near["continue"] > 0.95 and near["restart"] < 0.05, near


# ---- devices that never leave ----------------------------------------------------------


def test_fixed_devices_probe_all_day_and_are_not_people(realistic_small) -> None:
    sim = realistic_small.sim
    truth = sim.truth
    assert truth.devices and not set(truth.devices) & set(truth.people)
    assert {o for o in truth.mac_owner.values()} <= set(truth.people) | set(truth.devices)
    assert not {v.person_id for v in truth.visits} & set(truth.devices)
    zone = ZoneInfo(sim.scenario.tz)
    hours: dict[str, set[int]] = defaultdict(set)
    for _, o, _ in realistic_small.observations():
        device = truth.devices.get(truth.mac_owner[o.mac])
        if device is not None:
            hours[device.kind].add(datetime.fromtimestamp(o.ts / 1000, zone).hour)
    assert hours["equipment"] == set(range(24))  # around the clock, closed hours too
    assert hours["staff"] == set(range(8, 22))  # the street shop opens at 8, the mall shuts at 22


def test_fixed_devices_change_nothing_about_people(make_run, realistic_small) -> None:
    without = make_run(realistic_small.sim.scenario.replace(
        store_devices_per_store=0.0, staff_phones_per_store=0.0), 5)
    with_ = realistic_small
    assert without.sim.truth.people == with_.sim.truth.people
    assert without.sim.truth.visits == with_.sim.truth.visits
    assert not without.sim.truth.devices

    def people_sightings(run) -> Counter:
        people = run.sim.truth.people
        return Counter((s, o.mac, o.ts, o.rssi, o.seq) for s, o, _ in run.observations()
                       if run.sim.truth.mac_owner[o.mac] in people)

    assert people_sightings(without) == people_sightings(with_)


# ---- settings -------------------------------------------------------------------------


@pytest.mark.parametrize("text,message", [
    ("mac_behaviour: real", "mac_behaviour"),
    ("store_devices_per_store: -1", "store_devices_per_store must be in [0, 20]"),
    ("staff_phones_per_store: 21", "staff_phones_per_store must be in [0, 20]"),
    ("radio: {capture_share: 0}", "radio.capture_share must be in (0, 1]"),
])
def test_bad_settings_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        Scenario.from_yaml(f"name: x\n{text}")


# ---- the legacy scenarios do not change ------------------------------------------------


def _digest(events: list[SimEvent]) -> str:
    h = hashlib.sha256()
    for e in events:
        h.update(e.topic.encode() + b"\0" + e.key + b"\0" + e.value + b"\0"
                 + str(e.ts).encode() + b"\n")
    return h.hexdigest()


NOW = datetime(2025, 6, 2, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize("name,seed,count,digest", [
    # computed with the code before realistic phones existed (commit 834878a, in a
    # worktree); eval-footfall and smoke are pinned in test_messy.py
    ("demo", 5, 467_044, "8d370152dfec642f063ef59afd5f54f289b45b76d3d3b6c16f46f0683b60d710"),
    ("incidents", 2, 811_181, "d4d277003bebc3d0ae7a6a4fd0a50d05197273055137bd447fe2fff3316c9160"),
    ("bad-input", 4, 493_299, "851efa991f501620eae77212fba44537088edd7313af00cd466168a3ec1c316d"),
    ("members-month", 1, 199_813,
     "17f200c28b6c74a7c1e45eab23111509865214c7899a52d2945b4147e4b58200"),
])
def test_legacy_scenarios_give_the_same_bytes(name: str, seed: int, count: int,
                                              digest: str) -> None:
    events = list(MallSimulator(Scenario.load(name), seed, now=NOW).events())
    assert (len(events), _digest(events)) == (count, digest)
