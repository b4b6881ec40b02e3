"""Labelled sales-drop scenarios: aggregate POS transactions and footfall for many stores.

Reads nothing; writes nothing (``drop_scenario`` returns a ``DropScenario`` in memory).
Deterministic by seed: every random draw comes from a numpy Generator seeded by
``(seed, stream)``, so the same arguments give the same transactions, footfall and labels.
Unlike the mall simulator it draws no shoppers or phones, only counts, so 100+ stores over
8 weeks take seconds.

Normal sales are a per-store non-homogeneous Poisson process, constant inside each 5-minute
bucket. The expected sales of store ``s`` in bucket ``b`` (``DropScenario.intensity``) are::

    peak_per_hour / 12 x shape(local time of day) x weekday(local weekday) x trend(t)
                       x holiday(local date) x day_noise(local date) x open(b)

- ``shape``: a lunch and an evening peak (plus a morning one for office-area and convenience
  stores) over a small base, by category with per-store jitter, scaled to 1 at the busiest
  open minute;
- ``weekday``: weekend uplift for restaurants, retail and convenience, a weekend dip for
  office-area stores (each day jittered by about 5% per store);
- ``trend``: linear from 1 to ``1 + g`` over the run, ``g`` uniform in [-0.1, 0.1];
- ``holiday``: the store's ``holiday_factor`` (0.4 or 1.6) on the dates of ``holidays``;
- ``day_noise``: a gamma day multiplier with mean 1 and CV 8%, normal variation, not a drop;
- ``open``: 0 outside the store's local opening hours, on its closed weekdays and on its
  announced ``closures``, else 1.

Sales are Poisson counts per bucket, at uniform times inside the bucket; amounts are
lognormal around the store's ticket size; the payment method follows the store's mix
(wechat and alipay together 80-92%). About 2% of sales are refunded (same store, amount and
method) at an open time within a day. Footfall per bucket is Poisson(intensity /
conversion), the store's conversion being in [0.2, 0.5].

Incidents (``labels``, exactly ``drops``) start at an open time in week 3 or later, never
overlap at a store (an hour apart at least), and end before the run does. The store is drawn
with weight ``peak_per_hour ** 0.75`` and the start bucket with weight its intensity (busy
stores and busy hours have more to lose), so that most incidents are detectable. Sales in the
window are thinned, which keeps them Poisson:

- ``drop`` (60%): each sale is lost with probability ``depth`` (uniform 0.3-1.0); footfall is
  unchanged (a conversion problem); 30 minutes to 2 days, log-uniform;
- ``traffic`` (20%): sales and the footfall intensity both fall by ``depth``; same durations;
- ``payment:<method>`` (20%): the store's larger of wechat and alipay fails for 30 minutes to
  8 hours: each sale with it is lost with probability 0.8, else paid another way; refunds
  with it in the window are not made. ``depth`` = the method's share x 0.8.

``expected_txns`` integrates the intensity above over the window (the day multiplier
included, Poisson noise not; closed time counts 0), ``missing_txns`` = expected x depth:
the expected number of sales the incident took; ``detectable`` = missing >= 10.

>>> sc = drop_scenario(3, stores=6, weeks=3, drops=3)
>>> len(sc.stores), sc.days, len(sc.labels), len(sc.footfall["D001"]) == sc.days * 288
(6, 21, 3, True)
>>> all(a.ts <= b.ts for a, b in zip(sc.txns, sc.txns[1:]))
True
>>> min(lab.start_ms for lab in sc.labels) >= sc.start_ms + 14 * 86_400_000
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np

from storepulse.errors import ConfigError

START_MS: Final = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * 1000)  # a Monday
BUCKET_MS: Final = 300_000
DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000
PAYMENTS: Final = ("wechat", "alipay", "unionpay", "card", "cash")
HOLIDAYS: Final = {"2026-04-04": "Qingming", "2026-04-05": "Qingming", "2026-04-06": "Qingming",
                   "2026-04-17": "City shopping day"}
DETECTABLE_TXNS: Final = 10.0
PAYMENT_LOSS: Final = 0.8  # share of an outage method's sales that are lost, not paid otherwise
REFUND_SHARE: Final = 0.02
DAY_CV: Final = 0.08
_STREAM = {"stores": 1, "days": 2, "closures": 3, "incidents": 4, "sales": 5, "thin": 6,
           "refunds": 7, "footfall": 8}

# category: (share, peaks as (hour, sd, weight), base, weekday factors Mon..Sun)
_CATEGORIES: Final = {
    "restaurant": (0.35, ((12.0, 0.9, 1.0), (18.8, 1.3, 1.0)), 0.12,
                   (0.9, 0.9, 0.95, 1.0, 1.15, 1.35, 1.3)),
    "retail": (0.35, ((12.8, 1.6, 0.6), (19.5, 2.0, 1.0)), 0.2,
               (0.85, 0.85, 0.9, 0.95, 1.1, 1.45, 1.4)),
    "office": (0.15, ((8.3, 0.7, 0.7), (12.2, 0.9, 1.0), (18.0, 1.0, 0.4)), 0.08,
               (1.0, 1.05, 1.05, 1.0, 0.95, 0.5, 0.45)),
    "convenience": (0.15, ((8.0, 1.0, 0.5), (12.5, 1.2, 0.7), (19.5, 2.0, 1.0)), 0.06,
                    (1.0, 1.0, 1.0, 1.0, 1.05, 1.1, 1.05)),
}


@dataclass(frozen=True, slots=True)
class StoreSpec:
    store_id: str
    tz: str  # IANA zone
    hours: str | None  # "HH:MM-HH:MM" local, every open day; None = always open
    closed_weekdays: tuple[int, ...]  # 0 = Monday
    peak_per_hour: float  # mean sales per hour at the busiest open minute, before factors
    category: str = "retail"
    conversion: float = 0.3  # sales per visitor
    ticket_fen: int = 5000  # median sale amount
    holiday_factor: float = 1.0  # sales multiplier on the scenario's holidays
    payment_mix: tuple[float, ...] = (0.5, 0.35, 0.05, 0.03, 0.07)  # shares, in PAYMENTS order

    def open_minutes(self) -> tuple[int, int]:
        """Local opening and closing minute of the day ((0, 1440) when always open)."""
        if self.hours is None:
            return 0, 1440
        a, b = (int(h) * 60 + int(m) for h, m in (t.split(":") for t in self.hours.split("-")))
        return a, b


@dataclass(frozen=True, slots=True)
class Txn:
    ts: int  # epoch ms UTC
    store_id: str
    amount: int  # fen, > 0 (a refund too: its own Txn with refund=True)
    payment: str  # one of PAYMENTS
    refund: bool = False


@dataclass(frozen=True, slots=True)
class DropLabel:
    store_id: str
    start_ms: int
    end_ms: int
    depth: float  # share of the window's sales lost
    cause: str  # "drop" | "traffic" | "payment:<method>"
    expected_txns: float  # normal intensity integrated over [start, end), no Poisson noise
    missing_txns: float  # expected_txns x depth
    detectable: bool  # missing_txns >= 10


@dataclass(frozen=True, eq=False)
class DropScenario:
    seed: int
    start_ms: int  # midnight UTC of a Monday
    days: int
    bucket_ms: int
    stores: tuple[StoreSpec, ...]
    holidays: dict[str, str]  # local "YYYY-MM-DD" -> name
    closures: tuple[tuple[str, str], ...]  # (store_id, local "YYYY-MM-DD"): announced, closed all day
    txns: tuple[Txn, ...]  # sorted by ts
    footfall: dict[str, np.ndarray]  # store_id -> visitors per bucket (int64)
    labels: tuple[DropLabel, ...]
    # store_id -> expected sales per bucket without incidents (the normal model, no Poisson noise)
    intensity: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def buckets(self) -> int:
        return self.days * DAY_MS // self.bucket_ms

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.days * DAY_MS

    def bucket_start(self, i: int) -> int:
        return self.start_ms + i * self.bucket_ms

    def bucket_counts(self, store_id: str) -> np.ndarray:
        """Net sales per bucket: sales minus refunds, each counted in the bucket of its own ts."""
        return self._net_counts[store_id].copy()

    @cached_property
    def _net_counts(self) -> dict[str, np.ndarray]:
        counts = {s.store_id: np.zeros(self.buckets, dtype=np.int64) for s in self.stores}
        for t in self.txns:
            counts[t.store_id][(t.ts - self.start_ms) // self.bucket_ms] += -1 if t.refund else 1
        return counts


def drop_scenario(seed: int = 7, *, stores: int = 120, weeks: int = 8, drops: int = 60,
                  closures: int | None = None) -> DropScenario:
    """A labelled scenario of ``stores`` stores over ``weeks`` weeks with ``drops`` incidents
    (``closures`` announced closed days, default one per ten stores, at least one)."""
    if weeks < 3 or stores < 1 or drops < 0:
        raise ConfigError(f"drop_scenario needs weeks >= 3, stores >= 1 and drops >= 0 (incidents start in week 3),"
                          f" got weeks={weeks}, stores={stores}, drops={drops}")
    days, nb = weeks * 7, weeks * 7 * DAY_MS // BUCKET_MS
    rng = {k: np.random.default_rng([seed, v]) for k, v in _STREAM.items()}
    specs = _draw_stores(rng["stores"], stores)
    grid = {tz: _LocalGrid(tz, nb) for tz in sorted({s.tz for s in specs})}
    holidays = {d: n for d, n in HOLIDAYS.items() if _in_run(d, days)}
    closed = _draw_closures(rng["closures"], specs, days, max(1, stores // 10) if closures is None else closures)
    lam = _intensity(rng["days"], specs, grid, holidays, closed, days)
    labels = _place_incidents(rng["incidents"], specs, lam, drops)
    sales = _draw_sales(rng["sales"], specs, lam)
    traffic = _thin(rng["thin"], specs, sales, labels, nb)
    refunds = _draw_refunds(rng["refunds"], sales, lam > 0, labels, specs)
    foot = rng["footfall"].poisson(lam / np.array([s.conversion for s in specs])[:, None] * traffic)
    return DropScenario(
        seed=seed, start_ms=START_MS, days=days, bucket_ms=BUCKET_MS, stores=specs, holidays=holidays,
        closures=tuple(sorted(closed)), txns=_to_txns(specs, sales, refunds),
        footfall={s.store_id: foot[i] for i, s in enumerate(specs)}, labels=labels,
        intensity={s.store_id: lam[i] for i, s in enumerate(specs)})


# ---- stores and the normal intensity ------------------------------------------------------


def _draw_stores(rng: np.random.Generator, n: int) -> tuple[StoreSpec, ...]:
    names = list(_CATEGORIES)
    shares = np.array([_CATEGORIES[c][0] for c in names])
    specs = []
    for i in range(n):
        cat = names[rng.choice(len(names), p=shares / shares.sum())]
        tz = "Asia/Urumqi" if i % 10 == 4 else "Asia/Hong_Kong" if i % 20 == 9 else "Asia/Shanghai"
        hours: str | None
        closed: tuple[int, ...] = ()
        if cat == "convenience" and rng.random() < 0.6:
            hours = None
        else:
            lo, hi = {"restaurant": ((20, 22), (42, 45)), "retail": ((19, 21), (42, 44)),
                      "office": ((14, 16), (38, 41)), "convenience": ((14, 14), (46, 46))}[cat]
            a, b = rng.integers(lo[0], lo[1] + 1), rng.integers(hi[0], hi[1] + 1)  # half hours
            hours = f"{a // 2:02d}:{a % 2 * 30:02d}-{b // 2:02d}:{b % 2 * 30:02d}"
            if cat in ("restaurant", "retail") and rng.random() < 0.15:
                closed = (0,)
            elif cat == "office" and rng.random() < 0.3:
                closed = (5, 6)
        wx = rng.uniform(0.8, 0.92)
        w = wx * rng.uniform(0.35, 0.65)
        mix = np.concatenate([[w, wx - w], (1 - wx) * rng.dirichlet([2.0, 1.0, 2.0])])
        ticket = {"restaurant": (4000, 15000), "retail": (8000, 40000), "office": (2000, 4500),
                  "convenience": (1500, 4000)}[cat]
        specs.append(StoreSpec(
            store_id=f"D{i + 1:03d}", tz=tz, hours=hours, closed_weekdays=closed,
            peak_per_hour=round(float(np.exp(rng.uniform(np.log(2), np.log(60)))), 2), category=cat,
            conversion=round(float(rng.uniform(0.2, 0.5)), 3),
            ticket_fen=int(rng.integers(*ticket)) // 100 * 100,
            holiday_factor=0.4 if cat == "office" or (cat == "convenience" and rng.random() < 0.5) else 1.6,
            payment_mix=tuple(round(float(x), 4) for x in mix)))
    return tuple(specs)


class _LocalGrid:
    """Local minute of day, weekday and date index (days since 1970) of each bucket start."""

    def __init__(self, tz: str, nb: int) -> None:
        zone, hours = ZoneInfo(tz), nb * BUCKET_MS // HOUR_MS
        offsets = np.array([datetime.fromtimestamp((START_MS + h * HOUR_MS) / 1000, zone).utcoffset()
                            .total_seconds() * 1000 for h in range(hours)], dtype=np.int64)  # type: ignore[union-attr]
        local = START_MS + np.arange(nb, dtype=np.int64) * BUCKET_MS + np.repeat(offsets, HOUR_MS // BUCKET_MS)
        self.day = local // DAY_MS
        self.minute = local % DAY_MS // 60_000
        self.weekday = (self.day + 3) % 7  # 1970-01-01 was a Thursday


def _day_number(date: str) -> int:
    return int(np.datetime64(date, "D").astype(np.int64))


def _in_run(date: str, days: int) -> bool:
    return 0 <= _day_number(date) - START_MS // DAY_MS < days


def _draw_closures(rng: np.random.Generator, specs: tuple[StoreSpec, ...], days: int,
                   n: int) -> set[tuple[str, str]]:
    first = START_MS // DAY_MS
    out: set[tuple[str, str]] = set()
    while len(out) < n:
        s = specs[rng.integers(len(specs))]
        day = first + int(rng.integers(7, days))
        date = str(np.datetime64(day, "D"))
        if (day + 3) % 7 not in s.closed_weekdays and date not in HOLIDAYS:
            out.add((s.store_id, date))
    return out


def _shape(rng: np.random.Generator, spec: StoreSpec) -> np.ndarray:
    """Relative sales by local minute of day (at the middle of each 5-minute bucket)."""
    _, peaks, base, _ = _CATEGORIES[spec.category]
    m = (np.arange(1440) + 2.5) / 60
    y = np.full(1440, base * rng.uniform(0.8, 1.2))
    for hour, sd, weight in peaks:
        centre, width = hour + rng.uniform(-0.5, 0.5), sd * rng.uniform(0.85, 1.15)
        d = np.minimum(np.abs(m - centre), 24 - np.abs(m - centre))
        y += weight * rng.uniform(0.8, 1.2) * np.exp(-0.5 * (d / width) ** 2)
    a, b = spec.open_minutes()
    return y / y[a:b].max()


def _intensity(rng: np.random.Generator, specs: tuple[StoreSpec, ...], grid: dict[str, _LocalGrid],
               holidays: dict[str, str], closed: set[tuple[str, str]], days: int) -> np.ndarray:
    """Expected sales per store (rows) and bucket (columns), without incidents."""
    nb = days * DAY_MS // BUCKET_MS
    first = START_MS // DAY_MS - 1  # local days start one day early west of UTC
    hol = np.array([_day_number(d) - first for d in holidays], dtype=np.int64)
    lam = np.zeros((len(specs), nb))
    k = 1 / DAY_CV**2
    for i, s in enumerate(specs):
        g = grid[s.tz]
        day = g.day - first
        weekday = np.array(_CATEGORIES[s.category][3]) * np.exp(rng.normal(0, 0.05, 7))
        day_factor = rng.gamma(k, 1 / k, days + 2)
        day_factor[hol] *= s.holiday_factor
        for sid, date in closed:
            if sid == s.store_id:
                day_factor[_day_number(date) - first] = 0.0
        a, b = s.open_minutes()
        is_open = (g.minute >= a) & (g.minute < b) & ~np.isin(g.weekday, s.closed_weekdays)
        trend = 1 + rng.uniform(-0.1, 0.1) * np.arange(nb) / nb
        lam[i] = (s.peak_per_hour / 12 * _shape(rng, s)[g.minute] * weekday[g.weekday] * trend
                  * day_factor[day] * is_open)
    return lam


# ---- incidents -------------------------------------------------------------------------


def _window_sum(row: np.ndarray, start: int, end: int) -> float:
    """Integral of a per-bucket intensity over [start, end) ms, partial buckets pro rata."""
    b0, b1 = (start - START_MS) // BUCKET_MS, (end - 1 - START_MS) // BUCKET_MS
    total = float(row[b0:b1 + 1].sum())
    total -= row[b0] * ((start - START_MS) % BUCKET_MS) / BUCKET_MS
    total -= row[b1] * (START_MS + (b1 + 1) * BUCKET_MS - end) / BUCKET_MS
    return float(total)


def _place_incidents(rng: np.random.Generator, specs: tuple[StoreSpec, ...], lam: np.ndarray,
                     n: int) -> tuple[DropLabel, ...]:
    n_traffic, n_payment = round(0.2 * n), round(0.2 * n)
    causes = ["drop"] * (n - n_traffic - n_payment) + ["traffic"] * n_traffic + ["payment"] * n_payment
    causes = [causes[j] for j in rng.permutation(n)]
    nb = lam.shape[1]
    end = START_MS + nb * BUCKET_MS
    taken: dict[int, list[tuple[int, int]]] = {}
    labels = []
    weight_store = np.array([s.peak_per_hour for s in specs]) ** 0.75
    for cause in causes:
        longest = 8 if cause == "payment" else 48
        for _ in range(1000):
            i = int(rng.choice(len(specs), p=weight_store / weight_store.sum()))
            dur = int(np.exp(rng.uniform(np.log(0.5), np.log(longest))) * HOUR_MS) // 60_000 * 60_000
            open_b = np.flatnonzero(lam[i, 14 * DAY_MS // BUCKET_MS:]) + 14 * DAY_MS // BUCKET_MS
            open_b = open_b[START_MS + open_b * BUCKET_MS + dur < end]
            if not len(open_b):
                continue
            weight = lam[i, open_b]
            st = START_MS + int(rng.choice(open_b, p=weight / weight.sum())) * BUCKET_MS + int(rng.integers(5)) * 60_000
            if all(st + dur + HOUR_MS <= a or b + HOUR_MS <= st for a, b in taken.get(i, [])):
                break
        else:
            raise ConfigError(f"no room for {n} incidents in {len(specs)} stores: ask for fewer drops")
        taken.setdefault(i, []).append((st, st + dur))
        s = specs[i]
        if cause == "payment":
            m = int(np.argmax(s.payment_mix[:2]))
            cause, depth = f"payment:{PAYMENTS[m]}", s.payment_mix[m] * PAYMENT_LOSS
        else:
            depth = float(rng.uniform(0.3, 1.0))
        expected, depth = _window_sum(lam[i], st, st + dur), round(float(depth), 4)
        labels.append(DropLabel(s.store_id, st, st + dur, depth, cause, expected,
                                expected * depth, expected * depth >= DETECTABLE_TXNS))
    return tuple(sorted(labels, key=lambda lab: (lab.start_ms, lab.store_id)))


# ---- transactions and footfall -----------------------------------------------------------


@dataclass
class _Sales:
    """Columns of the sales, store-major and bucket-ordered within a store."""

    store: np.ndarray
    ts: np.ndarray
    amount: np.ndarray
    payment: np.ndarray
    keep: np.ndarray


def _draw_sales(rng: np.random.Generator, specs: tuple[StoreSpec, ...], lam: np.ndarray) -> _Sales:
    nb = lam.shape[1]
    counts = rng.poisson(lam).ravel()
    cell = np.repeat(np.arange(counts.size), counts)
    store, bucket = cell // nb, cell % nb
    ts = START_MS + bucket * BUCKET_MS + rng.integers(0, BUCKET_MS, cell.size)
    cum = np.cumsum([s.payment_mix for s in specs], axis=1)
    payment = (rng.random(cell.size)[:, None] * cum[store, -1:] > cum[store]).sum(axis=1)
    ticket = np.array([s.ticket_fen for s in specs])
    amount = np.maximum(100, np.round(ticket[store] * rng.lognormal(0, 0.55, cell.size), -1)).astype(np.int64)
    return _Sales(store, ts, amount, payment, np.ones(cell.size, dtype=bool))


def _thin(rng: np.random.Generator, specs: tuple[StoreSpec, ...], sales: _Sales,
          labels: tuple[DropLabel, ...], nb: int) -> np.ndarray:
    """Apply the incidents to the sales in place; return the footfall factor per store and bucket."""
    index = {s.store_id: i for i, s in enumerate(specs)}
    factor = np.ones((len(specs), nb))
    bounds = np.searchsorted(sales.store, np.arange(len(specs) + 1))
    for lab in labels:
        i = index[lab.store_id]
        lo, hi = bounds[i], bounds[i + 1]
        ts = sales.ts[lo:hi]
        a = lo + np.searchsorted(ts // BUCKET_MS, (lab.start_ms // BUCKET_MS) - 1)
        b = lo + np.searchsorted(ts // BUCKET_MS, (lab.end_ms // BUCKET_MS) + 2)
        window = np.flatnonzero((sales.ts[a:b] >= lab.start_ms) & (sales.ts[a:b] < lab.end_ms)) + a
        u = rng.random(window.size)
        if lab.cause.startswith("payment:"):
            m = PAYMENTS.index(lab.cause.split(":")[1])
            hit = window[sales.payment[window] == m]
            u = u[sales.payment[window] == m]
            sales.keep[hit[u < PAYMENT_LOSS]] = False
            other = np.array(specs[i].payment_mix)
            other[m] = 0
            moved = hit[u >= PAYMENT_LOSS]
            sales.payment[moved] = rng.choice(len(PAYMENTS), moved.size, p=other / other.sum())
            continue
        sales.keep[window[u < lab.depth]] = False
        if lab.cause == "traffic":
            for b0 in range((lab.start_ms - START_MS) // BUCKET_MS, (lab.end_ms - 1 - START_MS) // BUCKET_MS + 1):
                t0 = START_MS + b0 * BUCKET_MS
                cover = (min(lab.end_ms, t0 + BUCKET_MS) - max(lab.start_ms, t0)) / BUCKET_MS
                factor[i, b0] = 1 - lab.depth * cover
    return factor


def _draw_refunds(rng: np.random.Generator, sales: _Sales, is_open: np.ndarray,
                  labels: tuple[DropLabel, ...], specs: tuple[StoreSpec, ...]) -> _Sales:
    """Refund about 2% of the sales made, at the first of a few tries (5 minutes to a day
    later) that falls in an open bucket of the run; none in an outage of its method."""
    nb = is_open.shape[1]
    made = np.flatnonzero(sales.keep)
    chosen = made[rng.random(made.size) < REFUND_SHARE]
    ts = sales.ts[chosen][:, None] + rng.integers(300_000, DAY_MS, (chosen.size, 8))
    bucket = np.minimum((ts - START_MS) // BUCKET_MS, nb - 1)
    ok = (ts < START_MS + nb * BUCKET_MS) & is_open[sales.store[chosen][:, None], bucket]
    found = ok.any(axis=1)
    chosen, ts = chosen[found], ts[found, ok[found].argmax(axis=1)]
    keep = np.ones(chosen.size, dtype=bool)
    index = {s.store_id: i for i, s in enumerate(specs)}
    for lab in labels:
        if lab.cause.startswith("payment:"):
            m = PAYMENTS.index(lab.cause.split(":")[1])
            keep &= ~((sales.store[chosen] == index[lab.store_id]) & (sales.payment[chosen] == m)
                      & (ts >= lab.start_ms) & (ts < lab.end_ms))
    return _Sales(sales.store[chosen], ts, sales.amount[chosen], sales.payment[chosen], keep)


def _to_txns(specs: tuple[StoreSpec, ...], sales: _Sales, refunds: _Sales) -> tuple[Txn, ...]:
    store = np.concatenate([sales.store[sales.keep], refunds.store[refunds.keep]])
    ts = np.concatenate([sales.ts[sales.keep], refunds.ts[refunds.keep]])
    amount = np.concatenate([sales.amount[sales.keep], refunds.amount[refunds.keep]])
    payment = np.concatenate([sales.payment[sales.keep], refunds.payment[refunds.keep]])
    refund = np.concatenate([np.zeros(int(sales.keep.sum()), dtype=bool), np.ones(int(refunds.keep.sum()), dtype=bool)])
    order = np.lexsort((refund, store, ts))
    ids = [s.store_id for s in specs]
    return tuple(map(Txn, ts[order].tolist(), [ids[i] for i in store[order].tolist()], amount[order].tolist(),
                     [PAYMENTS[p] for p in payment[order].tolist()], refund[order].tolist()))
