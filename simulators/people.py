"""Shoppers: who they are, when they come, and where they walk.

Reads the scenario and a site's floor plan; writes nothing. A site has a pool of people
(regulars come back on later days); each day some of them make one trip each. Arrivals
follow local-hour seasonality (lunch and evening peaks), weekday/weekend and flash
crowds. In a mall a shopper walks the corridor from an entrance, enters a few shops
(chosen by category pull, restaurants more at meal times) and leaves by an entrance; on
a street people walk past the shop and some go in. Guarantees: every trip and visit lies
inside the site's opening hours of its day; a visit starts when the person crosses the
shop's door inwards and ends when they cross it outwards; a path is a list of keyframes
``(t, x, y, region)`` walked in straight lines, ``region`` (0 walkway, ``i + 1`` shop
``i``) holding from a keyframe until the next.

>>> hourly_weights(600, 1320)[[0, 120, 500]].tolist()  # 10:00, 12:00, 18:20
[0.6, 1.4, 1.5]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np

from simulators.geometry import Site
from simulators.phones import (
    FP_FIRST,
    MODEL_SHARES,
    PHONE_SHARES,
    REALISTIC_MODELS,
    MacTable,
    random_macs,
    stable_macs,
)
from simulators.scenario import Scenario
from simulators.shops import CATEGORIES

# Relative arrival intensity by local hour: lunch and evening peaks.
HOURLY = np.array([0.05, 0.02, 0.02, 0.02, 0.02, 0.05, 0.15, 0.3, 0.5, 0.55, 0.6, 0.9,
                   1.4, 1.25, 0.9, 0.85, 0.95, 1.15, 1.5, 1.55, 1.1, 0.6, 0.3, 0.1])
MEAL_HOURS = {11, 12, 13, 17, 18, 19}
LAST_ARRIVAL_BEFORE_CLOSE_MIN = 20
LEAVE_BEFORE_CLOSE_MS = 120_000.0
GLANCE_SHARE = 0.1  # visits that are a quick look, 20-110 s
DWELL_SIGMA = 0.8
MAX_DWELL_MS = 4 * 3600_000.0
MIN_VISIT_MS = 20_000.0
IN_SHOP_SPEED = 0.6  # m/s


def hourly_weights(open_min: int, close_min: int) -> np.ndarray:
    """Relative arrival intensity of each minute from opening to the last arrival."""
    minutes = np.arange(open_min, close_min - LAST_ARRIVAL_BEFORE_CLOSE_MIN)
    return HOURLY[minutes // 60]


def day_factor(scenario: Scenario, day: date) -> float:
    """Weekend days get ``weekend_factor`` times a weekday; a week averages 1."""
    weekday = 7.0 / (5.0 + 2.0 * scenario.weekend_factor)
    return weekday * scenario.weekend_factor if day.weekday() >= 5 else weekday


def arrivals(rng: np.random.Generator, *, open_ms: int, weights: np.ndarray, expected: float,
             flash: list[tuple[int, int, float]]) -> np.ndarray:
    """Sorted arrival times (epoch ms): ``expected`` in all, shaped by ``weights`` per
    minute from ``open_ms``; flash windows ``(start, end, multiplier)`` raise the rate."""
    minute_ms = open_ms + np.arange(len(weights), dtype=np.int64) * 60_000
    lam = weights / weights.sum() * expected
    for start, end, mult in flash:
        lam = np.where((minute_ms >= start) & (minute_ms < end), lam * mult, lam)
    counts = rng.poisson(lam)
    starts = np.repeat(minute_ms, counts)
    return np.sort(starts + rng.integers(0, 60_000, size=len(starts)))


@dataclass
class Population:
    """The people of one site (one row each); ``person_id`` is unique across sites."""

    person_id: list[str]
    has_phone: np.ndarray
    model: np.ndarray  # index into phones.MODELS, or REALISTIC_MODELS when realistic
    randomized: np.ndarray
    stable_mac: np.ndarray  # MAC-table index, -1 without a phone or when randomised
    bind_mac: np.ndarray  # MAC-table index of the MAC a member's phone joins WiFi with
    mean_interval_s: np.ndarray
    rotation_s: np.ndarray
    rotation_phase_s: np.ndarray
    device_offset_db: np.ndarray
    loyalty: np.ndarray
    member: np.ndarray
    new_member: np.ndarray
    consent: np.ndarray
    per_burst: np.ndarray  # a new randomised MAC every burst (realistic models)
    seq_restart: np.ndarray  # seq restarts at random on a rotation (realistic models)
    fingerprint: np.ndarray  # index of the (ie, vendor_ie) lists the phone sends

    def __len__(self) -> int:
        return len(self.person_id)


def draw_population(rng: np.random.Generator, scenario: Scenario, site: Site, size: int,
                    macs: MacTable) -> Population:
    """``size`` people who shop at ``site``. A randomised phone joins WiFi with a private
    per-network MAC, which is what a member binding learns (it never probes with it).
    With ``mac_behaviour: realistic`` the phone's model decides whether it randomises,
    how it rotates and how often it probes (``phones.REALISTIC_MODELS``); otherwise
    ``randomized_mac_share`` and the ``mac_rotation_*`` fields do."""
    realistic = scenario.mac_behaviour == "realistic"
    has_phone = rng.random(size) < scenario.phone_share
    if realistic:
        model = rng.choice(len(PHONE_SHARES), size=size, p=PHONE_SHARES)
        table = REALISTIC_MODELS
        stable_share = np.array([m.stable_share for m in table])[model]
        randomized = has_phone & (rng.random(size) >= stable_share)
    else:
        model = rng.choice(len(MODEL_SHARES), size=size, p=MODEL_SHARES)
        randomized = has_phone & (rng.random(size) < scenario.randomized_mac_share)
    stable = has_phone & ~randomized
    stable_mac = np.full(size, -1, dtype=np.int64)
    ids = [f"{site.site_id}/P{i:06d}" for i in range(size)]
    stable_mac[stable] = macs.add(stable_macs(rng, model[stable], REALISTIC_MODELS)
                                  if realistic else stable_macs(rng, model[stable]),
                                  [ids[i] for i in np.flatnonzero(stable).tolist()])
    bind_mac = stable_mac.copy()
    bind_mac[randomized] = macs.add(random_macs(rng, int(randomized.sum())),
                                    [ids[i] for i in np.flatnonzero(randomized).tolist()])
    sigma = scenario.probe_interval_sigma
    mean_interval = scenario.probe_interval_s * rng.lognormal(-sigma * sigma / 2, sigma, size)
    rotation = np.maximum(60.0, scenario.mac_rotation_median_min * 60.0
                          * rng.lognormal(0.0, scenario.mac_rotation_sigma, size))
    member = rng.random(size) < scenario.member_share
    per_burst = np.zeros(size, dtype=bool)
    seq_restart = np.zeros(size, dtype=bool)
    fingerprint = model
    if realistic:  # extra draws in realistic runs only: a legacy run draws as before
        per_burst = np.array([m.rotation == "burst" for m in REALISTIC_MODELS])[model]
        seq_restart = np.array([m.seq == "restart" for m in REALISTIC_MODELS])[model]
        interval = np.array([m.interval_factor for m in REALISTIC_MODELS])[model]
        mean_interval = mean_interval * interval
        rotation_min = np.array([m.rotation_min for m in REALISTIC_MODELS])[model]
        rotation = np.maximum(60.0, rotation_min * 60.0
                              * rng.lognormal(0.0, scenario.mac_rotation_sigma, size))
        variants = np.diff(FP_FIRST)[model]
        fingerprint = FP_FIRST[model] + (rng.random(size) * variants).astype(np.int64)
    return Population(
        person_id=ids,
        has_phone=has_phone,
        model=model,
        randomized=randomized,
        stable_mac=stable_mac,
        bind_mac=bind_mac,
        mean_interval_s=np.maximum(2.0, mean_interval),
        rotation_s=rotation,
        rotation_phase_s=rng.random(size) * rotation,
        device_offset_db=rng.normal(0.0, scenario.radio.device_offset_db, size),
        loyalty=rng.gamma(0.5, 1.0, size) + 1e-6,
        member=member,
        new_member=member & (rng.random(size) < scenario.new_member_share),
        consent=rng.random(size) < scenario.push_consent_share,
        per_burst=per_burst,
        seq_restart=seq_restart,
        fingerprint=fingerprint,
    )


@dataclass
class Trips:
    """Trips at one site: one row per trip, keyframes and visits in flat arrays."""

    person: np.ndarray
    day: np.ndarray
    arrive: np.ndarray  # epoch ms
    depart: np.ndarray
    kf_first: np.ndarray  # keyframes of trip i are kf_first[i]:kf_first[i + 1]
    kf_t: np.ndarray  # epoch ms, float
    kf_x: np.ndarray
    kf_y: np.ndarray
    kf_region: np.ndarray
    visit_trip: np.ndarray
    visit_store: np.ndarray  # site-local shop index
    visit_start: np.ndarray  # epoch ms
    visit_end: np.ndarray

    def __len__(self) -> int:
        return len(self.person)

    def position(self, trip: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, ...]:
        """Where trip ``trip[k]`` is at ``ts[k]``: x, y and region (vectorised)."""
        base = int(self.kf_t.min()) if len(self.kf_t) else 0
        kf_trip = np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.kf_first))
        kf_key = (kf_trip << 40) + (np.floor(self.kf_t).astype(np.int64) - base)
        key = (trip.astype(np.int64) << 40) + (ts.astype(np.int64) - base)
        k = np.searchsorted(kf_key, key, side="right") - 1
        k = np.clip(k, self.kf_first[trip], self.kf_first[trip + 1] - 1)
        nxt = np.minimum(k + 1, self.kf_first[trip + 1] - 1)
        dt = self.kf_t[nxt] - self.kf_t[k]
        frac = np.where(dt > 0, np.clip((ts - self.kf_t[k]) / np.where(dt > 0, dt, 1), 0, 1), 0)
        x = self.kf_x[k] + frac * (self.kf_x[nxt] - self.kf_x[k])
        y = self.kf_y[k] + frac * (self.kf_y[nxt] - self.kf_y[k])
        return x, y, self.kf_region[k]


@dataclass
class _Builder:
    rows: list[tuple[int, int, float, float]] = field(default_factory=list)
    kf: list[tuple[float, float, float, int]] = field(default_factory=list)
    kf_first: list[int] = field(default_factory=lambda: [0])
    visits: list[tuple[int, int, float, float]] = field(default_factory=list)


def plan_trips(rng: np.random.Generator, scenario: Scenario, site: Site,
               day_trips: list[tuple[int, np.ndarray, np.ndarray, int]]) -> Trips:
    """Paths of the trips ``(day, arrival ms, person, closing ms)`` of each day."""
    planner = _Planner(rng, scenario, site)
    b = _Builder()
    for day, arrive, person, close_ms in day_trips:
        for t0, p in zip(arrive.tolist(), person.tolist(), strict=True):
            trip = len(b.rows)
            kf, visits = planner.path(float(t0), close_ms - LEAVE_BEFORE_CLOSE_MS)
            b.kf.extend(kf)
            b.kf_first.append(len(b.kf))
            b.visits.extend((trip, s, a, z) for s, a, z in visits)
            b.rows.append((p, day, kf[0][0], kf[-1][0]))
    keys = np.array(b.kf, dtype=np.float64).reshape(-1, 4)
    rows = np.array(b.rows, dtype=np.float64).reshape(-1, 4)
    vis = np.array(b.visits, dtype=np.float64).reshape(-1, 4)
    return Trips(
        person=rows[:, 0].astype(np.int64), day=rows[:, 1].astype(np.int64),
        arrive=rows[:, 2].astype(np.int64), depart=rows[:, 3].astype(np.int64),
        kf_first=np.array(b.kf_first, dtype=np.int64), kf_t=keys[:, 0], kf_x=keys[:, 1],
        kf_y=keys[:, 2], kf_region=keys[:, 3].astype(np.int64),
        visit_trip=vis[:, 0].astype(np.int64), visit_store=vis[:, 1].astype(np.int64),
        visit_start=vis[:, 2].astype(np.int64), visit_end=vis[:, 3].astype(np.int64),
    )


class Draws:
    """Scalar random numbers for per-trip Python code, drawn from a numpy Generator in
    blocks (a scalar call to the Generator costs a microsecond; a list pop does not).

    >>> d = Draws(np.random.default_rng(0))
    >>> 0 <= d.u() < 1, d.poisson(0.0), round(d.lognormal(0.0, 0.0), 3)
    (True, 0, 1.0)
    """

    BLOCK = 8192

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._u: list[float] = []
        self._z: list[float] = []

    def u(self) -> float:
        if not self._u:
            self._u = self.rng.random(self.BLOCK).tolist()
        return self._u.pop()

    def z(self) -> float:
        if not self._z:
            self._z = self.rng.standard_normal(self.BLOCK).tolist()
        return self._z.pop()

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.u()

    def lognormal(self, mu: float, sigma: float) -> float:
        return math.exp(mu + sigma * self.z())

    def exponential(self) -> float:
        return -math.log(1.0 - self.u())

    def poisson(self, lam: float) -> int:
        """Knuth's method (fine for the small means used here)."""
        limit, k, p = math.exp(-lam), 0, self.u()
        while p > limit:
            k += 1
            p *= self.u()
        return k


