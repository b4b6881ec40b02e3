"""Store visits built from strong sightings, in keyed state with an explicit idle timeout.

A device heard at a store's sensor at or above the sensor's ``visit_rssi`` is inside
the store at that second (``flows.footfall`` lets only the loudest sensor of the second
count, and records where the device was every second it was heard). Seconds within
``BURST_S`` (2 s) of the one before are one probe burst: an active scan sweeps the
channels in about a second, so one scan can be heard in two consecutive seconds.

Segments. A device's inside-seconds at a store form one visit while, between two of them,

- it was not inside another store on ``ELSEWHERE_PROBES`` (2) bursts or more (one is
  radio noise; a burst counts where its first second was), and
- the gap is at most the visit timeout, or the device was heard nowhere in the gap and
  the gap is at most its silence limit: ``SILENT_INTERVALS`` (10) of its mean probe
  intervals, if that is longer than the timeout (at most an hour). A phone that stays
  goes that long without a probe with probability e^-10; a slow prober (one probe
  every two minutes, say) is often silent for longer than a 600 s timeout. The mean
  interval is the mean gap between burst starts over the hour up to the gap, counting
  gaps no longer than the timeout (longer ones are taken for time out of range), and
  needs ``MIN_INTERVALS`` (3) of them. A randomised MAC's limit is the timeout: a
  randomised MAC that falls silent has usually rotated.

A visit is closed once event time has passed its last second plus the timeout (so the
probes that bound it are in) and no later second can join it: the next inside second
does not, or there is none yet and either the device has been heard elsewhere since or
its silence limit has passed. Each decision uses only seconds up to then, all in closed
minutes, so the result does not depend on the order in which sightings are read or on
how often visits are closed.

Dwell. A visit starts between the last probe heard outside the store (in the corridor,
in another store, or too weak at the storefront) and the first probe inside, and ends
between the last probe inside and the next one outside (``crossing``). Probes come at
random times, so on its own the crossing is uniform over that gap (the midpoint). But
the time between stores is a short walk, and the site measures it: when a device that
stayed in one store (two bursts or more) is heard on two bursts in another, with only
probes outside any store in between and no gap over the timeout, the ``N`` bursts heard
outside in between times the device's mean probe interval estimate the walk (Poisson
thinning, ``E[N] = C / interval``; walks heard on no probe count as 0); their mean over
the hour before the visit, from ``MIN_WALKS`` (20) walks on, is the site's mean walk
``c``. With walks ``Exp(c)``: from a corridor probe the crossing is the rest of the walk
(memoryless), cut at the gap; from a probe inside another store the device first left
that store (uniformly) and then walked over. The posterior mean is the estimate.
Where the device was not heard outside within the timeout, the Poisson estimate stands
in: with ``n`` probe seconds over a stay ``T``, ``E[last - first] = T (n-1)/(n+1)``
(order statistics of uniform points), so one mean probe interval of the visit,
``(last - first)/(n-1)``, is added at that end (a single probe has none: without outside
probes on both sides it is not a visit). A visit is counted when the estimated dwell
reaches the store's minimum dwell, unless it is one burst whose nearest outside probes
before and after were both inside the same other store: that is the other store's visit
heard loudest here once, radio noise, as one burst elsewhere does not end a visit.

Randomised MACs rotate. When a randomised device's visit ends and, within the visit
timeout, a randomised device with the same frame fingerprint appears at the same store
with an 802.11 sequence number that continues the old one, and was not inside another
store (two bursts) meanwhile, the two are one phone: the old seconds move to the new
device and one visit is counted. Visits are judged in order of their last second, so a
chain of rotations is followed the same way however far event time moved at once.

>>> t = VisitTracker()
>>> for s in (0, 30, 60, 90, 120):   # a phone probing every 30 s for two minutes
...     t.add("S1", device=1, ts_ms=s * 1000, randomized=False, fingerprint=0, seq=None, rule=Rule(120, 300))
>>> t.heard(1, 150, None)   # then heard in the corridor: left at about 135 s
>>> # no probe heard before it came in: one mean interval (30 s) before the first, -30 s
>>> [(v.start_ts, v.end_ts, v.dwell_s) for v in t.close(horizon_ms=1_000_000)]
[(-30000, 135000, 165.0)]
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass, field

from flows.probing import (
    ELSEWHERE_PROBES,
    PLACEMENT_KEPT_S,
    Placements,
    bursts,
    crossing,
    inside_elsewhere,
    mean_interval,
    second_of,
    silent,
    walk_bursts,
)

STITCH_MAX_SEQ_STEP = 256
SILENT_INTERVALS = 10
MIN_WALKS = 20


@dataclass(frozen=True)
class Rule:
    """A store's visit definition: minimum dwell and idle timeout, in seconds."""

    min_dwell_s: int
    timeout_s: int


