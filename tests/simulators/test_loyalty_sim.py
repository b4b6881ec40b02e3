"""The simulator's loyalty inputs: the scenario keys, the catalog's merchants and the
points paid with (``simulators.pos.redeem_points``), by hand; then the members-month
scenario (seed 7) through the truth's event-time loyalty replay
(``simulators.profile_truth``): every rule happens, and the accounts do not depend on how
the topics and partitions interleave."""

from __future__ import annotations

import heapq
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from connectors.catalog import Loyalty
from connectors.privacy import DeviceHasher
from connectors.records import MemberChange, Sale
from simulators.pos import TrueSale, redeem_points
from simulators.profile_truth import arrival_order, changes_of, loyalty_steps, member_profiles, programmes_of, sales_of
from simulators.scenario import Scenario
from storepulse.errors import ConfigError

DAY = 86_400_000
HOUR = 3_600_000


def test_scenario_loyalty_is_opt_in_and_validated() -> None:
    bare = Scenario.from_yaml("name: x")  # a scenario that names no programme has none
    assert bare.loyalty == {} and bare.redeem_share == 0.0
    month = Scenario.load("members-month")
    assert len(month.loyalty) == 4 and month.redeem_share == 0.1
    with pytest.raises(ConfigError, match=r"loyalty\['M1'\]: the first level must have upgrade_at 0"):
        Scenario.from_yaml("name: x\nloyalty: {M1: {levels: [{name: a, upgrade_at: 5}]}}")
    with pytest.raises(ConfigError, match="redeem_share needs a loyalty programme"):
        Scenario.from_yaml("name: x\nredeem_share: 0.1")


def test_redeem_points_by_hand() -> None:
    programmes = {"X": Loyalty(unit_minor=100, points_per_unit=1, expiry_days=7)}
    made: list[tuple[TrueSale, list]] = [
        (TrueSale("T1", "S1", 0, 10_000, "cash", "U1"), []),  # earns ~100 (base rate)
        (TrueSale("T2", "S2", 1, 10_000, "cash", "U1"), []),  # S2 is merchant Y: no programme
        (TrueSale("T3", "S1", 2, 10_000, "cash", None), []),  # not a member
        (TrueSale("R1", "S1", 3, 2_000, "cash", "U1", refund=True, ref_txn_id="T1"), []),  # -20: 80
        (TrueSale("T4", "S1", 4, 0, "cash", "U1"), []),  # a reward: may pay with points
        (TrueSale("T5", "S1", 8 * DAY, 5_000, "cash", "U1"), []),  # T1 was 8 days ago: nothing left
    ]
    out = redeem_points(
        np.random.default_rng(0), made, merchant_of={"S1": "X", "S2": "Y"}, programmes=programmes, share=1.0
    )
    redeemed = [t.points_redeemed for t, _ in out]
    # share 1: every member sale at X with a positive estimate pays; T1 has none yet,
    # T4 pays 20-100% of 80, T5 none (lapsed estimate)
    assert redeemed[0] == redeemed[1] == redeemed[2] == redeemed[3] == redeemed[5] == 0
    assert 16 <= redeemed[4] <= 80
    assert [t for t, _ in out][:4] == [t for t, _ in made][:4]  # order and other fields kept
    assert (
        redeem_points(np.random.default_rng(0), made, merchant_of={"S1": "X"}, programmes=programmes, share=0.0) == made
    )


# ---- the members-month scenario: every loyalty rule happens in it, in any arrival order ----


@pytest.fixture(scope="module")
def month() -> tuple[dict[str, Loyalty], list[Sale], list[MemberChange]]:
    from simulators.mall import MallSimulator

    sim = MallSimulator(Scenario.load("members-month"), seed=7)
    return (
        programmes_of(sim.catalog),
        sales_of(sim.truth.transactions),
        changes_of(sim.truth.member_events, DeviceHasher(b"k")),
    )


