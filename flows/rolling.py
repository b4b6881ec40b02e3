"""Distinct members over the last N closed minutes, updated incrementally.

Each member remembers the last minute it was seen and each minute how many members it
was the last sighting of, so the distinct count of any window up to N minutes is a sum
of at most N small integers, with no set unions per minute.

>>> r = RollingDistinct(60)
>>> r.add_minute(0, {1, 2, 3}); r.add_minute(1, {3, 4}); r.add_minute(20, {5})
>>> r.distinct(20, 15), r.distinct(20, 60)
(1, 5)
>>> r.add_minute(61, {1}); r.distinct(61, 60)  # minutes 2-61: members 5 and 1
2
"""

from __future__ import annotations

from collections.abc import Iterable


class RollingDistinct:
    def __init__(self, span_minutes: int) -> None:
        self.span = span_minutes
        self.last_seen: dict[int, int] = {}
        self.count_at: dict[int, int] = {}

    def add_minute(self, minute: int, members: Iterable[int]) -> None:
        """Members seen in ``minute`` (minutes must be added in increasing order)."""
        last_seen, count_at = self.last_seen, self.count_at
        for m in members:
            old = last_seen.get(m)
            if old is not None and old in count_at:
                count_at[old] -= 1
            last_seen[m] = minute
            count_at[minute] = count_at.get(minute, 0) + 1
        self._expire(minute)

    def distinct(self, minute: int, window: int) -> int:
        """Distinct members seen in the ``window`` minutes ending with ``minute``."""
        lo = minute - window + 1
        return sum(n for m, n in self.count_at.items() if lo <= m <= minute)

    def _expire(self, minute: int) -> None:
        lo = minute - self.span + 1
        stale = [m for m in self.count_at if m < lo]
        if not stale:
            return
        for m in stale:
            del self.count_at[m]
        # Forget stale members only once they are half the map: amortised O(1) per member.
        if len(self.last_seen) > 2 * sum(self.count_at.values()) + 64:
            self.last_seen = {d: m for d, m in self.last_seen.items() if m >= lo}