@dataclass(frozen=True)
class ClosedVisit:
    store_id: str
    device: int
    start_ts: int
    end_ts: int
    dwell_s: float
    randomized: bool


@dataclass
class Track:
    """The open inside-seconds of one device at one store, sorted.

    ``seqs`` maps a second to the (lowest, highest) sequence number heard in it. Seconds
    before ``scanned`` are known to lie in one gap-free run from ``seconds[0]``; they are
    all before the last horizon, so no later sighting can land among them (it would be
    late), and the next scan for a segment end starts there: each second is scanned once.
    """

    randomized: bool
    fingerprint: int
    rule: Rule
    seconds: list[int] = field(default_factory=list)
    seqs: dict[int, tuple[int, int]] = field(default_factory=dict)
    scanned: int = 1
    silence: tuple[int, int] = (-1, 0)  # (second, silence limit after it), memoised
    walk: tuple[int, float | None] = (-1, None)  # (first second, the site's mean walk before it)

    def add(self, second: int, seq: int | None) -> None:
        secs = self.seconds
        if not secs or second > secs[-1]:
            secs.append(second)
        else:
            i = bisect.bisect_left(secs, second)
            if i == len(secs) or secs[i] != second:
                secs.insert(i, second)
        if seq is not None:
            lo, hi = self.seqs.get(second, (seq, seq))
            self.seqs[second] = (min(lo, seq), max(hi, seq))

    def silence_limit(self, marks: Placements, second: int) -> int:
        """How long the device may go unheard after ``second`` and still be inside: the
        timeout, or ``SILENT_INTERVALS`` of its mean probe intervals up to then (at most
        ``PLACEMENT_KEPT_S``) if that is longer: a device that stays goes that long without
        a probe with probability e^-10. Depends only on where it was heard up to ``second``.
        A randomised MAC that falls silent has usually rotated (stitching follows the
        phone to its new MAC), so its limit is the timeout."""
        if self.silence[0] != second:
            timeout = self.rule.timeout_s
            mean = None if self.randomized else mean_interval(marks, second, timeout)
            limit = timeout if mean is None else max(timeout, min(PLACEMENT_KEPT_S, int(SILENT_INTERVALS * mean)))
            self.silence = (second, limit)
        return self.silence[1]

    def joins(self, marks: Placements, store_id: str, prev: int, second: int) -> bool:
        """Do inside-seconds ``prev`` < ``second`` belong to one visit? Not if the device was
        inside another store in between, nor after a gap longer than the timeout, unless
        it was heard nowhere in that gap and the gap is within its silence limit."""
        if second - prev > self.rule.timeout_s:
            return silent(marks, prev, second) and second - prev <= self.silence_limit(marks, prev)
        return not inside_elsewhere(marks, store_id, prev, second)

    def first_segment_end(self, horizon_s: int | None, store_id: str, marks: Placements) -> int | None:
        """Index just past the first segment if it has ended before ``horizon_s`` (None:
        the input has ended, so it has), else None. It has ended once its next second
        does not join it (``joins``) or, with no next second, once no later second could,
        and the timeout after its last second has passed (so its bounding probes are in)."""
        secs = self.seconds
        i = self.scanned
        while i < len(secs) and (horizon_s is None or secs[i] < horizon_s):
            if not self.joins(marks, store_id, secs[i - 1], secs[i]):
                break
            i += 1
        self.scanned = max(1, i)
        if horizon_s is None:
            return i
        last = secs[i - 1]
        if last + self.rule.timeout_s >= horizon_s:
            return None
        if i < len(secs) and secs[i] < horizon_s:
            return i
        if silent(marks, last, horizon_s) and last + self.silence_limit(marks, last) >= horizon_s:
            return None  # unheard since: it may still be inside
        return i

    def pop_first(self, end: int) -> list[int]:
        segment = self.seconds[:end]
        del self.seconds[:end]
        self.scanned = 1
        return segment


