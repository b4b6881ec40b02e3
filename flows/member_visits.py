"""Member visits: the stores each member visited and where they were last seen, from the
sightings of their bound devices (docs/member-profiles.md, "Visits", is the contract).

Two stateful steps:

``resolve_devices`` reads ``DeviceBinding`` (from the member step: a device bound to or
unbound from a member, or the member erased) and ``DeviceVisit`` (from footfall: a closed
visit of a non-randomised device), keyed by the device id as decimal text. State per
device (``DeviceHistory``): its 20 newest binding events by ``ts``, each (ts, member,
bound). A visit is credited to the member whose newest binding event with ``ts`` <= the
visit's ``start_ts`` is a bind (equal ``ts``: the later arrival); within one batch the
bindings are applied before the visits, so their arrival order in it does not matter.
Writes ``(member_id, MemberVisit)``. A device that was never bound has no state: its
visit costs one lookup and writes nothing. An erasure (``DeviceBinding.erased``, at the
member's erase ts ``E``) turns the member's events with ``ts`` <= E into unbound events
that name nobody (so an older bind of another member is not revived). A device left
without a bind event is discarded (``StatefulBatchLogic.DISCARD``) at once; one whose
newest event is an unbind, a wall-clock ``retain_s`` after it (8 days by default: longer
than the oldest event the decoders accept, so no visit it could credit is still to come).

``track_member_visits`` reads ``(member_id, MemberVisit)`` and erasures ``(member_id,
E)``, keyed by member. State per member (``MemberVisitsState``): per store the newest
visit ``end_ts`` (the 100 stores with the newest, ties by the smaller store id), and the
newest erase ts. An erasure at E forgets every visit with ``end_ts`` <= E and drops later
arriving ones with ``end_ts`` <= E while its tombstone lives; a member left with nothing
but the tombstone is discarded a wall-clock ``tombstone_s`` after its last erase. Writes
one ``VisitsErased`` per erasure, then, per batch, one absolute ``MemberVisits`` if the
member has any visit left.

Guarantee: state is exactly-once through bytewax snapshots (pickled); outputs are
absolute values, so the replay after a restart rewrites the same records (Redis keeps
the one with the newest ``as_of_ts``: ``state.member_visits``).

>>> h = DeviceHistory()
>>> h.apply(DeviceBinding(7, "M1", 1_000, True))
>>> h.apply(DeviceBinding(7, "M1", 5_000, False))
>>> h.member_at(999), h.member_at(1_000), h.member_at(4_999), h.member_at(5_000)
(None, 'M1', 'M1', None)
"""

from __future__ import annotations

import bisect
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic

from connectors.records import DeviceBinding, DeviceVisit
from connectors.schemas import MemberVisits, VisitsErased

HISTORY_KEPT = 20  # binding events kept per device
STORES_KEPT = 100  # stores kept per member
RETAIN = timedelta(days=8)  # wall-clock life of an unbound device's history, of a tombstone


