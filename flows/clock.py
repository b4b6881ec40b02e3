"""Event time: how far each input partition has got, and each site's watermark.

``PartitionClock`` (one per input partition, kept by the decode step). A partition's
records are stamped by many clocks: each sensor's, each store's tills. Its progress is
the newest ``ts`` of the *slowest* of those still reporting, not of the fastest, so one
sensor whose clock runs minutes fast cannot make its partition-mates late. A source stops
holding its partition back (is released) when it has sent nothing for ``idle_s`` of wall
time while the partition is read, or when it is more than ``hold_ms`` of event time
behind the median of the sources still reporting (the engine passes the accepted clock
skew, so clocks that differ by less than that never make each other late; a source that
went silent is released after that much event time, the same in a backlog as live). The
median, not the fastest source, is the reference: with three sources or more, a clock
running hours fast in a backlog (where no wall-clock check refuses its records) cannot
release the others. With two, the faster is the reference (silence is common, runaway
clocks are rare). Progress never goes backwards. ``clock_offsets`` tells how far each source's clock is ahead of the
wall clock, for the skew metric and the log.

>>> p = PartitionClock(hold_ms=300_000, idle_s=10.0)
>>> p.advance({"AP-fast": 1_120_000, "AP-ok": 1_000_000}, now=0.0)   # fast sensor +120 s
1000000
>>> p.advance({"AP-fast": 1_180_000}, now=5.0)      # AP-ok has not reported since: held
1000000
>>> p.advance({"AP-fast": 1_190_000}, now=11.0)     # AP-ok silent for 11 s of wall time
1190000
>>> q = PartitionClock(hold_ms=300_000, idle_s=10.0)  # a backlog: one clock a day fast
>>> q.advance({"A": 1_000_000, "B": 1_001_000, "C": 1_000_000 + 86_400_000}, now=0.0)
1000000

``EventClock`` (one per site, kept by the footfall step). Every partition reports its
progress to every site; the site's watermark is the minimum over the partitions, as
Flink's per-partition watermarks are, so reading one partition ahead of another never
makes the other's events late. A partition that reports itself idle (nothing new for a
while at the live edge) stops holding the watermark back until it reports progress
again. When a backlog is read, no partition is idle, so the windows are those live
reading yields.

A new site expects every partition of the engine's inputs: until each has reported
once (progress or idle), there is no watermark. So a partition read far ahead of one that
has not started yet cannot close windows the other still has data for.

>>> c = EventClock(expected={"p/0", "p/1"})
>>> c.observe("p/0", 10_000, idle=False); c.watermark() is None   # p/1 not heard yet
True
>>> c.observe("p/1", 4_000, idle=False); c.watermark()
4000
>>> c.observe("p/1", 4_000, idle=True)   # p/1 has gone quiet at the live edge
>>> c.watermark()
10000
>>> c.observe("p/1", 12_000, idle=False); c.watermark()
10000
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field

FORGET_S = 86_400.0  # a source silent this long (wall time) is forgotten


@dataclass
class SourceClock:
    """One clock on a partition: its newest ``ts``, and when (wall seconds) it was heard."""

    newest_ts: int
    heard_at: float


@dataclass
class PartitionClock:
    hold_ms: int
    idle_s: float
    sources: dict[str, SourceClock] = field(default_factory=dict)
    progress_ts: int | None = None

    def advance(self, newest: Mapping[str, int], now: float) -> int | None:
        """Take one read's newest ``ts`` per source (at wall time ``now``); the progress."""
        sources = self.sources
        for key, ts in newest.items():
            clock = sources.get(key)
            if clock is None:
                sources[key] = SourceClock(ts, now)
            else:
                clock.newest_ts = max(clock.newest_ts, ts)
                clock.heard_at = now
        if not sources:
            return self.progress_ts
        if len(sources) > 1 and min(c.heard_at for c in sources.values()) < now - FORGET_S:
            self.sources = sources = {k: c for k, c in sources.items() if c.heard_at >= now - FORGET_S}
        since = now - self.idle_s
        recent = [c.newest_ts for c in sources.values() if c.heard_at >= since]
        if recent:
            floor_ts = statistics.median_high(recent) - self.hold_ms
            candidate = min(ts for ts in recent if ts >= floor_ts)
        else:  # every source silent: the partition is idle, its newest record is its progress
            candidate = max(c.newest_ts for c in sources.values())
        if self.progress_ts is None or candidate > self.progress_ts:
            self.progress_ts = candidate
        return self.progress_ts



def clock_offsets(newest: Mapping[str, int], now_ms: int) -> dict[str, int]:
    """Each source's newest ``ts`` in one read minus the wall clock at the read (ms).

    At the live edge a record was just sent, so this is the source's clock offset less the
    delivery delay: a positive value is a clock running fast, whatever the source's rate.
    While a backlog is read it is how far behind the read is (negative for every source).

    >>> clock_offsets({"AP-1": 999_200, "AP-2": 1_120_000}, now_ms=1_000_000)
    {'AP-1': -800, 'AP-2': 120000}
    """
    return {k: ts - now_ms for k, ts in newest.items()}


@dataclass
class EventClock:
    expected: set[str] = field(default_factory=set)
    progress: dict[str, int] = field(default_factory=dict)
    idle: set[str] = field(default_factory=set)

    def observe(self, source: str, progress_ts: int | None, *, idle: bool) -> None:
        """Record a partition's report: its progress so far, and whether it is idle."""
        if progress_ts is not None:
            self.progress[source] = max(progress_ts, self.progress.get(source, progress_ts))
        self.expected.discard(source)
        if idle:
            self.idle.add(source)
        else:
            self.idle.discard(source)

    def watermark(self) -> int | None:
        """The event time below which every feeding partition has been read, or None."""
        if any(src not in self.progress and src not in self.idle for src in self.expected):
            return None
        active = [ts for src, ts in self.progress.items() if src not in self.idle]
        if active:
            return min(active)
        return max(self.progress.values()) if self.progress else None
