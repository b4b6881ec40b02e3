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

from connectors.records import DeviceBinding, MemberChange, ProfileLatency, Sale, StoreForget, StorePurchase
from connectors.schemas import MemberErased, MemberProfile
from flows.loyalty import LoyaltyOf, no_loyalty
from flows.member_ledger import TOMBSTONE, Applied, MemberLedger
from storepulse.metrics import POINTS_ISSUED, POINTS_REDEEMED

ProfileOutput = MemberProfile | MemberErased | StorePurchase | StoreForget | DeviceBinding | ProfileLatency


class MemberSnapshot(NamedTuple):
    """What a member's key holds in a snapshot: its ledger, when a tombstone-only ledger
    (nothing but the erase ts) is to be discarded (wall clock, UTC), and the points earned
    and redeemed per merchant its last profile showed (for the points counters)."""

    ledger: MemberLedger
    tombstone_until: datetime | None
    points_shown: dict[str, tuple[int, int]] | None = None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ProfileLogic(StatefulBatchLogic[Sale | MemberChange, ProfileOutput, bytes]):
    """bytewax glue: one ``MemberLedger`` per member, snapshotted as a pickled
    ``MemberSnapshot``. An erase emits ``MemberErased`` and forgets what it names (``erase``);
    a member left with nothing but the erase ts (the tombstone) is discarded ``tombstone``
    after its last erase, by ``notify_at``/``on_notify``. ``now`` is the wall clock;
    ``loyalty`` the merchants' points programmes now.

    Besides profiles and erasures it tells the steps downstream what they need, so no
    other step keeps member state of its own: a ``StorePurchase`` per sale applied (the
    repurchase rate), a ``DeviceBinding`` per binding event applied (the member's visits
    from sightings); on an erase, a ``StoreForget`` per store and an ``erased``
    ``DeviceBinding`` per device of the member, then the purchases and bindings the
    rebuilt ledger keeps (records newer than the erase). What each profile shows earned
    and redeemed beyond the member's last profile goes to the ``storepulse_points_*``
    counters."""

    def __init__(
        self,
        ledger: MemberLedger | None,
        tombstone_until: datetime | None = None,
        points_shown: dict[str, tuple[int, int]] | None = None,
        *,
        tombstone: timedelta = TOMBSTONE,
        now: Callable[[], datetime] = _utc_now,
        loyalty: LoyaltyOf = no_loyalty,
    ) -> None:
        self.ledger = ledger if ledger is not None else MemberLedger()
        self.tombstone_until = tombstone_until
        self.points_shown = points_shown or {}
        self.tombstone = tombstone
        self.now = now
        self.loyalty = loyalty

    def on_batch(self, values: list[Sale | MemberChange]) -> tuple[list[ProfileOutput], bool]:
        member_id = values[0].member_id or ""  # the key: every record of the batch names it
        out: list[ProfileOutput] = []
        ledger = self.ledger
        produced: list[int] = []
        for value in values:
            if isinstance(value, Sale):
                self._apply(member_id, value, out)
                if value.produced_ms is not None:
                    produced.append(value.produced_ms)
            elif value.kind == "erase":
                self._erase(member_id, value.ts, out)
            elif value.device is None:
                ledger.change(value)
            else:  # a binding event: tell the device, and forget a device it pushed out
                devices = set(ledger.device_events)
                if ledger.change(value) is Applied.MEMBER_EVENT:
                    bound = value.kind == "bind_device"
                    out.append(DeviceBinding(value.device, member_id, value.ts, bound))
                for dropped in devices - ledger.device_events.keys():  # beyond the 20 kept
                    out.append(DeviceBinding(dropped, member_id, value.ts, False, erased=True))
        if ledger.as_of_ts is not None:  # else nothing but the tombstone is left: no profile
            profile = ledger.profile(member_id, self.loyalty)
            self._count_points(profile)
            out.append(profile)
            if produced:
                out.append(ProfileLatency(member_id, tuple(produced)))
        return out, StatefulBatchLogic.RETAIN

    def _apply(self, member_id: str, sale: Sale, out: list[ProfileOutput]) -> None:
        if self.ledger.apply(sale) is Applied.SALE:
            out.append(StorePurchase(sale.store_id, member_id, sale.ts))

    def _count_points(self, profile: MemberProfile) -> None:
        """What the profile shows earned and redeemed beyond the last profile, per merchant,
        to the points counters (a replay re-rates: only increases count)."""
        shown = {a.merchant_id: (a.earned, a.redeemed) for a in profile.loyalty}
        for merchant, (earned, redeemed) in shown.items():
            was_earned, was_redeemed = self.points_shown.get(merchant, (0, 0))
            if earned > was_earned:
                POINTS_ISSUED.labels(merchant=merchant).inc(earned - was_earned)
            if redeemed > was_redeemed:
                POINTS_REDEEMED.labels(merchant=merchant).inc(redeemed - was_redeemed)
        self.points_shown = shown

    def _erase(self, member_id: str, ts: int, out: list[ProfileOutput]) -> None:
        ledger = self.ledger
        stores, devices = set(ledger.store_last_ts), set(ledger.device_events)
        erased = ledger.erase(ts)
        self.points_shown = {}
        out.append(MemberErased(member_id=member_id, ts=erased))
        self.tombstone_until = self.now() + self.tombstone
        out.extend(StoreForget(store, member_id, erased) for store in sorted(stores))
        out.extend(DeviceBinding(device, member_id, erased, False, erased=True) for device in sorted(devices))
        # What the rebuilt ledger keeps (records newer than the erase), told again.
        seen: set[str] = set()
        for record in ledger.recent:
            if isinstance(record, Sale) and record.txn_id not in seen:
                seen.add(record.txn_id)  # the first arrival of a txn id is the one applied
                if not record.refund and record.amount > 0:
                    out.append(StorePurchase(record.store_id, member_id, record.ts))
        for device, (event_ts, bound) in sorted(ledger.device_events.items()):
            out.append(DeviceBinding(device, member_id, event_ts, bound))

    def notify_at(self) -> datetime | None:
        return self.tombstone_until if self.ledger.as_of_ts is None else None

    def on_notify(self) -> tuple[list[ProfileOutput], bool]:
        """The tombstone's life is over: a member with nothing else is discarded (the next
        snapshot of its key is a deletion); one with records after the erase keeps its ts."""
        if self.ledger.as_of_ts is None:
            return [], StatefulBatchLogic.DISCARD
        return [], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        snapshot = MemberSnapshot(self.ledger, self.tombstone_until, self.points_shown)
        return pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)


