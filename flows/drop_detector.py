"""Sales-drop detection for one store: a score per bucket that a merchant can trust.

Reads one value per bucket (``bucket_ms``, 5 minutes by default): the store's net sales
count in it (sales minus refunds, a Poisson-like count; a negative net counts as 0). The
caller feeds every bucket in time order, empty ones included (a missing bucket is not a
zero to the detector: it is simply not seen). Writes nothing: ``score_one`` returns a drop
score in [0, 1] (0.5 and above is alert-worthy), ``learn_one`` updates the model, river
style (score first, then learn). ``DropAlerter`` turns scores into firing/resolved events.

The method. The expectation of a bucket is ``scale x base``. ``base`` is a seasonal rate
per (local weekday, local time-of-day slot of ``slot_minutes``), learned online as decayed
sums of counts and exposure (half-life ``season_halflife_days``); a bucket teaches its
own slot, and a prediction interpolates linearly between the two nearest slot centres. A
weekday cell is shrunk towards the store's pooled slot rate times a weekday factor, with a
Gamma prior whose spread is ``cell_cv``: a busy store's cells speak for themselves within
a week, a quiet store's lean on the pooled profile. ``scale`` is the store's recent level,
a ratio of decayed sums actual / base (half-life ``scale_halflife_days`` of open time or
``scale_halflife_sales`` expected sales, whichever is shorter; pulled towards 1 by
``scale_prior`` expected sales), which follows trend and day-to-day swings. The weekday factor is the weekday's decayed
counts over what the pooled profile expects of them (recomputed once a learned day). Two
one-sided Poisson CUSUMs run on the log-likelihood ratio of "rate = (1 - d) x expected"
against "rate = expected": one for a design drop ``drop`` (0.5, ``threshold`` 11 nats), one
for an outage ``outage_drop`` (0.9, ``outage_threshold`` 12 nats), which catches a store
that sells nothing about twice as fast. Each bucket adds ``d * expected + x * log(1 - d)``;
a sum is held at 0 from below and at ``cap`` thresholds from above. The score is
``1 - 2 ** -(S / h)`` of the CUSUM furthest along: 0.5 when a sum reaches its threshold.
Learning: a bucket is learned at once while both sums are below ``hold_back`` (half) of
their thresholds; above, it is held back, learned when they fall back, and dropped if one
crosses its threshold (an alarm). In an alarm nothing is learned until it ends, so a long
drop never teaches that low is normal. An alarm ends when both sums are back at 0, or at
once when a recovery sum (the LLR of "back to expected" against "still at the rate seen
since the excursion began", ``recover_threshold`` 3 nats) says so; an alarm longer than
``rebase_days`` (3) is taken as the new normal: the level is reset to what the drop showed.
Closed time (outside ``hours``, ``closed`` dates, holidays without a factor) has no
expectation: score 0, nothing learned, the sums keep their value.

Why these defaults: the thresholds are set by false alarms across many stores. Seven empty
buckets where 10 sales were expected happen by chance (e^-10) a few times in 120 stores x 6
weeks of 5-minute buckets, so a threshold near 12 nats is what keeps precision near 0.95;
below ~10 the false alerts grow fast (9 nats: 13x more in the labelled simulator). The
price is delay: a 60% drop gives 0.23 nats per expected sale, so an alert needs ~50
expected sales (an outage: ~13), i.e. ~25 minutes only at a store expecting 120 sales an
hour. ``hold_back`` 0.5: learning less (0.25) left the model stale and raised false alerts.

Cold start: the score is 0 (and ``expected`` None) until ``warmup_days`` (14) local days
with open time have been learned, i.e. from the 15th such day on; everything before is
learned as is, so an incident in the first two weeks is learned as normal.

Holidays: ``{"2026-10-01": 1.6, "2026-10-02": None}``: a date with a factor is scored
against ``factor x`` the normal expectation, a date with ``None`` (or a plain set of dates)
is neither scored nor learned. No holiday date is ever learned from.

State: plain lists of floats (7 x slots per day, twice, plus per-slot sums and 7 cached
weekday factors), the two sums and the held-back buckets (at most ``MAX_PENDING``, two
days; the oldest is learned when one more comes).
Picklable, deterministic, O(1) per bucket (amortised over the held-back buckets).

>>> import math
>>> det = SalesDropDetector(hours="10:00-22:00")
>>> start = 1_767_196_800_000  # 2026-01-01 00:00 Asia/Shanghai
>>> def normal(k):  # a steady 3 sales per bucket while open
...     return 3
>>> scores = []
>>> for k in range(21 * 288):  # three weeks, learned
...     ts = start + k * 300_000
...     scores.append(det.score_one(ts, normal(k)))
...     det.learn_one(ts, normal(k))
>>> max(scores)  # no score in the warm-up, none on a regular series
0.0
>>> t = start + 21 * 288 * 300_000 + 12 * 12 * 300_000  # day 22, 12:00
>>> round(det.expected(t), 2)
3.0
>>> out = []
>>> for k in range(24):  # two hours at a third of normal
...     out.append(det.score_one(t + k * 300_000, 1))
...     det.learn_one(t + k * 300_000, 1)
>>> [round(s, 2) for s in out[::3]]
[0.05, 0.17, 0.26, 0.34, 0.41, 0.48, 0.55, 0.6]
>>> next(k for k, s in enumerate(out) if s >= 0.5) * 5  # minutes to the alert
80
>>> st = det.state()
>>> st.in_drop, round(st.actual / st.expected, 2)  # "63% below expected"
(True, 0.37)
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo

DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
MAX_PENDING = 576  # held-back buckets: two days of 5-minute buckets


def _parse_hours(hours: str | None) -> tuple[int, int] | None:
    """``"HH:MM-HH:MM"`` -> (open, close) in ms after local midnight; close may wrap."""
    if hours is None:
        return None
    try:
        a, b = hours.split("-")
        (ah, am), (bh, bm) = (map(int, a.split(":")), map(int, b.split(":")))
    except ValueError as e:
        raise ValueError(f"hours {hours!r}: expected 'HH:MM-HH:MM' local time, e.g. '10:00-22:00'") from e
    return (ah * 60 + am) * 60_000, (bh * 60 + bm) * 60_000


@dataclass(frozen=True)
class DropState:
    """Where a detector stands, for an alert's context ("70% below a normal Tuesday noon").

    ``expected``/``actual`` are the sums over the current excursion (since the last bucket
    at which both CUSUMs were 0); both are 0 outside one.
    """

    score: float
    in_drop: bool
    expected: float
    actual: float


class SalesDropDetector:
    def __init__(
        self,
        bucket_ms: int = 300_000,
        tz: str = "Asia/Shanghai",
        hours: str | None = None,
        holidays: Mapping[str, float | None] | Iterable[str] | None = None,
        closed: Iterable[str] | None = None,
        *,
        slot_minutes: int = 30,
        drop: float = 0.5,
        threshold: float = 11.0,
        outage_drop: float = 0.9,
        outage_threshold: float = 12.0,
        cap: float = 1.5,
        warmup_days: int = 14,
        season_halflife_days: float = 21.0,
        scale_halflife_days: float = 1.0,
        scale_halflife_sales: float = 100.0,
        scale_prior: float = 10.0,
        cell_cv: float = 0.15,
        hold_back: float = 0.5,
        recover_threshold: float = 3.0,
        rebase_days: float = 3.0,
    ) -> None:
        if DAY_MS % bucket_ms or (slot_minutes * 60_000) % bucket_ms or 1440 % slot_minutes:
            raise ValueError(
                f"bucket_ms={bucket_ms}, slot_minutes={slot_minutes}: a bucket must divide the slot, the slot the day"
            )
        if not (0 < drop < 1 and 0 < outage_drop < 1):
            raise ValueError(f"drop={drop}, outage_drop={outage_drop}: design drops are fractions in (0, 1)")
        self.bucket_ms = bucket_ms
        self.tz = ZoneInfo(tz)
        self.hours = _parse_hours(hours)
        self.holidays: dict[str, float | None] = (
            dict(holidays) if isinstance(holidays, Mapping) else dict.fromkeys(holidays or ())
        )
        self.closed = frozenset(closed or ())
        self.slot_ms = slot_minutes * 60_000
        self.n_slots = 1440 // slot_minutes
        self.cusums = ((drop, threshold), (outage_drop, outage_threshold))
        self.cap = cap
        self.warmup_days = warmup_days
        self.hold_back = hold_back
        self.recover_threshold = recover_threshold
        self.rebase_ms = rebase_days * DAY_MS
        self.alpha = 1.0 / (cell_cv * cell_cv)
        self.scale_prior = scale_prior
        per_week = self.slot_ms / bucket_ms  # weight a slot receives per week
        self.decay_cell = 2.0 ** (-7.0 / (season_halflife_days * per_week))
        self.decay_pool = self.decay_cell ** (1.0 / 7.0)
        self.scale_per_bucket = bucket_ms / (scale_halflife_days * DAY_MS)  # half-lives per bucket
        self.scale_per_sale = 1.0 / scale_halflife_sales  # half-lives per expected sale
        # Learned sums: per (weekday, slot), per slot pooled, per weekday (counts vs pooled rate).
        self.cell_n = [[0.0] * self.n_slots for _ in range(7)]
        self.cell_e = [[0.0] * self.n_slots for _ in range(7)]
        self.pool_n = [0.0] * self.n_slots
        self.pool_e = [0.0] * self.n_slots
        self.weekday_factors: list[tuple[int, float]] = [(-1, 1.0)] * 7  # (days_learned, factor)
        self.scale_x = 0.0
        self.scale_m = 0.0
        self.days_learned = 0
        self.last_learned_day = -1
        # CUSUMs and the current excursion.
        self.sums = [0.0, 0.0]
        self.in_drop = False
        self.recovery = 0.0
        self.since_ms: int | None = None
        self.run_expected = 0.0
        self.run_actual = 0.0
        self.pending: deque[tuple[int, float]] = deque()
        self._offset_key = -1  # the UTC hour of the cached zone offset
        self._offset_ms = 0

    def set_calendar(self, tz: str, hours: str | None, holidays: Mapping[str, float | None]) -> None:
        """Read buckets in ``tz`` with these opening hours and holidays from now on (what was
        learned stays: it is kept by local weekday and time of day)."""
        self.tz, self._offset_key = ZoneInfo(tz), -1
        self.hours = _parse_hours(hours)
        self.holidays = dict(holidays)

    # -- calendar -------------------------------------------------------------------
    def _calendar(self, ts_ms: int) -> tuple[int, int, str, int]:
        """(ms after local midnight, weekday, ISO local date, local day ordinal) of a bucket."""
        key = ts_ms // _HOUR_MS  # offsets change on the hour: one zone lookup per UTC hour
        if key != self._offset_key:
            off = dt.datetime.fromtimestamp(key * 3600, self.tz).utcoffset()
            self._offset_ms = int(off.total_seconds() * 1000) if off else 0
            self._offset_key = key
        local = ts_ms + self._offset_ms
        day = local // DAY_MS
        date = dt.date.fromordinal(day + 719_163)  # 1970-01-01 is ordinal 719163
        return local - day * DAY_MS, date.weekday(), date.isoformat(), day

    def _factor(self, ts_ms: int) -> tuple[float | None, bool, int, int, int]:
        """(holiday factor, 1, or None when closed; learnable; ms of day; weekday; local day)."""
        tod, wd, date, day = self._calendar(ts_ms)
        if date in self.closed:
            return None, False, tod, wd, day
        if self.hours is not None:
            o, c = self.hours
            if not (o <= tod < c if o < c else (tod >= o or tod < c)):
                return None, False, tod, wd, day
        if date in self.holidays:
            return self.holidays[date], False, tod, wd, day
        return 1.0, True, tod, wd, day

    def _neighbours(self, tod: int) -> tuple[int, int, float]:
        p = (tod + self.bucket_ms / 2) / self.slot_ms - 0.5
        i = math.floor(p)
        w = p - i
        return i % self.n_slots, (i + 1) % self.n_slots, w

    def _base(self, tod: int, wd: int) -> float | None:
        i, j, w = self._neighbours(tod)
        f = self._weekday_factor(wd)
        num = den = 0.0
        for s, ws in ((i, 1.0 - w), (j, w)):
            pe = self.pool_e[s]
            if pe <= 0 or ws <= 0:
                continue
            prior = max(self.pool_n[s] / pe * f, 1e-6)
            num += ws * (self.cell_n[wd][s] + self.alpha) / (self.cell_e[wd][s] + self.alpha / prior)
            den += ws
        return num / den if den > 0 else None

    @property
    def warm(self) -> bool:
        """Past the warm-up: ``warmup_days`` local days learned, and now a later one."""
        return self.days_learned > self.warmup_days

    @property
    def scale(self) -> float:
        return (self.scale_x + self.scale_prior) / (self.scale_m + self.scale_prior)

    def _expected(self, ts_ms: int) -> tuple[float | None, bool, int, int, int]:
        """(expectation or None when closed or unknown; learnable; ms of day; weekday; local day)."""
        f, learnable, tod, wd, day = self._factor(ts_ms)
        base = None if f is None else self._base(tod, wd)
        return (None if f is None or base is None else f * self.scale * base), learnable, tod, wd, day

    def expected(self, ts_ms: int) -> float | None:
        """Expected net sales in the bucket at ``ts_ms``; None when closed or in warm-up."""
        if not self.warm:
            return None
        return self._expected(ts_ms)[0]

    # -- scoring --------------------------------------------------------------------
    def _step(self, mu: float, x: float) -> tuple[list[float], float]:
        """The CUSUMs and the recovery sum after a bucket with expectation ``mu`` and count ``x``."""
        sums = []
        for (d, h), s in zip(self.cusums, self.sums, strict=True):
            s = s + d * mu + x * math.log1p(-d)
            sums.append(min(self.cap * h, max(0.0, s)))
        if not self.in_drop:
            return sums, 0.0
        # In a drop: "back to expected" against "still at the drop's rate so far".
        rho = min(max((self.run_actual + x) / (self.run_expected + mu), 0.1), 0.75)
        rec = max(0.0, self.recovery + x * -math.log(rho) - (1.0 - rho) * mu)
        return ([0.0, 0.0], 0.0) if rec >= self.recover_threshold else (sums, rec)

    def _score(self, sums: list[float]) -> float:
        r = max(s / h for s, (_, h) in zip(sums, self.cusums, strict=True))
        return 1.0 - 2.0**-r

    def score_one(self, ts_ms: int, value: float) -> float:
        """Drop score of the bucket at ``ts_ms`` with net sales ``value``; changes nothing."""
        if not self.warm:
            return 0.0
        mu = self._expected(ts_ms)[0]
        if mu is None:
            return 0.0
        return self._score(self._step(mu, max(float(value), 0.0))[0])

    def learn_one(self, ts_ms: int, value: float) -> None:
        """Advance the CUSUMs with the bucket and learn it (now, later, or not: see above)."""
        x = max(float(value), 0.0)
        mu, learnable, tod, wd, day = self._expected(ts_ms)
        if not self.warm or mu is None:
            # Warm-up, closed time, or an open slot never seen open (learn it as it comes).
            if learnable:
                self._learn(tod, wd, day, x)
            return
        self.sums, self.recovery = self._step(mu, x)
        levels = list(zip(self.sums, self.cusums, strict=True))
        if self.sums == [0.0, 0.0]:
            self._end_run()
        else:
            if self.since_ms is None:
                self.since_ms = ts_ms
            self.run_expected += mu
            self.run_actual += x
            if self.in_drop or any(s >= h for s, (_, h) in levels):
                self.in_drop = True
                self.pending.clear()
                if ts_ms - self.since_ms >= self.rebase_ms:  # the drop is the new normal
                    self.scale_x, self.scale_m = self.run_actual, self.run_expected / self.scale
                    self.sums = [0.0, 0.0]
                    self._end_run()
                return
        if all(s < self.hold_back * h for s, (_, h) in levels):
            while self.pending:
                self._learn_ts(*self.pending.popleft())
            if learnable:
                self._learn(tod, wd, day, x)
        elif learnable:
            self.pending.append((ts_ms, x))
            if len(self.pending) > MAX_PENDING:
                self._learn_ts(*self.pending.popleft())

    def _end_run(self) -> None:
        self.in_drop, self.recovery, self.since_ms, self.run_expected, self.run_actual = False, 0.0, None, 0.0, 0.0

    def _learn_ts(self, ts_ms: int, x: float) -> None:
        tod, wd, _, day = self._calendar(ts_ms)
        self._learn(tod, wd, day, x)

    def _weekday_factor(self, wd: int) -> float:
        """The weekday's counts over what the pooled profile expects of it (once a day)."""
        key, f = self.weekday_factors[wd]
        if key != self.days_learned:
            n, e = 5.0, 5.0  # 5 sales of prior at factor 1
            cn, ce = self.cell_n[wd], self.cell_e[wd]
            for s in range(self.n_slots):
                if self.pool_e[s] > 0:
                    n += cn[s]
                    e += ce[s] * self.pool_n[s] / self.pool_e[s]
            f = n / e
            self.weekday_factors[wd] = (self.days_learned, f)
        return f

    def _learn(self, tod: int, wd: int, day: int, x: float) -> None:
        base = self._base(tod, wd)
        if base is not None:
            ds = 2.0 ** -max(self.scale_per_bucket, base * self.scale_per_sale)
            self.scale_x = self.scale_x * ds + x
            self.scale_m = self.scale_m * ds + base
        s = int(tod // self.slot_ms)  # learn into the bucket's own slot; predict by interpolating
        dc, dp = self.decay_cell, self.decay_pool
        cn, ce = self.cell_n[wd], self.cell_e[wd]
        cn[s] = cn[s] * dc + x
        ce[s] = ce[s] * dc + 1.0
        self.pool_n[s] = self.pool_n[s] * dp + x
        self.pool_e[s] = self.pool_e[s] * dp + 1.0
        if day != self.last_learned_day:
            self.last_learned_day = day
            self.days_learned += 1

    def state(self) -> DropState:
        return DropState(
            score=self._score(self.sums),
            in_drop=self.in_drop,
            expected=self.run_expected,
            actual=self.run_actual,
        )

    def __getstate__(self) -> dict[str, object]:
        st = self.__dict__.copy()
        st["tz"] = self.tz.key
        st["_offset_key"], st["_offset_ms"] = -1, 0  # a cache, rebuilt on use
        return st

    def __setstate__(self, st: dict[str, object]) -> None:
        self.__dict__.update(st)
        self.tz = ZoneInfo(str(st["tz"]))


class AlertFingerprint(NamedTuple):
    """A drop alert's identity: the store and the first bucket of the run that fired it."""

    store_id: str
    start_ms: int

    def format(self) -> str:
        return f"drop:{self.store_id}:{self.start_ms}"

    @classmethod
    def parse(cls, text: str) -> AlertFingerprint:
        kind, store_id, start = text.rsplit(":", 2)
        if kind != "drop":
            raise ValueError(f"fingerprint {text!r}: expected 'drop:<store_id>:<start_ms>'")
        return cls(store_id, int(start))


class DropEvent(NamedTuple):
    kind: Literal["firing", "resolved"]
    fingerprint: AlertFingerprint
    ts_ms: int
    score: float


class DropAlerter:
    """Alert lifecycle from a detector's scores, one bucket at a time.

    Fires when the score stays at or above ``threshold`` for ``hold`` open buckets, or at
    once at ``fire_at``; resolves when it stays below ``clear_below`` for ``clear`` open
    buckets (hysteresis); no new firing within ``cooldown_ms`` of a resolution. Closed
    buckets (``active=False``) count for nothing, so a drop does not resolve overnight.
    The fingerprint (store, first bucket of the run at or above ``threshold``) is the same
    on a replay, so a sink can drop duplicates.

    >>> a = DropAlerter("S1", hold=2)
    >>> [e.kind for t, s in enumerate([0.2, 0.55, 0.6, 0.6, 0.1, 0.1, 0.1]) for e in a.update(t, s)]
    ['firing', 'resolved']
    >>> a.fingerprint is None, AlertFingerprint("S1", 1).format()
    (True, 'drop:S1:1')
    """

    def __init__(
        self,
        store_id: str,
        *,
        threshold: float = 0.5,
        hold: int = 1,
        fire_at: float = 0.65,
        clear_below: float = 0.3,
        clear: int = 3,
        cooldown_ms: int = 3_600_000,
    ) -> None:
        self.store_id = store_id
        self.threshold, self.hold, self.fire_at = threshold, hold, fire_at
        self.clear_below, self.clear, self.cooldown_ms = clear_below, clear, cooldown_ms
        self.fingerprint: AlertFingerprint | None = None  # set while firing
        self.run_start: int | None = None
        self.run_len = 0
        self.clear_len = 0
        self.resolved_ms: int | None = None

    def update(self, ts_ms: int, score: float, active: bool = True) -> list[DropEvent]:
        if not active:
            return []
        if self.fingerprint is not None:
            self.clear_len = self.clear_len + 1 if score < self.clear_below else 0
            if self.clear_len < self.clear:
                return []
            fp, self.fingerprint, self.clear_len, self.resolved_ms = self.fingerprint, None, 0, ts_ms
            self.run_start, self.run_len = None, 0
            return [DropEvent("resolved", fp, ts_ms, score)]
        if score < self.threshold:
            self.run_start, self.run_len = None, 0
            return []
        if self.run_start is None:
            self.run_start = ts_ms
        self.run_len += 1
        cooling = self.resolved_ms is not None and ts_ms - self.resolved_ms < self.cooldown_ms
        if cooling or (self.run_len < self.hold and score < self.fire_at):
            return []
        self.fingerprint = AlertFingerprint(self.store_id, self.run_start)
        return [DropEvent("firing", self.fingerprint, ts_ms, score)]
