"""Probe statistics of one device: where it was heard each second, and what that says.

``Placements`` are a device's heard seconds in ascending order, each with the store it was
inside then (None: heard, but inside no store). From them: probe bursts, the device's mean
probe interval, whether it was inside another store or silent between two seconds, the
walk between two store stays, and when it crossed a door. Pure functions; the visit
tracker (``flows.visits``) keeps the placements and decides the visits.
"""

from __future__ import annotations

import bisect
import math

ELSEWHERE_PROBES = 2
BURST_S = 2
MIN_INTERVALS = 3
PLACEMENT_KEPT_S = 3600

Placements = list[tuple[int, str | None]]  # (second, store the device was inside or None)


def second_of(mark: tuple[int, str | None]) -> int:
    return mark[0]


def inside_elsewhere(marks: Placements, store_id: str, after: int, before: int) -> bool:
    """Was the device inside a store other than ``store_id`` strictly between two seconds,
    on at least ``ELSEWHERE_PROBES`` bursts (one alone is taken for radio noise)? A burst
    is placed where its first second was."""
    i = bisect.bisect_right(marks, after, key=second_of)
    prev = marks[i - 1][0] if i else None
    seen = 0
    while i < len(marks) and marks[i][0] < before:
        second, store = marks[i]
        if store is not None and store != store_id and (prev is None or second - prev > BURST_S):
            seen += 1
            if seen >= ELSEWHERE_PROBES:
                return True
        prev = second
        i += 1
    return False


def silent(marks: Placements, after: int, before: int) -> bool:
    """Was the device heard nowhere strictly between two seconds?"""
    i = bisect.bisect_right(marks, after, key=second_of)
    return i == len(marks) or marks[i][0] >= before


def bursts(seconds: list[int]) -> int:
    """Probe bursts among ascending seconds: a second within ``BURST_S`` of the one before
    it belongs to the same burst (an active scan sweeps the channels in about a second,
    so one scan can be heard in two consecutive seconds).

    >>> bursts([10, 11, 12, 60, 63])
    3
    """
    return sum(1 for i, s in enumerate(seconds) if i == 0 or s - seconds[i - 1] > BURST_S)


def mean_interval(marks: Placements, until: int, timeout_s: int) -> float | None:
    """A device's mean time between probe bursts over the hour up to ``until``, from where
    it was heard (``marks``): the mean of the gaps between burst starts no longer than
    the timeout (a longer one is taken for time out of range), or None with fewer than
    ``MIN_INTERVALS`` such gaps.

    >>> mean_interval([(0, None), (1, None), (40, "S1"), (100, "S1"), (130, None), (900, None)], 900, 600)
    43.333333333333336
    """
    i = bisect.bisect_left(marks, until - PLACEMENT_KEPT_S, key=second_of)
    prev = start = None
    total = n = 0
    while i < len(marks) and marks[i][0] <= until:
        second = marks[i][0]
        if prev is None or second - prev > BURST_S:
            if start is not None and second - start <= timeout_s:
                total += second - start
                n += 1
            start = second
        prev = second
        i += 1
    return total / n if n >= MIN_INTERVALS else None


def walk_bursts(marks: Placements, timeout_s: int) -> int | None:
    """If the device's last mark is the second burst of a stay inside a store that came
    straight after a stay of two bursts or more inside another store (only probes
    outside any store in between, no gap over the timeout, all within the hour before),
    the number of bursts heard outside in between; else None. Stays of one burst are
    radio noise, as elsewhere.

    >>> walk_bursts([(0, "A"), (30, "A"), (60, None), (61, None), (90, None), (120, "B"), (150, "B")], 600)
    2
    >>> walk_bursts([(0, "A"), (60, None), (120, "B"), (150, "B")], 600) is None   # one burst in A
    True
    """

    def starts_burst(j: int) -> bool:
        return j == 0 or marks[j][0] - marks[j - 1][0] > BURST_S

    i = len(marks) - 1
    store = marks[i][1]
    if store is None or not starts_burst(i):
        return None
    lo = marks[i][0] - PLACEMENT_KEPT_S + BURST_S  # marks kept however placements were forgotten
    seen, first, j = 1, i, i - 1  # bursts of this stay, where its first one starts
    while j >= 0 and marks[j][0] >= lo and marks[j][1] in (store, None):
        if marks[j + 1][0] - marks[j][0] > timeout_s:
            return None
        if marks[j][1] == store and starts_burst(j):
            seen, first = seen + 1, j
            if seen > 2:
                return None  # confirmed before
        j -= 1
    if seen != 2 or j < 0 or marks[j][0] < lo or marks[j + 1][0] - marks[j][0] > timeout_s:
        return None
    other, before, k = marks[j][1], 0, j
    while k >= 0 and marks[k][0] >= lo and marks[k][1] in (other, None) and before < 2:
        before += marks[k][1] == other and starts_burst(k)
        if k and marks[k][0] - marks[k - 1][0] > timeout_s:
            break
        k -= 1
    if before < 2:
        return None
    return sum(1 for m in range(j + 1, first) if marks[m][1] is None and starts_burst(m))


def crossing(gap_s: float, outside: str | None, walk_s: float | None) -> float:
    """How long after an outside probe a device crossed a store's door, estimated, when
    its nearest inside probe came ``gap_s`` later (the same backwards from an outside
    probe after a visit). ``outside``: the store it was in at that probe (None: not in a
    store); ``walk_s``: the site's mean walk between stores (None: unknown).

    Probes come at random times, so without more knowledge the crossing is uniform over
    the gap: the midpoint. With walks exponential with mean ``c``: from the corridor the
    rest of the walk is (memoryless) ``Exp(c)``, cut at the gap; from another store the
    device first left it (uniform) and then walked ``C``, with density ``(gap - C)
    e^(-C/c)``, and the crossing is ``(gap + E[C])/2`` on average. Posterior means:

    >>> [round(crossing(60, None, None), 2), round(crossing(60, None, 20), 2), round(crossing(60, "S2", 20), 2)]
    [30.0, 16.86, 36.09]
    """
    if walk_s is None:
        return gap_s / 2
    if walk_s <= 0:
        return 0.0 if outside is None else gap_s / 2
    u = gap_s / walk_s
    if outside is None:
        return walk_s - gap_s / math.expm1(u) if u < 700 else walk_s
    em = math.expm1(-u)  # e^-u - 1
    return (gap_s + walk_s * (2 * u + (u + 2) * em) / (u + em)) / 2
