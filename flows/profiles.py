"""Member profiles: each member's spend, stores, categories, RFM score, consent and devices.

Reads ``(member_id, Sale | MemberChange)``: every validated sale and refund that names a
member and every validated member event, in arrival order per member. Writes one
``MemberProfile`` per member per batch that reached it, after the whole batch is applied
(absolute values as of the member's newest transaction or member event), and one
``MemberErased`` per erase (before the batch's profile); a member left with nothing but
its erase ts (the tombstone) gets no profile. docs/member-profiles.md is the contract and is
followed exactly; one member's state is a ``MemberLedger`` (``flows.member_ledger``).
A member left with nothing but the erase ts (the tombstone, which drops late older
records) is discarded (``StatefulBatchLogic.DISCARD``) a wall-clock ``tombstone_s`` after
its last erase (``notify_at``): the next snapshot of it is a deletion.

Guarantee: the state is exactly-once through bytewax snapshots (the pickled
``MemberSnapshot``); a
txn_id repeated within 400 days changes nothing but ``duplicates``. Outputs are absolute
values, so the replay after a restart rewrites the same profiles (Redis keeps the one
with the newest ``as_of_ts``).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic

from connectors.records import MemberChange, Sale
from connectors.schemas import MemberErased, MemberProfile
from flows.member_ledger import TOMBSTONE, MemberLedger


class MemberSnapshot(NamedTuple):
    """What a member's key holds in a snapshot: its ledger, and when a tombstone-only
    ledger (nothing but the erase ts) is to be discarded (wall clock, UTC)."""

    ledger: MemberLedger
    tombstone_until: datetime | None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ProfileLogic(StatefulBatchLogic[Sale | MemberChange, MemberProfile | MemberErased, bytes]):
    """bytewax glue: one ``MemberLedger`` per member, snapshotted as a pickled
    ``MemberSnapshot``. An erase emits ``MemberErased`` and forgets what it names (``erase``);
    a member left with nothing but the erase ts (the tombstone) is discarded ``tombstone``
    after its last erase, by ``notify_at``/``on_notify``. ``now`` is the wall clock."""

    def __init__(
        self,
        ledger: MemberLedger | None,
        tombstone_until: datetime | None = None,
        *,
        tombstone: timedelta = TOMBSTONE,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.ledger = ledger if ledger is not None else MemberLedger()
        self.tombstone_until = tombstone_until
        self.tombstone = tombstone
        self.now = now

    def on_batch(self, values: list[Sale | MemberChange]) -> tuple[list[MemberProfile | MemberErased], bool]:
        member_id = values[0].member_id or ""  # the key: every record of the batch names it
        out: list[MemberProfile | MemberErased] = []
        ledger = self.ledger
        for value in values:
            if isinstance(value, Sale):
                ledger.apply(value)
            elif value.kind == "erase":
                out.append(MemberErased(member_id=member_id, ts=ledger.erase(value.ts)))
                self.tombstone_until = self.now() + self.tombstone
            else:
                ledger.change(value)
        if ledger.as_of_ts is not None:  # else nothing but the tombstone is left: no profile
            out.append(ledger.profile(member_id))
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.tombstone_until if self.ledger.as_of_ts is None else None

    def on_notify(self) -> tuple[list[MemberProfile | MemberErased], bool]:
        """The tombstone's life is over: a member with nothing else is discarded (the next
        snapshot of its key is a deletion); one with records after the erase keeps its ts."""
        if self.ledger.as_of_ts is None:
            return [], StatefulBatchLogic.DISCARD
        return [], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(MemberSnapshot(self.ledger, self.tombstone_until), protocol=pickle.HIGHEST_PROTOCOL)


def build_profile_logic(
    resume: bytes | None, *, tombstone: timedelta = TOMBSTONE, now: Callable[[], datetime] = _utc_now
) -> ProfileLogic:
    """The ``stateful_batch`` builder: a new member, or one resumed from its snapshot (a
    ``MemberSnapshot``, or a bare ``MemberLedger`` written before tombstones)."""
    if resume is None:
        return ProfileLogic(None, tombstone=tombstone, now=now)
    state = pickle.loads(resume)
    if isinstance(state, MemberLedger):
        return ProfileLogic(state, tombstone=tombstone, now=now)
    return ProfileLogic(state.ledger, state.tombstone_until, tombstone=tombstone, now=now)


def update_profiles(
    step_id: str,
    items: Stream[tuple[str, Sale | MemberChange]],
    *,
    tombstone_s: float = TOMBSTONE.total_seconds(),
) -> Stream[MemberProfile | MemberErased]:
    """Apply ``(member_id, Sale | MemberChange)`` to each member's ledger; one profile per
    member per batch (none while the member has nothing but a tombstone), one
    ``MemberErased`` per erase.

    ``step_id`` names the stateful step: it is the recovery key of every member's ledger.
    ``tombstone_s``: wall-clock seconds a tombstone-only member is kept after its last
    erase, to drop late records older than the erase; keep it above the decoders' maximum
    event age (7 days by default), so no such record can come after it.
    """
    tombstone = timedelta(seconds=tombstone_s)

    def build(resume: bytes | None) -> ProfileLogic:
        return build_profile_logic(resume, tombstone=tombstone)

    outputs = op.stateful_batch(step_id, items, build)  # (member_id, MemberProfile | MemberErased)
    return op.key_rm(f"unkey_{step_id}", outputs)
