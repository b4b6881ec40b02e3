"""Event time of one site, advanced by the slowest source partition still being read.

Each partition that feeds a site reports how far it has got (the largest event ``ts``
it has carried). The site's watermark is the minimum over those partitions, as Flink's
per-partition watermarks are, so reading one partition ahead of another never makes the
other's events late. A partition that reports itself idle (nothing new for a while at
the live edge) stops holding the watermark back until it carries data again. When a
backlog is read, no partition is idle, so the windows are those live reading yields.

>>> c = EventClock()
>>> c.observe("p/0", 10_000, idle=False); c.observe("p/1", 4_000, idle=False)
>>> c.watermark()
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
    progress: dict[str, int] = field(default_factory=dict)
    idle: set[str] = field(default_factory=set)

    def observe(self, source: str, progress_ts: int | None, *, idle: bool) -> None:
        """Record a partition's report: its progress so far, and whether it is idle."""
        if progress_ts is not None:
            self.progress[source] = max(progress_ts, self.progress.get(source, progress_ts))
        if idle:
            self.idle.add(source)
        else:
            self.idle.discard(source)

    def watermark(self) -> int | None:
        """The event time below which every feeding partition has been read, or None."""
        active = [ts for src, ts in self.progress.items() if src not in self.idle]
        if active:
            return min(active)
        return max(self.progress.values()) if self.progress else None
