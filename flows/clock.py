"""Event time of one site, advanced by the slowest source partition still being read.

Each partition that feeds a site reports how far it has got (the largest event ``ts``
it has carried). The site's watermark is the minimum over those partitions, as Flink's
per-partition watermarks are, so reading one partition ahead of another never makes the
other's events late. A partition that reports itself idle (nothing new for a while at
the live edge, or nothing for this site) stops holding the watermark back until it
carries data for the site again. When a backlog is read, no partition is idle, so the
windows are those live reading yields.

A new site expects every partition of the engine's inputs: until each has reported
once (data or idle), there is no watermark. So a partition read far ahead of one that
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

from dataclasses import dataclass, field


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