def test_members_month_exercises_every_loyalty_rule(
    month: tuple[dict[str, Loyalty], list[Sale], list[MemberChange]],
) -> None:
    programmes, sent, changes = month
    merchants = {s.merchant_id for s in sent}
    assert len(programmes) >= 2 and merchants - set(programmes), "loyalty is not wired into the catalog"
    assert len({(p.unit_minor, p.points_per_unit) for p in programmes.values()}) == len(programmes)
    records = arrival_order(sent, changes)
    steps = loyalty_steps(records, programmes)  # the event-time replay, entry by entry
    n: Counter[str] = Counter()
    for s in steps:
        n["upgrades"] += s.level_after > s.level_before
        n["window downgrades"] += s.level_before < s.level_start
        n["refund downgrades"] += s.level_after < s.level_before and s.kind.startswith("refund")
        n["lapses at a sale"] += s.expired > 0
        n["birthday sales"] += s.birthday_pct != 100
        n["redeeming sales"] += s.points_redeemed > 0 and s.kind == "sale"
        n["rewards paid with points"] += s.points_redeemed > 0 and s.kind == "zero_sale"
        n["points returned"] += s.returned > 0
        n["unlinked refunds"] += s.kind == "refund_unmatched"
        n["linked refunds"] += s.kind == "refund_of_sale"
    profiles = member_profiles(records, programmes)
    unstored: Counter[str] = Counter()
    for p in profiles.values():
        for a in p.loyalty:
            unstored["accounts"] += 1
            unstored["shown lapsed"] += a.points == 0 and a.expired > 0
        unstored["birthday month"] += p.birthday_month
    assert all(
        n[k] > 0
        for k in (
            "upgrades",
            "window downgrades",
            "refund downgrades",
            "lapses at a sale",
            "birthday sales",
            "redeeming sales",
            "rewards paid with points",
            "points returned",
            "unlinked refunds",
            "linked refunds",
        )
    ), n
    # Floors, not a run's counts (seed 7 has 762 upgrades, 242 lapses, 251 redeeming sales,
    # 1,005 accounts): they say each rule is common, not a corner case. About 3,600 member
    # sales fall at merchants with a programme and redeem_share is 0.1, so about 360 draws
    # may redeem (fewer pay: a first sale has no balance): 100 is well under that. Nearly
    # all of the 328 members (319) buy at a programme merchant, many at several: 300 accounts
    # is fewer than one each.
    assert n["upgrades"] >= 100 and n["lapses at a sale"] >= 50 and n["redeeming sales"] >= 100, n
    assert unstored["accounts"] >= 300 and unstored["shown lapsed"] > 0 and unstored["birthday month"] > 0
    # every level of every programme is held by someone at the end
    held = {(a.merchant_id, a.level) for p in profiles.values() for a in p.loyalty}
    assert held == {(m, level.name) for m, p in programmes.items() for level in p.levels}
    # points are only redeemed at merchants with a programme, by members, never on a refund
    assert all(s.merchant_id in programmes and not s.refund for s in sent if s.points_redeemed)
    # the totals add up, account by account
    assert all(
        a.points == a.earned - a.redeemed - a.taken_back + a.returned - a.expired
        for p in profiles.values()
        for a in p.loyalty
    )


def test_members_month_loyalty_does_not_depend_on_arrival_order(
    month: tuple[dict[str, Loyalty], list[Sale], list[MemberChange]],
) -> None:
    """Another interleaving the engine could read: each store's transactions (a refund names
    a sale of its own store) in their send order, but the stores' streams delayed by
    different amounts (as partitions read at different speeds), and members.events read 3
    days behind. Which transactions are applied and each refund's verdict stay the same
    (each store's order is kept), so every account must be the same."""
    programmes, sent, changes = month
    by_store: dict[str, list[Sale]] = {}
    for s in sent:
        by_store.setdefault(s.store_id, []).append(s)
    delay = {store: k * 5 * HOUR for k, store in enumerate(sorted(by_store, reverse=True))}
    streams: list[list[Sale | MemberChange]] = [list(v) for v in by_store.values()]
    streams.append(list(changes))

    def read_at(r: Sale | MemberChange) -> int:
        return r.ts + (3 * DAY if isinstance(r, MemberChange) else delay[r.store_id])

    other = list(heapq.merge(*streams, key=read_at))  # keeps each stream's order
    usual = arrival_order(sent, changes)
    assert sorted(map(id, other)) == sorted(map(id, usual)) and other != usual
    # the reorder matters to an arrival-order rule: sales whose birthday bonus "as applied
    # so far" (the newest profile event read before the sale) differs from the one by event
    # time (the newest profile event dated at or before the sale)
    read: dict[str, tuple[int, str | None]] = {}
    differ = 0
    for r in other:
        if isinstance(r, MemberChange):
            if r.kind == "profile" and (r.member_id not in read or r.ts >= read[r.member_id][0]):
                read[r.member_id] = (r.ts, r.birthday)
            continue
        p = programmes.get(r.merchant_id)
        if r.refund or r.amount == 0 or p is None or p.birthday_multiplier_pct == 100:
            continue
        member, sold_in = r.member_id or "", datetime.fromtimestamp(r.ts / 1000, UTC).strftime("%m")
        by_ts = [
            (e.ts, k, e.birthday)
            for k, e in enumerate(changes)
            if e.kind == "profile" and e.member_id == member and e.ts <= r.ts
        ]
        by_event_time = (max(by_ts)[2] if by_ts else None) or ""
        as_read = read.get(member, (0, None))[1] or ""
        differ += (as_read[:2] == sold_in) != (by_event_time[:2] == sold_in)
    assert differ >= 10, differ
    truth, again = member_profiles(usual, programmes), member_profiles(other, programmes)
    assert truth.keys() == again.keys()
    assert {m: p.loyalty for m, p in truth.items()} == {m: p.loyalty for m, p in again.items()}
    assert {m: p.birthday_month for m, p in truth.items()} == {m: p.birthday_month for m, p in again.items()}
    assert sum(len(p.loyalty) for p in truth.values()) >= 300
    assert truth == again  # and the rest of the profile too, as the contract's "Order" says