class MemberVisit(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A visit credited to a member (``resolve_devices`` -> ``track_member_visits``)."""

    member_id: str
    store_id: str
    start_ts: int
    end_ts: int


# ---- devices ------------------------------------------------------------------------


class BindingEvent(NamedTuple):
    ts: int
    member_id: str | None  # None: an erased member's event, kept as "not bound"
    bound: bool


@dataclass
class DeviceHistory:
    """One device's newest ``HISTORY_KEPT`` binding events, ascending by ``ts`` (equal
    ``ts`` in arrival order). Pure: no clock."""

    events: list[BindingEvent] = field(default_factory=list)

    def apply(self, b: DeviceBinding) -> None:
        """Apply a binding event, or an erasure (``b.erased``) of ``b.member_id`` at ``b.ts``."""
        if b.erased:
            self.events = [
                BindingEvent(e.ts, None, False) if e.member_id == b.member_id and e.ts <= b.ts else e
                for e in self.events
            ]
            return
        event = BindingEvent(b.ts, b.member_id, b.bound)
        if event in self.events:
            return  # the same event again (a replay): it changes nothing
        self.events.insert(bisect.bisect_right(self.events, b.ts, key=_ts_of), event)
        if len(self.events) > HISTORY_KEPT:
            del self.events[0]  # the oldest (an event older than the 20th goes at once)

    def member_at(self, ts: int) -> str | None:
        """The member the device was bound to at ``ts``: the newest event with ``ts`` <= it."""
        i = bisect.bisect_right(self.events, ts, key=_ts_of)
        if i == 0:
            return None
        event = self.events[i - 1]
        return event.member_id if event.bound else None

    def can_credit(self) -> bool:
        """Whether any visit could still be credited: the history holds a bind."""
        return any(e.bound for e in self.events)

    def bound_now(self) -> bool:
        """Whether the newest event is a bind (the device is bound from then on)."""
        return bool(self.events) and self.events[-1].bound


def _ts_of(event: BindingEvent) -> int:
    return event.ts


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DeviceSnapshot(NamedTuple):
    history: DeviceHistory
    unbound_until: datetime | None


class DeviceLogic(StatefulBatchLogic[DeviceBinding | DeviceVisit, tuple[str, MemberVisit], bytes]):
    """bytewax glue: one ``DeviceHistory`` per device, snapshotted as a pickled
    ``DeviceSnapshot``. ``now`` is the wall clock (for the unbound device's expiry only)."""

    def __init__(
        self,
        history: DeviceHistory | None,
        unbound_until: datetime | None = None,
        *,
        retain: timedelta = RETAIN,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.history = history if history is not None else DeviceHistory()
        self.unbound_until = unbound_until
        self.retain = retain
        self.now = now

    def on_batch(self, values: list[DeviceBinding | DeviceVisit]) -> tuple[list[tuple[str, MemberVisit]], bool]:
        history = self.history
        bindings = False
        for value in values:  # bindings first: their arrival order against visits does not matter
            if isinstance(value, DeviceBinding):
                history.apply(value)
                bindings = True
        out: list[tuple[str, MemberVisit]] = []
        if history.events:
            for value in values:
                if isinstance(value, DeviceVisit):
                    member_id = history.member_at(value.start_ts)
                    if member_id is not None:
                        out.append((member_id, MemberVisit(member_id, value.store_id, value.start_ts, value.end_ts)))
        if not history.can_credit():
            return out, StatefulBatchLogic.DISCARD  # never bound, or nobody left: no state
        if bindings:
            self.unbound_until = None if history.bound_now() else self.now() + self.retain
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.unbound_until

    def on_notify(self) -> tuple[list[tuple[str, MemberVisit]], bool]:
        if self.history.bound_now():
            self.unbound_until = None
            return [], StatefulBatchLogic.RETAIN
        return [], StatefulBatchLogic.DISCARD

    def snapshot(self) -> bytes:
        return pickle.dumps(DeviceSnapshot(self.history, self.unbound_until), protocol=pickle.HIGHEST_PROTOCOL)


def build_device_logic(
    resume: bytes | None, *, retain: timedelta = RETAIN, now: Callable[[], datetime] = _utc_now
) -> DeviceLogic:
    if resume is None:
        return DeviceLogic(None, retain=retain, now=now)
    state: DeviceSnapshot = pickle.loads(resume)
    return DeviceLogic(state.history, state.unbound_until, retain=retain, now=now)


def _device_key(item: DeviceBinding | DeviceVisit) -> str:
    return str(item.device)


def resolve_devices(
    step_id: str,
    bindings: Stream[DeviceBinding],
    visits: Stream[DeviceVisit],
    *,
    retain_s: float = RETAIN.total_seconds(),
) -> Stream[tuple[str, MemberVisit]]:
    """Credit each device visit to the member the device was bound to when it began.

    ``step_id`` names the stateful step (the recovery key of every device's history);
    ``retain_s``: wall-clock seconds an unbound device's history is kept after its last
    binding event, for visits still to come that began while it was bound.
    """
    retain = timedelta(seconds=retain_s)
    merged = op.merge(f"merge_{step_id}", bindings, visits)
    keyed = op.key_on(f"key_{step_id}", merged, _device_key)  # (device, DeviceBinding | DeviceVisit)

    def build(resume: bytes | None) -> DeviceLogic:
        return build_device_logic(resume, retain=retain)

    credited = op.stateful_batch(step_id, keyed, build)  # (device, (member_id, MemberVisit))
    return op.key_rm(f"unkey_{step_id}", credited)  # (member_id, MemberVisit)


# ---- members ------------------------------------------------------------------------


@dataclass
class MemberVisitsState:
    """One member's stores (store -> newest visit ``end_ts``) and newest erase ts. Pure."""

    stores: dict[str, int] = field(default_factory=dict)
    erased_ts: int | None = None

    def visit(self, v: MemberVisit) -> None:
        """Apply a visit; dropped if its ``end_ts`` is not after the erase in force."""
        if self.erased_ts is not None and v.end_ts <= self.erased_ts:
            return
        stores = self.stores
        if v.end_ts > stores.get(v.store_id, v.end_ts - 1):
            stores[v.store_id] = v.end_ts
            if len(stores) > STORES_KEPT:  # the oldest goes (ties: the larger store id)
                del stores[max(stores, key=lambda s: (-stores[s], s))]

    def erase(self, ts: int) -> int:
        """Forget every visit with ``end_ts`` <= ``ts``; the erase ts in force after it."""
        erased = ts if self.erased_ts is None else max(ts, self.erased_ts)
        self.erased_ts = erased
        self.stores = {s: end for s, end in self.stores.items() if end > erased}
        return erased

    def record(self, member_id: str) -> MemberVisits | None:
        """The member's absolute record, None if no visit is left."""
        if not self.stores:
            return None
        last_store, last_ts = min(self.stores.items(), key=lambda kv: (-kv[1], kv[0]))
        return MemberVisits(
            member_id=member_id,
            as_of_ts=last_ts,
            stores_visited=tuple(sorted(self.stores)),
            last_seen_ts=last_ts,
            last_seen_store=last_store,
        )


class MemberVisitsSnapshot(NamedTuple):
    state: MemberVisitsState
    tombstone_until: datetime | None


MemberVisitsOut = MemberVisits | VisitsErased


class MemberVisitsLogic(StatefulBatchLogic[MemberVisit | VisitsErased, MemberVisitsOut, bytes]):
    """bytewax glue: one ``MemberVisitsState`` per member, snapshotted as a pickled
    ``MemberVisitsSnapshot``. A member with nothing but its erase ts (the tombstone) is
    discarded ``tombstone`` after its last erase (``notify_at``); ``now`` is the wall clock."""

    def __init__(
        self,
        state: MemberVisitsState | None,
        tombstone_until: datetime | None = None,
        *,
        tombstone: timedelta = RETAIN,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.state = state if state is not None else MemberVisitsState()
        self.tombstone_until = tombstone_until
        self.tombstone = tombstone
        self.now = now

    def on_batch(self, values: list[MemberVisit | VisitsErased]) -> tuple[list[MemberVisitsOut], bool]:
        member_id = values[0].member_id  # the key: every value names it
        state = self.state
        out: list[MemberVisitsOut] = []
        for value in values:
            if isinstance(value, VisitsErased):
                out.append(VisitsErased(member_id=member_id, ts=state.erase(value.ts)))
                self.tombstone_until = self.now() + self.tombstone
            else:
                state.visit(value)
        record = state.record(member_id)
        if record is not None:
            out.append(record)
        elif state.erased_ts is None:
            return out, StatefulBatchLogic.DISCARD  # cannot happen: a visit is only dropped by an erase
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.tombstone_until if not self.state.stores else None

    def on_notify(self) -> tuple[list[MemberVisitsOut], bool]:
        """The tombstone's life is over: a member with nothing else is discarded."""
        if not self.state.stores:
            return [], StatefulBatchLogic.DISCARD
        return [], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(MemberVisitsSnapshot(self.state, self.tombstone_until), protocol=pickle.HIGHEST_PROTOCOL)


def build_member_visits_logic(
    resume: bytes | None, *, tombstone: timedelta = RETAIN, now: Callable[[], datetime] = _utc_now
) -> MemberVisitsLogic:
    if resume is None:
        return MemberVisitsLogic(None, tombstone=tombstone, now=now)
    snap: MemberVisitsSnapshot = pickle.loads(resume)
    return MemberVisitsLogic(snap.state, snap.tombstone_until, tombstone=tombstone, now=now)


def _erasure(item: tuple[str, int]) -> tuple[str, VisitsErased]:
    return item[0], VisitsErased(member_id=item[0], ts=item[1])


def track_member_visits(
    step_id: str,
    visits: Stream[tuple[str, MemberVisit]],
    erasures: Stream[tuple[str, int]],
    *,
    tombstone_s: float = RETAIN.total_seconds(),
) -> Stream[MemberVisitsOut]:
    """Each member's stores visited and last seen: one ``MemberVisits`` per member per batch
    that reached it (none while it has nothing but a tombstone), one ``VisitsErased`` per
    erasure ``(member_id, E)``, E being the member's erase ts (``MemberErased.ts``).

    ``step_id`` names the stateful step (the recovery key of every member's visits);
    ``tombstone_s`` as ``flows.profiles.update_profiles``'s: above the decoders' maximum
    event age, so no visit older than the erasure can come after the tombstone is gone.
    """
    tombstone = timedelta(seconds=tombstone_s)
    forgets = op.map(f"erasures_{step_id}", erasures, _erasure)  # (member_id, VisitsErased)
    merged: Stream[tuple[str, MemberVisit | VisitsErased]] = op.merge(f"merge_{step_id}", visits, forgets)

    def build(resume: bytes | None) -> MemberVisitsLogic:
        return build_member_visits_logic(resume, tombstone=tombstone)

    outputs = op.stateful_batch(step_id, merged, build)  # (member_id, MemberVisits | VisitsErased)
    return op.key_rm(f"unkey_{step_id}", outputs)