def build_profile_logic(
    resume: bytes | None,
    *,
    tombstone: timedelta = TOMBSTONE,
    now: Callable[[], datetime] = _utc_now,
    loyalty: LoyaltyOf = no_loyalty,
) -> ProfileLogic:
    """The ``stateful_batch`` builder: a new member, or one resumed from its snapshot (a
    ``MemberSnapshot``, or a bare ``MemberLedger`` written before tombstones)."""
    if resume is None:
        return ProfileLogic(None, tombstone=tombstone, now=now, loyalty=loyalty)
    state = pickle.loads(resume)
    if isinstance(state, MemberLedger):
        return ProfileLogic(state, tombstone=tombstone, now=now, loyalty=loyalty)
    return ProfileLogic(
        state.ledger, state.tombstone_until, state.points_shown, tombstone=tombstone, now=now, loyalty=loyalty
    )


def update_profiles(
    step_id: str,
    items: Stream[tuple[str, Sale | MemberChange]],
    *,
    tombstone_s: float = TOMBSTONE.total_seconds(),
    loyalty: LoyaltyOf = no_loyalty,
) -> Stream[ProfileOutput]:
    """Apply ``(member_id, Sale | MemberChange)`` to each member's ledger; one profile per
    member per batch (none while the member has nothing but a tombstone), one
    ``MemberErased`` per erase, and what the steps downstream need (``ProfileLogic``).

    ``step_id`` names the stateful step: it is the recovery key of every member's ledger.
    ``tombstone_s``: wall-clock seconds a tombstone-only member is kept after its last
    erase, to drop late records older than the erase; keep it above the decoders' maximum
    event age (7 days by default), so no such record can come after it. ``loyalty``:
    the merchants' points programmes now (``Catalog.loyalty`` of the current catalog).
    """
    tombstone = timedelta(seconds=tombstone_s)

    def build(resume: bytes | None) -> ProfileLogic:
        return build_profile_logic(resume, tombstone=tombstone, loyalty=loyalty)

    outputs = op.stateful_batch(step_id, items, build)  # (member_id, MemberProfile | MemberErased)
    return op.key_rm(f"unkey_{step_id}", outputs)
