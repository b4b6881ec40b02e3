"""Ground truth of a simulation run: true visits, true sales, injected bad records.

Reads nothing but what the simulator hands it; writes nothing. ``visits`` holds every
store entry of every person (with or without a phone); ``sales`` holds the sales and
refunds that reached the stream (one replaced by a bad record did not); ``bad`` counts
the bad records injected by (logical topic, reason the engine must give); ``mac_owner``
tells whose phone used each (simulated) MAC, stable, rotated or bound; ``people`` are
all who made a trip, with or without a store visit; ``transactions`` is every
``pos.transactions`` value as sent (repeats and bad records included), in send order,
``repeats`` how many of them repeat an earlier one, and ``pos_counts()`` counts each
messy case of the export (``simulators.messy``); ``member_events`` is every
``members.events`` value as sent, in send order, and ``erasures`` counts the erase events
among them. ``devices`` are the devices that never leave (store equipment, staff
phones): their MACs are in ``mac_owner`` and their sightings in the stream, but they are
not ``people`` and make no ``visits``. Street stores
are their own site, so their visits carry the store id as ``mall_id`` (as the engine's
``Visit.mall_id`` does).

>>> t = Truth(visits=[TrueVisit("M", "S1", "p1", True, False, 3_600_000, 3_900_000),
...                   TrueVisit("M", "S1", "p2", True, True, 3_700_000, 3_760_000),
...                   TrueVisit("M", "S1", "p3", False, False, 3_700_000, 4_700_000)],
...           sales=[], bad={})
>>> t.visitors_by_store_hour("all", 120), t.visitors_by_store_hour("all", 30)
({('S1', 3600000): 1}, {('S1', 3600000): 2})
>>> t.dwell_median_s("all", 30), t.dwell_median_s("stable", {"S1": 30})
(180.0, 300.0)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from simulators.pos import TrueSale

HOUR_MS = 3_600_000
Kind = Literal["all", "stable"]


@dataclass(frozen=True, slots=True)
class TrueVisit:
    """One store entry: ``start_ts``/``end_ts`` (epoch ms) are the door crossings in and out.
    ``randomized``: the person's phone probed with randomised MACs."""

    mall_id: str
    store_id: str
    person_id: str
    has_phone: bool
    randomized: bool
    start_ts: int
    end_ts: int

    @property
    def dwell_s(self) -> float:
        return (self.end_ts - self.start_ts) / 1000.0


@dataclass(frozen=True, slots=True)
class TruePerson:
    """Someone who made at least one trip: phone or not, MAC kind, membership."""

    person_id: str
    site: str
    has_phone: bool
    randomized: bool
    member_id: str | None


@dataclass(frozen=True, slots=True)
class TrueDevice:
    """A device that never leaves (``simulators.fixed``): store equipment probing around
    the clock or a staff phone present while the store is open. Not a person: it makes
    no trip and no visit, and no count of people or visitors includes it."""

    device_id: str
    site: str
    store_id: str
    kind: str  # "equipment" or "staff"
    randomized: bool


@dataclass(frozen=True, slots=True)
class PosCounts:
    """The transactions that reached the stream, by case (each counted once; repeats apart).

    ``sales`` have an amount above 0 (``member_sales`` of them name a member);
    ``zero_sales`` are sales of amount 0; ``refunds`` = ``linked_refunds`` (naming their
    sale) + ``unlinked_refunds``; ``partial_refunds`` are for less than their sale's
    amount, ``split_refunds`` (partial too) refund what a partial one left; ``repeats``
    are messages sent a second time."""

    sales: int
    member_sales: int
    zero_sales: int
    refunds: int
    linked_refunds: int
    unlinked_refunds: int
    partial_refunds: int
    split_refunds: int
    repeats: int


