"""SalesDropDetector and DropAlerter on seeded synthetic stores (flows/drop_detector.py).

Each store is a Poisson process per 5-minute bucket: peak sales per hour x an intraday
profile (lunch and evening peaks, open 10:00-22:00 Asia/Shanghai) x a weekday factor x a
day-to-day factor (lognormal, 8%). Drops multiply the rate of a window; the expectation
a test compares with is worked out from the same rate array, not from the detector.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from flows.drop_detector import AlertFingerprint, DropAlerter, SalesDropDetector

B = 300_000
DAY = 86_400_000
PER_DAY = 288
START = 1_767_196_800_000  # 2026-01-01 00:00 Asia/Shanghai, a Thursday
WEEKDAY = np.array([0.9, 0.85, 0.9, 0.95, 1.1, 1.3, 1.25])  # Monday first
HOURS = "10:00-22:00"


def rates(peak_per_hour: float, days: int, seed: int) -> np.ndarray:
    """Expected sales per bucket (0 outside 10:00-22:00)."""
    rng = np.random.default_rng(seed)
    k = np.arange(days * PER_DAY)
    hour = (k % PER_DAY) * 5 / 60 + 2.5 / 60
    day = k // PER_DAY
    profile = 0.25 + 0.8 * np.exp(-(((hour - 12.5) / 1.3) ** 2)) + 0.9 * np.exp(-(((hour - 18.5) / 1.8) ** 2))
    is_open = (hour >= 10) & (hour < 22)
    profile = profile / profile[is_open].max() * is_open
    day_factor = np.exp(rng.normal(0.0, 0.08, days))[day]
    return np.asarray(peak_per_hour / 12 * profile * WEEKDAY[(day + 3) % 7] * day_factor)


def counts(rate: np.ndarray, seed: int) -> list[int]:
    return [int(v) for v in np.random.default_rng(seed + 1000).poisson(rate)]


def at(day: int, hh: int, mm: int = 0) -> int:
    """Bucket index of a local time."""
    return day * PER_DAY + (hh * 60 + mm) // 5


def run(det: SalesDropDetector, xs: list[int], start: int = 0) -> list[float]:
    scores = []
    for k in range(start, len(xs)):
        ts = START + k * B
        scores.append(det.score_one(ts, xs[k]))
        det.learn_one(ts, xs[k])
    return scores


def first_alert(scores: list[float], from_k: int) -> int | None:
    """Buckets from ``from_k`` to the first score at or above 0.5 (the default alert)."""
    return next((k - from_k for k in range(from_k, len(scores)) if scores[k] >= 0.5), None)


@pytest.mark.parametrize(("peak", "seed"), [(40.0, 1), (3.0, 2)], ids=["busy", "quiet"])
def test_six_normal_weeks_raise_no_alert(peak: float, seed: int) -> None:
    xs = counts(rates(peak, 42, seed), seed)
    det = SalesDropDetector(hours=HOURS)
    scores = run(det, xs)
    assert max(scores[: 14 * PER_DAY]) == 0.0  # warm-up: 14 learned days, no score
    assert max(scores) < 0.5
    assert det.days_learned == 42


def test_sixty_percent_drop_for_two_hours_at_a_busy_store() -> None:
    rate = rates(60.0, 29, 3)
    lo, hi = at(28, 12), at(28, 14)  # 12:00-14:00 on day 29 (a Thursday), the lunch peak
    rate[lo:hi] *= 0.4
    xs = counts(rate, 3)
    det = SalesDropDetector(hours=HOURS)
    scores = run(det, xs)
    assert max(scores[:lo]) < 0.5
    delay = first_alert(scores, lo)
    # 60/h at the peak is ~5 a bucket: a 60% drop adds ~1.1 nats a bucket to the 11-nat
    # CUSUM, ~10 buckets; the first ones (below half the threshold) are still learned, which
    # lowers the level a little: 65 minutes with this seed. 30 minutes would take h ~ 6.
    assert delay is not None and delay * 5 <= 70, delay
    # The alert's context: the excursion so far is well below its expectation.
    state = det.state()
    assert not state.in_drop  # two normal hours after the drop: recovered
    assert 0 <= state.score < 0.5


def test_one_hour_outage_at_a_medium_store_is_caught_fast() -> None:
    rate = rates(20.0, 22, 4)
    lo = at(21, 18)  # 18:00 on day 22, the evening peak (~1.6 sales a bucket)
    rate[lo : lo + 12] = 0.0
    xs = counts(rate, 4)
    det = SalesDropDetector(hours=HOURS)
    scores = run(det, xs[: lo + 12])
    delay = first_alert(scores, lo)
    # ~1.6 expected a bucket: the outage CUSUM gains 0.9 x 1.6 = 1.4 nats a bucket towards
    # 12, ~9 buckets; 50 minutes with this seed.
    assert delay is not None and delay * 5 <= 50, delay
    st = det.state()
    assert st.in_drop and st.actual == 0 and st.expected > 10


def test_forty_percent_drop_at_a_quiet_store_is_reported_not_required() -> None:
    # 2 sales an hour at the peak: a 40% drop for a whole day takes ~8 expected sales
    # away, ~1.5 nats of evidence at d = 0.5 against a 12-nat threshold. Not required, and
    # not seen: across seeds 5, 8-11 the highest score in the drop was 0.16-0.50 (seed 10
    # just reached 0.5), and normal days at such a store reach 0.25-0.5 too (seed 5 had
    # one false alert at 0.50): at 2/h a drop must be deep and long to stand out.
    rate = rates(2.0, 28, 8)
    lo, hi = at(21, 10), at(22, 10)
    rate[lo:hi] *= 0.6
    xs = counts(rate, 8)
    det = SalesDropDetector(hours=HOURS)
    scores = run(det, xs)
    assert max(scores[:lo]) < 0.5
    assert 0.0 < max(scores[lo:hi]) < 0.5  # some evidence, no alert
    assert not det.state().in_drop  # the drop left no alert behind


def test_closed_time_and_holidays_score_zero_and_teach_nothing() -> None:
    xs = counts(rates(20.0, 21, 6), 6)
    det = SalesDropDetector(hours=HOURS, holidays={"2026-01-22": None, "2026-01-23": 1.5}, closed={"2026-01-24"})
    run(det, xs)
    before = pickle.dumps(det)
    night = START + at(21, 3) * B  # 03:00 on 2026-01-22 (a holiday, and outside hours)
    holiday = START + at(21, 12) * B  # 12:00 on 2026-01-22, a holiday without a factor
    closed = START + at(23, 12) * B  # 2026-01-24, closed
    for ts in (night, holiday, closed):
        assert det.expected(ts) is None
        assert det.score_one(ts, 0) == 0.0
        det.learn_one(ts, 0)
        det.learn_one(ts, 50)
    assert pickle.dumps(det) == before
    # A holiday with a factor is scored against factor x normal, and learned from never.
    normal = START + at(22 + 7, 12) * B  # the same weekday and time a week later
    factored = START + at(22, 12) * B  # 2026-01-23 12:00
    assert det.expected(factored) == pytest.approx(1.5 * det.expected(normal))  # type: ignore[operator]


def test_pickled_mid_stream_gives_identical_scores() -> None:
    rate = rates(15.0, 24, 7)
    rate[at(22, 11) : at(22, 16)] *= 0.2
    xs = counts(rate, 7)
    det = SalesDropDetector(hours=HOURS)
    run(det, xs[: at(22, 12)])
    copy = pickle.loads(pickle.dumps(det))
    rest_a = run(det, xs, at(22, 12))
    rest_b = run(copy, xs, at(22, 12))
    assert rest_a == rest_b
    assert max(rest_a) >= 0.5  # the comparison covers an alert


def test_alerter_fires_once_resolves_once_and_cools_down() -> None:
    a = DropAlerter("S7", hold=2, fire_at=0.9, clear_below=0.3, clear=2, cooldown_ms=6 * B)
    scores = [0.1, 0.6, 0.2, 0.6, 0.7, 0.8, 0.6, 0.2, 0.1, 0.6, 0.6, 0.6, 0.1, 0.6, 0.6, 0.6, 0.6]
    #  k:       0    1    2    3    4    5    6    7    8    9   10   11   12   13   14   15   16
    # 1: one bucket, below hold. 3-4: hold reached at 4 (run starts at 3). 7-8: two below
    # 0.3, resolved at 8. 9-11: cooling until 8 + 6 = 14. 13-14: run from 13 fires at 14.
    events = [(k, e.kind, e.fingerprint) for k, s in enumerate(scores) for e in a.update(START + k * B, s)]
    assert events == [
        (4, "firing", AlertFingerprint("S7", START + 3 * B)),
        (8, "resolved", AlertFingerprint("S7", START + 3 * B)),
        (14, "firing", AlertFingerprint("S7", START + 13 * B)),
    ]
    # Closed buckets count for nothing: the open alert does not resolve overnight.
    assert a.update(START + 17 * B, 0.0, active=False) == []
    assert a.update(START + 18 * B, 0.0, active=False) == []
    assert a.fingerprint == AlertFingerprint("S7", START + 13 * B)
    # Immediate firing above fire_at, and the fingerprint's text form round-trips.
    b = DropAlerter("S8", hold=5, fire_at=0.9)
    assert [e.kind for e in b.update(START, 0.95)] == ["firing"]
    fp = AlertFingerprint("S8", START)
    assert AlertFingerprint.parse(fp.format()) == fp
    assert pickle.loads(pickle.dumps(a)).__dict__ == a.__dict__