class VisitTracker:
    """Open tracks of one site, keyed by (store, device); where each device was heard
    (from an hour before its oldest open track); the walks between stores measured, by
    minute, for the last two hours of event time or more (while a timeout is longer)."""

    def __init__(self) -> None:
        self.tracks: dict[tuple[str, int], Track] = {}
        # device -> where it was each second it was heard, ascending
        self.placements: dict[int, Placements] = {}
        # minute -> [sum of walk estimates (outside bursts x mean interval), walks] measured then
        self.walks: dict[int, list[float]] = {}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("walks", {})  # a snapshot from before walks were measured

    def add(
        self,
        store_id: str,
        device: int,
        ts_ms: int,
        randomized: bool,
        fingerprint: int,
        seq: int | None,
        rule: Rule,
    ) -> None:
        """Record that ``device`` was inside ``store_id`` at ``ts_ms``."""
        key = (store_id, device)
        track = self.tracks.get(key)
        if track is None:
            track = self.tracks[key] = Track(randomized, fingerprint, rule)
            track.walk = (ts_ms // 1000, self.walk_mean(ts_ms // 1000))
        track.add(ts_ms // 1000, seq)

    def heard(self, device: int, second: int, store_id: str | None, timeout_s: int | None = None) -> None:
        """Record where a device was each second it was heard (``store_id`` None: not
        inside any store; ``timeout_s``: that store's visit timeout). Seconds must come in
        ascending order per device. A walk between two stores that this second confirms
        (``walk_bursts``) is measured: outside bursts times the device's mean interval
        (Poisson thinning: ``E[N] = C / interval``, so the mean of these is the mean walk
        ``C``, walks without a probe included)."""
        marks = self.placements.get(device)
        if marks is None:
            marks = self.placements[device] = []
        marks.append((second, store_id))
        if store_id is None or timeout_s is None:
            return
        n = walk_bursts(marks, timeout_s)
        mean = mean_interval(marks, second, timeout_s) if n is not None else None
        if n is not None and mean is not None:
            walks = self.walks.setdefault(second // 60, [0.0, 0])
            walks[0] += n * mean
            walks[1] += 1

    def walk_mean(self, second: int) -> float | None:
        """The mean walk between stores measured in the hour before ``second``'s minute,
        or None with fewer than ``MIN_WALKS`` walks. Taken when a segment gets its first
        second (those minutes are all closed by then) and kept with it."""
        total, n = 0.0, 0
        minute = second // 60
        for m in range(minute - PLACEMENT_KEPT_S // 60, minute):
            w = self.walks.get(m)
            if w is not None:
                total += w[0]
                n += int(w[1])
        return total / n if n >= MIN_WALKS else None

    def run_start(self, store_id: str, device: int, until_s: int, early_enough_s: int) -> int | None:
        """First second of the device's run of joined inside-seconds that includes its last
        inside-second up to ``until_s`` (None: none), looking back only until a second at or
        before ``early_enough_s``. Walks back with the segment rule (``Track.joins``), so it
        depends only on seconds up to ``until_s``, not on whether an earlier visit has been
        closed yet."""
        track = self.tracks.get((store_id, device))
        if track is None:
            return None
        secs = track.seconds
        i = bisect.bisect_right(secs, until_s) - 1
        if i < 0:
            return None
        marks = self.placements.get(device, [])
        while i > 0 and secs[i] > early_enough_s and track.joins(marks, store_id, secs[i - 1], secs[i]):
            i -= 1
        return secs[i]

    def rule_of(self, store_id: str, device: int) -> Rule | None:
        track = self.tracks.get((store_id, device))
        return track.rule if track else None

    def close(self, horizon_ms: int | None) -> list[ClosedVisit]:
        """End every visit whose last second plus timeout is before ``horizon_ms``
        (None: end them all) and return those that qualify.

        Segments are handled in order of their last second, so a rotated phone's earlier
        MAC is always stitched before its successor's visit is judged, however far the
        horizon moved (a stitched segment joins its heir's first segment, whose last
        second, and so its place in the order, stays the same).
        """
        horizon_s = None if horizon_ms is None else horizon_ms // 1000
        ready: list[tuple[int, tuple[str, int]]] = []
        no_marks: Placements = []
        for key, track in self.tracks.items():
            end = track.first_segment_end(horizon_s, key[0], self.placements.get(key[1], no_marks))
            if end is not None:
                ready.append((track.seconds[end - 1], key))
        heapq.heapify(ready)
        out: list[ClosedVisit] = []
        while ready:
            _, key = heapq.heappop(ready)
            track = self.tracks[key]
            marks = self.placements.get(key[1], no_marks)
            end = track.first_segment_end(horizon_s, key[0], marks)
            if end is None:
                continue
            segment = track.pop_first(end)
            if not self._stitch(key, track, segment):
                visit = self._visit(key, track, segment)
                if visit is not None:
                    out.append(visit)
            for s in segment:
                track.seqs.pop(s, None)
            if not track.seconds:
                del self.tracks[key]
                continue
            track.walk = (track.seconds[0], self.walk_mean(track.seconds[0]))
            end = track.first_segment_end(horizon_s, key[0], marks)
            if end is not None:
                heapq.heappush(ready, (track.seconds[end - 1], key))
        if horizon_s is not None:
            self._forget_placements(horizon_s)
        return out

    def _forget_placements(self, horizon_s: int) -> None:
        """Keep a device's placements from an hour before its oldest open visit (or before
        the horizon when it has none): enough to find where it was before it came in.
        Keep the walks of the hour before the earliest second a segment can still start
        at: a segment ends at most ``max(timeout, PLACEMENT_KEPT_S)`` before the horizon."""
        oldest: dict[int, int] = {}
        longest = PLACEMENT_KEPT_S
        for (_, device), track in self.tracks.items():
            first = track.seconds[0]
            longest = max(longest, track.rule.timeout_s)
            if first < oldest.get(device, horizon_s):
                oldest[device] = first
        keep_minute = (horizon_s - longest - PLACEMENT_KEPT_S) // 60 - 1
        for minute in [m for m in self.walks if m < keep_minute]:
            del self.walks[minute]
        for device in list(self.placements):
            marks = self.placements[device]
            keep_from = oldest.get(device, horizon_s) - PLACEMENT_KEPT_S
            if marks[-1][0] < keep_from:
                del self.placements[device]
            elif marks[0][0] < keep_from:
                del marks[: bisect.bisect_left(marks, keep_from, key=second_of)]

    def _outside(
        self, device: int, store_id: str, second: int, direction: int, timeout_s: int
    ) -> tuple[int, str | None] | None:
        """The nearest (second, place) before (direction -1) or after (+1) ``second``,
        within the timeout, at which the device was heard but not inside ``store_id``."""
        marks = self.placements.get(device, [])
        i = bisect.bisect_left(marks, second, key=second_of)
        i = i - 1 if direction < 0 else i
        while 0 <= i < len(marks) and abs(marks[i][0] - second) <= timeout_s:
            if marks[i][1] != store_id and marks[i][0] != second:
                return marks[i]
            i += direction
        return None

    def _visit(self, key: tuple[str, int], track: Track, seg: list[int]) -> ClosedVisit | None:
        store_id, device = key
        timeout = track.rule.timeout_s
        before = self._outside(device, store_id, seg[0], -1, timeout)
        after = self._outside(device, store_id, seg[-1], +1, timeout)
        if (
            before is not None
            and after is not None
            and before[1] is not None
            and before[1] == after[1]
            and bursts(seg) < ELSEWHERE_PROBES
        ):
            return None  # one burst heard loudest here while inside another store: radio noise
        gap = (seg[-1] - seg[0]) / (len(seg) - 1) if len(seg) > 1 else None  # mean probe interval
        walk = track.walk[1] if track.walk[0] == seg[0] else self.walk_mean(seg[0])
        if before is not None:
            start: float | None = before[0] + crossing(seg[0] - before[0], before[1], walk)
        else:
            start = seg[0] - gap if gap is not None else None
        if after is not None:
            end: float | None = after[0] - crossing(after[0] - seg[-1], after[1], walk)
        else:
            end = seg[-1] + gap if gap is not None else None
        if start is None or end is None or end - start < track.rule.min_dwell_s:
            return None
        return ClosedVisit(store_id, device, round(start * 1000), round(end * 1000), end - start, track.randomized)

    def _stitch(self, key: tuple[str, int], track: Track, seg: list[int]) -> bool:
        """Hand a randomised segment to the device its phone rotated to, if there is one:
        the same fingerprint, first inside here within the timeout after the segment with
        a sequence number that continues it, and (by where that device was heard) one
        visit with the segment: not inside another store in between."""
        if not track.randomized or not track.fingerprint or seg[-1] not in track.seqs:
            return False
        last_seq = track.seqs[seg[-1]][1]
        best: tuple[int, int] | None = None
        for (store, device), other in self.tracks.items():
            if store != key[0] or device == key[1] or not other.randomized:
                continue
            if other.fingerprint != track.fingerprint or not other.seconds:
                continue
            first = other.seconds[0]
            if not 0 < first - seg[-1] <= track.rule.timeout_s or first not in other.seqs:
                continue
            if not 0 < (other.seqs[first][0] - last_seq) % 4096 <= STITCH_MAX_SEQ_STEP:
                continue
            heard = self.placements.get(device, [])
            if not all(other.joins(heard, store, a, b) for a, b in zip(seg, [*seg[1:], first], strict=True)):
                continue  # the new MAC was inside another store meanwhile: another phone
            if best is None or (first, device) < best:
                best = (first, device)
        if best is None:
            return False
        heir = self.tracks[(key[0], best[1])]
        heir.seconds[:0] = seg  # all before the heir's first second
        heir.scanned = 1
        heir.walk = track.walk
        for s in seg:
            if s in track.seqs:
                heir.seqs[s] = track.seqs.pop(s)
        return True