@dataclass
class Truth:
    visits: list[TrueVisit]
    sales: list[TrueSale]
    bad: dict[tuple[str, str], int]
    mac_owner: dict[str, str] = field(default_factory=dict)  # MAC -> person_id or device_id
    people: dict[str, TruePerson] = field(default_factory=dict)
    devices: dict[str, TrueDevice] = field(default_factory=dict)  # fixed devices: no people
    transactions: list[bytes] = field(default_factory=list)  # pos.transactions values, as sent
    repeats: int = 0
    member_events: list[bytes] = field(default_factory=list)  # members.events values, as sent

    @property
    def erasures(self) -> int:
        """How many erase events were sent (``erase_share``)."""
        return sum(1 for v in self.member_events if v.startswith(b'{"type":"erase"'))

    def pos_counts(self) -> PosCounts:
        """Counts of each case of the ``pos.transactions`` export."""
        sales = [s for s in self.sales if not s.refund]
        refunds = [s for s in self.sales if s.refund]
        return PosCounts(
            sales=sum(s.amount > 0 for s in sales),
            member_sales=sum(s.amount > 0 and s.member_id is not None for s in sales),
            zero_sales=sum(s.amount == 0 for s in sales),
            refunds=len(refunds),
            linked_refunds=sum(r.ref_txn_id is not None for r in refunds),
            unlinked_refunds=sum(r.ref_txn_id is None for r in refunds),
            partial_refunds=sum(r.partial for r in refunds),
            split_refunds=sum(r.split for r in refunds),
            repeats=self.repeats,
        )

    def _qualifying(self, kind: Kind, min_dwell_s: dict[str, int] | int) -> list[TrueVisit]:
        if kind not in ("all", "stable"):
            raise ValueError(f"kind must be 'all' or 'stable', got {kind!r}")
        out = []
        for v in self.visits:
            if not v.has_phone or (kind == "stable" and v.randomized):
                continue
            need = min_dwell_s if isinstance(min_dwell_s, int) else min_dwell_s.get(v.store_id, 0)
            if v.end_ts - v.start_ts >= need * 1000:
                out.append(v)
        return out

    def visitors_by_store_hour(self, kind: Kind, min_dwell_s: dict[str, int] | int
                               ) -> dict[tuple[str, int], int]:
        """Visits of people with a phone (``stable``: a stable MAC) that lasted at least the
        store's minimum dwell, by (store, UTC hour of the start as epoch ms)."""
        counts = Counter(
            (v.store_id, v.start_ts - v.start_ts % HOUR_MS)
            for v in self._qualifying(kind, min_dwell_s)
        )
        return dict(sorted(counts.items()))

    def people_by_store_hour(self) -> dict[tuple[str, int], float]:
        """People with a phone inside each store, on average over each UTC hour (the sum of
        their time inside in the hour / 1 h), by (store, hour as epoch ms); every visit, however
        short (people present, not visitors).

        >>> t = Truth(visits=[TrueVisit("M", "S", "p", True, False, 0, 5_400_000),
        ...                   TrueVisit("M", "S", "q", False, False, 0, 3_600_000)], sales=[], bad={})
        >>> t.people_by_store_hour()
        {('S', 0): 1.0, ('S', 3600000): 0.5}
        """
        inside: dict[tuple[str, int], float] = {}
        for v in self.visits:
            if not v.has_phone:
                continue
            t = v.start_ts
            while t < v.end_ts:
                hour = t - t % HOUR_MS
                end = min(v.end_ts, hour + HOUR_MS)
                inside[(v.store_id, hour)] = inside.get((v.store_id, hour), 0.0) + (end - t) / HOUR_MS
                t = end
        return dict(sorted(inside.items()))

    def dwell_median_s(self, kind: Kind, min_dwell_s: dict[str, int] | int) -> float:
        """Median dwell (seconds) of the visits ``visitors_by_store_hour`` counts (NaN if
        there are none)."""
        dwells = [v.dwell_s for v in self._qualifying(kind, min_dwell_s)]
        return float(np.median(dwells)) if dwells else float("nan")

    def sales_by_store(self) -> dict[str, tuple[int, int]]:
        """(count, amount in fen) of the sales of each store, refunds excluded (zero-amount
        sales included)."""
        out: dict[str, tuple[int, int]] = {}
        for s in self.sales:
            if not s.refund:
                count, amount = out.get(s.store_id, (0, 0))
                out[s.store_id] = (count + 1, amount + s.amount)
        return dict(sorted(out.items()))

    def bad_counts(self) -> dict[tuple[str, str], int]:
        """Injected bad records by (logical topic, reason)."""
        return dict(sorted(self.bad.items()))
