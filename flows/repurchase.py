"""Repurchase rate per store: the share of a store's members with two or more purchases in
the last 30 days of event time.

Reads ``(store_id, StorePurchase | StoreForget)``: every purchase (a sale of amount > 0)
the member step applied to a member, and one ``StoreForget`` per store of a member when the
member is erased (``connectors.records``). Writes one absolute ``StoreMembers`` per store
per batch that reached it, after the whole batch (none while the store has seen no
purchase).

The rule (event time, windows as in docs/member-profiles.md):

- ``as_of_ts``: the newest purchase ``ts`` seen at the store. It never moves backwards (an
  erasure does not move it either).
- A member is *active* with a purchase at the store with ``ts`` in ``(as_of_ts - 30 days,
  as_of_ts]`` (a day is 86,400,000 ms), *repeat* with two or more (two purchases at the
  same ``ts`` are two purchases).
- ``repurchase_rate = members_repeat / members_active``; None when no member is active
  (only possible after an erasure took the store's last active member).
- ``StoreForget`` forgets every purchase of the member at the store that arrived before it,
  whatever its ``ts``; a purchase that arrives after it counts again.

Order: purchases give the same result in any arrival order (a purchase older than the
window when it arrives is dropped, but it would be outside the window of the final
``as_of_ts`` anyway, which can only be newer). Only where a ``StoreForget`` falls among a
member's purchases depends on arrival.

State per store (``StoreMembersState``): ``as_of_ts`` and, per member with a purchase in
the window, the ``ts`` of their newest two purchases in it (all that "active" and "repeat"
need, whatever the window's end does later); a member whose purchases have all left the
window is dropped, and an erased member is dropped at once, so no state names them. A
store's key is kept for as long as the engine runs (stores are a small fixed set, and
``as_of_ts`` must not move backwards). Each batch counts the store's members once:
O(members active at the store).

Guarantee: the state is exactly-once through bytewax snapshots; outputs are absolute
values keyed by ``as_of_ts``, so the replay after a restart rewrites the same records (Redis
keeps the one with the newest ``as_of_ts``, of equal ones the last: ``state.store_members``).

>>> from connectors.records import StorePurchase
>>> state = StoreMembersState()
>>> state.apply([StorePurchase("S1", "M1", 10 * DAY_MS), StorePurchase("S1", "M1", 11 * DAY_MS),
...              StorePurchase("S1", "M2", 12 * DAY_MS)])
>>> state.members("S1")
StoreMembers(store_id='S1', as_of_ts=1036800000, members_active=2, members_repeat=1, repurchase_rate=0.5)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic

from connectors.records import StoreForget, StorePurchase
from connectors.schemas import StoreMembers

DAY_MS = 86_400_000
WINDOW_MS = 30 * DAY_MS


@dataclass
class StoreMembersState:
    """One store's state (pure: no clock, no metrics). ``newest`` maps a member to the
    ``ts`` of their newest two purchases in the window, newest first (one if they have
    one); every ``ts`` in it is > ``as_of_ts - WINDOW_MS`` after ``members``."""

    as_of_ts: int | None = None
    newest: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def apply(self, records: Iterable[StorePurchase | StoreForget]) -> None:
        """Apply records in arrival order (see the module docstring)."""
        for record in records:
            if isinstance(record, StoreForget):
                self.newest.pop(record.member_id, None)
                continue
            ts = record.ts
            if self.as_of_ts is None or ts > self.as_of_ts:
                self.as_of_ts = ts
            if ts <= self.as_of_ts - WINDOW_MS:
                continue  # older than the window: counts for nothing, now or later
            kept = self.newest.get(record.member_id, ())
            self.newest[record.member_id] = tuple(sorted((*kept, ts), reverse=True)[:2])

    def members(self, store_id: str) -> StoreMembers | None:
        """Drop what has left the window, then count; None before the first purchase."""
        if self.as_of_ts is None:
            return None
        cutoff = self.as_of_ts - WINDOW_MS
        active = repeat = 0
        for member_id, kept in list(self.newest.items()):
            inside = tuple(ts for ts in kept if ts > cutoff)
            if not inside:
                del self.newest[member_id]
                continue
            if inside != kept:
                self.newest[member_id] = inside
            active += 1
            repeat += len(inside) >= 2
        rate = repeat / active if active else None
        return StoreMembers(
            store_id=store_id,
            as_of_ts=self.as_of_ts,
            members_active=active,
            members_repeat=repeat,
            repurchase_rate=rate,
        )


class RepurchaseLogic(StatefulBatchLogic[StorePurchase | StoreForget, StoreMembers, StoreMembersState]):
    """bytewax glue: one ``StoreMembersState`` per store, one ``StoreMembers`` per batch."""

    def __init__(self, state: StoreMembersState | None) -> None:
        self.state = state if state is not None else StoreMembersState()

    def on_batch(self, values: list[StorePurchase | StoreForget]) -> tuple[list[StoreMembers], bool]:
        self.state.apply(values)
        members = self.state.members(values[0].store_id)  # the key: every record names it
        return ([] if members is None else [members]), StatefulBatchLogic.RETAIN

    def snapshot(self) -> StoreMembersState:
        return copy.deepcopy(self.state)


def keyed_by_store(record: object) -> tuple[str, StorePurchase | StoreForget] | None:
    """``(store_id, record)`` for a ``StorePurchase`` or ``StoreForget``, else None: for
    ``op.filter_map`` on the member step's output."""
    if isinstance(record, StorePurchase | StoreForget):
        return record.store_id, record
    return None


def store_repurchase(step_id: str, items: Stream[tuple[str, StorePurchase | StoreForget]]) -> Stream[StoreMembers]:
    """One ``StoreMembers`` per store per batch of ``(store_id, StorePurchase | StoreForget)``.

    ``step_id`` names the stateful step: it is the recovery key of every store's state.
    """
    outputs = op.stateful_batch(step_id, items, RepurchaseLogic)  # (store_id, StoreMembers)
    return op.key_rm(f"unkey_{step_id}", outputs)