class _Planner:
    """Draws the path of one trip at a time."""

    def __init__(self, rng: np.random.Generator, scenario: Scenario, site: Site) -> None:
        self.draw, self.scenario, self.site = Draws(rng), scenario, site
        self.zone = ZoneInfo(scenario.tz)
        self.pull = [CATEGORIES[c].pull * float(f) for c, f in
                     zip(site.categories, rng.lognormal(0.0, 0.3, len(site.categories)),
                         strict=True)]
        self.meal = [CATEGORIES[c].meal for c in site.categories]
        self.dwell_median_ms = [CATEGORIES[c].dwell_median_min * 60_000.0
                                for c in site.categories]
        self.doors = site.doors.tolist()
        self.rects = site.rects.tolist()

    def path(self, t0: float, leave_by: float) -> tuple[list, list]:
        d, site = self.draw, self.site
        speed = min(max(d.z() * 0.2 + (1.25 if site.street else 1.0), 0.6), 1.8) / 1000  # m/ms
        lane = site.lane_y + d.uniform(-1.0, 1.0) * site.lane_half_m
        from_west = d.u() < 0.5
        x = site.x_min if from_west else site.x_max
        if site.street:
            exit_x = site.x_max if from_west else site.x_min
            targets = [0] if d.u() < self.scenario.street_capture_share else []
        else:
            exit_x = x if d.u() < 0.4 else (site.x_max if from_west else site.x_min)
            targets = self._targets(t0)
            targets.sort(key=lambda s: self.doors[s][0] * (1 if from_west else -1))
        t = t0
        kf: list[tuple[float, float, float, int]] = [(t, x, lane, 0)]
        visits: list[tuple[int, float, float]] = []
        for s in targets:
            if not site.street and d.u() < 0.25:  # window shopping on the way
                t += d.uniform(15_000, 90_000)
                kf.append((t, x, lane, 0))
            dx, dy = self.doors[s]
            t_lane = t + abs(dx - x) / speed
            t_door = t_lane + abs(lane - dy) / speed
            exit_ms = (abs(lane - dy) + abs(exit_x - dx)) / speed
            dwell = min(self._dwell(s), leave_by - exit_ms - t_door)
            if dwell < MIN_VISIT_MS:
                break
            kf.append((t_lane, dx, lane, 0))
            kf.extend(self._inside(s, t_door, dwell, dx, dy))
            kf.append((t_door + dwell, dx, dy, 0))
            visits.append((s, t_door, t_door + dwell))
            t, x = t_door + dwell + abs(lane - dy) / speed, dx
            kf.append((t, x, lane, 0))
        t += abs(exit_x - x) / speed
        kf.append((t, exit_x, lane, 0))
        return kf, visits

    def _targets(self, t0: float) -> list[int]:
        """Which shops to enter: none (12%), else 1 + Poisson(1.3), by weighted sampling
        without replacement (the smallest exponential clocks ``E / weight`` win)."""
        d = self.draw
        n = len(self.pull)
        if d.u() < 0.12:
            return []
        k = min(1 + d.poisson(1.3), 6, n)
        meal = datetime.fromtimestamp(t0 / 1000, self.zone).hour in MEAL_HOURS
        clocks = [d.exponential() / (w * (2.5 if meal and m else 1.0))
                  for w, m in zip(self.pull, self.meal, strict=True)]
        return sorted(range(n), key=clocks.__getitem__)[:k]

    def _dwell(self, s: int) -> float:
        d = self.draw
        if d.u() < GLANCE_SHARE:
            return d.uniform(MIN_VISIT_MS, 110_000)
        return min(MAX_DWELL_MS, max(MIN_VISIT_MS, self.dwell_median_ms[s]
                                     * d.lognormal(0.0, DWELL_SIGMA)))

    def _inside(self, s: int, t_door: float, dwell: float, dx: float, dy: float) -> list:
        """Keyframes inside shop ``s`` from the door at ``t_door`` until just before
        leaving through it at ``t_door + dwell``: browse a few spots, pause at each."""
        d = self.draw
        x0, y0, x1, y1 = self.rects[s]
        inward = 1.0 if abs(dy - y0) < abs(dy - y1) else -1.0
        m = min(1 + d.poisson(1.0), 4)
        pts = [(d.uniform(x0 + 1, x1 - 1), d.uniform(y0 + 1, y1 - 1)) for _ in range(m)]
        legs = _legs(dx, dy, pts)
        walk = sum(legs) / IN_SHOP_SPEED * 1000
        if walk > 0.6 * dwell:  # a quick look: a spot near the door
            pts = [(dx + d.uniform(-2, 2), dy + inward * d.uniform(1, 3))]
            legs = _legs(dx, dy, pts)
            walk = min(sum(legs) / IN_SHOP_SPEED * 1000, 0.5 * dwell)
        total = sum(legs)
        clocks = [d.exponential() for _ in pts]  # a flat Dirichlet split of the pauses
        scale = (dwell - walk) / sum(clocks)
        region = s + 1
        out = [(t_door, dx, dy, region)]
        t = t_door
        for (px, py), leg, c in zip(pts, legs, clocks, strict=False):
            t += leg / total * walk
            out.append((t, px, py, region))
            t += c * scale
            out.append((t, px, py, region))
        return out


def _legs(dx: float, dy: float, pts: list[tuple[float, float]]) -> list[float]:
    """Lengths of door -> each point in turn -> door."""
    route = [(dx, dy), *pts, (dx, dy)]
    return [max(math.hypot(bx - ax, by - ay), 0.01)
            for (ax, ay), (bx, by) in zip(route, route[1:], strict=False)]
