"""Repurchase rate per store (flows/repurchase.py): literal purchases in, exact store
records out (the arithmetic in comments), a property test against a plain batch
computation (``repurchase_truth`` below) in ts order and in any arrival order, a pickle
round trip, the snapshot of a store after an erasure, and the step inside a dataflow with
a crash and a resume."""

from __future__ import annotations

import pickle
import random
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given
from hypothesis import strategies as st

from connectors.records import StoreForget, StorePurchase
from connectors.schemas import StoreMembers
from flows.repurchase import RepurchaseLogic, StoreMembersState, keyed_by_store, store_repurchase
from tests.flows.test_profiles import snaps

T0 = 1_763_870_400_000  # 2025-11-23 04:00:00 UTC
DAY = 86_400_000  # written out here, not imported: the oracle does not share the code's constants

Record = StorePurchase | StoreForget


def buy(member: str, ts: int, store: str = "S1") -> StorePurchase:
    return StorePurchase(store, member, ts)


def forget(member: str, ts: int, store: str = "S1") -> StoreForget:
    return StoreForget(store, member, ts)


def repurchase_truth(records: Sequence[Record]) -> dict[str, StoreMembers]:
    """The independent batch computation, on the whole arrival-ordered list at once: per
    store, ``as_of`` = the largest purchase ts; a purchase counts if no ``StoreForget`` of
    its member at its store arrives after it and its ts is in ``(as_of - 30 days, as_of]``;
    active = members with >= 1 counted purchase, repeat = with >= 2."""
    as_of: dict[str, int] = {}
    for r in records:
        if isinstance(r, StorePurchase):
            as_of[r.store_id] = max(as_of.get(r.store_id, r.ts), r.ts)
    counted: dict[str, Counter[str]] = {store: Counter() for store in as_of}
    for i, r in enumerate(records):
        if not isinstance(r, StorePurchase):
            continue
        forgotten = any(
            isinstance(later, StoreForget) and (later.store_id, later.member_id) == (r.store_id, r.member_id)
            for later in records[i + 1 :]
        )
        if not forgotten and as_of[r.store_id] - 30 * DAY < r.ts <= as_of[r.store_id]:
            counted[r.store_id][r.member_id] += 1
    truth = {}
    for store, counts in counted.items():
        active = len(counts)
        repeat = sum(1 for n in counts.values() if n >= 2)
        truth[store] = StoreMembers(
            store_id=store,
            as_of_ts=as_of[store],
            members_active=active,
            members_repeat=repeat,
            repurchase_rate=repeat / active if active else None,
        )
    return truth


def by_logic_in_batches(records: Sequence[Record], cuts: list[int] | None = None) -> dict[str, StoreMembers]:
    """Like the engine: each store's records in arrival order, cut into batches (``cuts``:
    batch sizes, cycled; one batch if empty) through ``RepurchaseLogic``, its snapshot
    pickled between batches; the last record of each store."""
    sizes = cuts or [len(records) or 1]
    per_store: dict[str, list[Record]] = {}
    for r in records:
        per_store.setdefault(r.store_id, []).append(r)
    last: dict[str, StoreMembers] = {}
    for store, items in per_store.items():
        snapshot: bytes | None = None
        start, i = 0, 0
        while start < len(items):
            size = sizes[i % len(sizes)]
            logic = RepurchaseLogic(None if snapshot is None else pickle.loads(snapshot))
            out, retain = logic.on_batch(items[start : start + size])
            assert retain is RepurchaseLogic.RETAIN and len(out) <= 1
            if out:
                last[store] = out[0]
            snapshot = pickle.dumps(logic.snapshot())
            start, i = start + size, i + 1
    return last


def members_of(records: Sequence[Record], store: str = "S1") -> StoreMembers:
    return by_logic_in_batches(records)[store]


# ---- hand-worked examples -----------------------------------------------------------


def test_two_purchases_of_one_member_and_one_of_another_give_one_half() -> None:
    # M1 buys twice, M2 once, within 30 days: active 2, repeat 1 (M1), rate 1/2.
    got = members_of([buy("M1", T0), buy("M2", T0 + DAY), buy("M1", T0 + 2 * DAY)])
    assert got == StoreMembers(
        store_id="S1", as_of_ts=T0 + 2 * DAY, members_active=2, members_repeat=1, repurchase_rate=0.5
    )


def test_two_purchases_at_the_same_ts_are_two_purchases() -> None:
    got = members_of([buy("M1", T0), buy("M1", T0)])
    assert (got.members_active, got.members_repeat, got.repurchase_rate) == (1, 1, 1.0)


def test_a_purchase_31_days_before_the_newest_drops_out() -> None:
    # M1 bought at T0 and T0 + 1 d; M2 buys at T0 + 31 d: as_of = T0 + 31 d, the window is
    # (T0 + 1 d, T0 + 31 d]. M1's T0 purchase is out (31 days old), and so is the one at
    # T0 + 1 d: the window's start is open (exactly 30 days old). Only M2 is active.
    records = [buy("M1", T0), buy("M1", T0 + DAY)]
    assert members_of(records).members_repeat == 1  # control: both in before M2's purchase
    got = members_of([*records, buy("M2", T0 + 31 * DAY)])
    assert got == StoreMembers(
        store_id="S1", as_of_ts=T0 + 31 * DAY, members_active=1, members_repeat=0, repurchase_rate=0.0
    )
    # One ms later than exactly 30 days old is in: M1 has one purchase in the window.
    got = members_of([buy("M1", T0), buy("M1", T0 + DAY + 1), buy("M2", T0 + 31 * DAY)])
    assert (got.members_active, got.members_repeat, got.repurchase_rate) == (2, 0, 0.0)


def test_the_window_leaves_a_repeat_member_with_one_purchase() -> None:
    # M1: T0 and T0 + 10 d; M2's purchase at T0 + 35 d moves the window to (T0 + 5 d, ...]:
    # M1 keeps one purchase (active, no longer repeat).
    got = members_of([buy("M1", T0), buy("M1", T0 + 10 * DAY), buy("M2", T0 + 35 * DAY)])
    assert (got.members_active, got.members_repeat, got.repurchase_rate) == (2, 0, 0.0)


def test_a_purchase_older_than_the_window_when_it_arrives_changes_nothing() -> None:
    # as_of = T0 + 40 d; a purchase at T0 arrives late: not counted, as_of does not move back.
    before = members_of([buy("M1", T0 + 40 * DAY), buy("M2", T0 + 39 * DAY)])
    after = members_of([buy("M1", T0 + 40 * DAY), buy("M2", T0 + 39 * DAY), buy("M2", T0)])
    assert (
        before
        == after
        == StoreMembers(store_id="S1", as_of_ts=T0 + 40 * DAY, members_active=2, members_repeat=0, repurchase_rate=0.0)
    )
    # and a late purchase inside the window does count, without moving as_of back
    late = members_of([buy("M1", T0 + 40 * DAY), buy("M2", T0 + 39 * DAY), buy("M2", T0 + 20 * DAY)])
    assert (late.as_of_ts, late.members_repeat, late.repurchase_rate) == (T0 + 40 * DAY, 1, 0.5)


def test_a_forget_makes_the_member_vanish_and_a_later_purchase_counts_again() -> None:
    records = [buy("M1", T0), buy("M1", T0 + DAY), buy("M2", T0 + 2 * DAY)]
    assert members_of(records).members_repeat == 1
    # M1 erased: M2 alone is active; as_of stays at the newest purchase seen (M2's anyway)
    got = members_of([*records, forget("M1", T0 + 3 * DAY)])
    assert got == StoreMembers(
        store_id="S1", as_of_ts=T0 + 2 * DAY, members_active=1, members_repeat=0, repurchase_rate=0.0
    )
    # M1 comes back: one purchase after the forget counts once
    got = members_of([*records, forget("M1", T0 + 3 * DAY), buy("M1", T0 + 4 * DAY)])
    assert (got.members_active, got.members_repeat) == (2, 0)


def test_no_active_member_left_gives_no_rate_and_as_of_does_not_move_back() -> None:
    got = members_of([buy("M1", T0), buy("M1", T0 + DAY), forget("M1", T0 + 2 * DAY)])
    assert got == StoreMembers(
        store_id="S1", as_of_ts=T0 + DAY, members_active=0, members_repeat=0, repurchase_rate=None
    )


def test_a_store_that_saw_only_a_forget_emits_nothing() -> None:
    logic = RepurchaseLogic(None)
    assert logic.on_batch([forget("M1", T0)]) == ([], RepurchaseLogic.RETAIN)


def test_state_keeps_two_purchases_per_member_in_the_window_and_pickles() -> None:
    state = StoreMembersState()
    state.apply([buy("M1", T0 + d * DAY) for d in (1, 5, 3, 2)] + [buy("M2", T0 - 40 * DAY), buy("M4", T0)])
    # M1's newest two; M2 was older than the window when it arrived
    assert state.newest == {"M1": (T0 + 5 * DAY, T0 + 3 * DAY), "M4": (T0,)}
    state.apply([buy("M3", T0 + 33 * DAY)])  # window (T0 + 3 d, T0 + 33 d]
    assert state.members("S1") is not None  # prunes: M1's purchase at T0 + 3 d and M4 leave
    assert state.newest == {"M1": (T0 + 5 * DAY,), "M3": (T0 + 33 * DAY,)}
    assert pickle.loads(pickle.dumps(state)) == state
    logic = RepurchaseLogic(state)
    snap = logic.snapshot()
    assert snap == state and snap is not state and snap.newest is not state.newest  # a copy


def test_keyed_by_store_keys_purchases_and_forgets_and_drops_the_rest() -> None:
    assert keyed_by_store(buy("M1", T0, store="S2")) == ("S2", buy("M1", T0, store="S2"))
    assert keyed_by_store(forget("M1", T0)) == ("S1", forget("M1", T0))
    assert keyed_by_store("a profile") is None


# ---- the batch computation, on random data ----------------------------------------------

STORES = ("S1", "S2")
MEMBERS = ("M1", "M2", "M3", "M4", "M5")
# ts on whole days and one ms either side, so exact 30-day boundaries come up often
TS = st.builds(lambda d, ms: T0 + d * DAY + ms, st.integers(0, 75), st.sampled_from([0, 1, -1, DAY // 2]))
PURCHASES = st.lists(st.builds(StorePurchase, st.sampled_from(STORES), st.sampled_from(MEMBERS), TS), max_size=40)
FORGETS = st.lists(st.builds(StoreForget, st.sampled_from(STORES), st.sampled_from(MEMBERS), TS), max_size=4)
CUTS = st.lists(st.integers(1, 12), max_size=4)


@given(PURCHASES, CUTS, st.randoms())
def test_the_step_agrees_with_the_batch_computation_in_any_arrival_order(
    purchases: list[StorePurchase], cuts: list[int], rnd: random.Random
) -> None:
    # Purchases alone: the result does not depend on arrival order or batching.
    in_ts_order = sorted(purchases, key=lambda r: r.ts)
    expected = repurchase_truth(in_ts_order)
    assert by_logic_in_batches(in_ts_order, cuts) == expected
    shuffled = list(purchases)
    rnd.shuffle(shuffled)
    assert repurchase_truth(shuffled) == expected  # the oracle is order-free here too
    assert by_logic_in_batches(shuffled, cuts) == expected


@given(PURCHASES, FORGETS, CUTS, st.randoms())
def test_the_step_agrees_with_the_batch_computation_with_forgets(
    purchases: list[StorePurchase], forgets: list[StoreForget], cuts: list[int], rnd: random.Random
) -> None:
    # A forget takes the purchases that arrived before it: interleave them anywhere.
    records: list[Record] = list(purchases)
    rnd.shuffle(records)
    for f in forgets:
        records.insert(rnd.randint(0, len(records)), f)
    assert by_logic_in_batches(records, cuts) == repurchase_truth(records)


def test_the_oracle_itself_on_the_hand_worked_example() -> None:
    # Guards the oracle: 0.5 for two purchases of M1 and one of M2; M2 forgotten -> 1.0.
    records: list[Record] = [buy("M1", T0), buy("M2", T0), buy("M1", T0 + DAY)]
    assert repurchase_truth(records)["S1"].repurchase_rate == 0.5
    assert repurchase_truth([*records, forget("M2", T0)])["S1"].repurchase_rate == 1.0


# ---- in a dataflow: snapshots, crash and resume ---------------------------------------------


def run_flow(items: list, out: list, recovery: RecoveryConfig | None = None) -> None:
    flow = Dataflow("repurchase_test")
    records = op.input("read_store_records", flow, TestingSource(items))  # StorePurchase | StoreForget
    keyed = op.filter_map("key_by_store", records, keyed_by_store)  # (store_id, record)
    op.output("write_store_members", store_repurchase("count_repurchase", keyed), TestingSink(out))
    run_main(flow, epoch_interval=None if recovery is None else timedelta(0), recovery_config=recovery)


def s1_snapshots(recovery_dir: Path) -> list[tuple[int, bytes | None]]:
    return sorted((epoch, change) for step, key, epoch, change in snaps(recovery_dir)
                  if step.endswith(".count_repurchase") and key == "S1")  # fmt: skip


def test_after_a_forget_the_store_snapshot_no_longer_names_the_member(tmp_path: Path) -> None:
    erased = "MEMBER-TO-ERASE"
    items: list[Record] = [
        buy(erased, T0),
        buy("M2", T0 + 1),
        buy(erased, T0 + DAY),
        forget(erased, T0 + 2 * DAY),
        buy("M2", T0 + 3 * DAY),
    ]
    # control: without the forget, the newest snapshot of S1 names the member
    (tmp_path / "control").mkdir()
    init_db_dir(tmp_path / "control", 1)
    run_flow([i for i in items if isinstance(i, StorePurchase)], [], RecoveryConfig(str(tmp_path / "control")))
    control = s1_snapshots(tmp_path / "control")
    assert control and control[-1][1] is not None and erased.encode() in control[-1][1]

    (tmp_path / "erased").mkdir()
    init_db_dir(tmp_path / "erased", 1)
    out: list[StoreMembers] = []
    run_flow(items, out, RecoveryConfig(str(tmp_path / "erased")))
    # after the forget, M2 alone: two purchases (T0 + 1 ms, T0 + 3 d) -> 1 active, 1 repeat
    assert out[-1] == StoreMembers(
        store_id="S1", as_of_ts=T0 + 3 * DAY, members_active=1, members_repeat=1, repurchase_rate=1.0
    )
    snapshots = s1_snapshots(tmp_path / "erased")
    forget_epoch = next(i for i, (_, change) in enumerate(snapshots) if change and erased.encode() not in change)
    assert all(erased.encode() not in (change or b"") for _, change in snapshots[forget_epoch:])
    newest = snapshots[-1][1]
    assert newest is not None
    state = pickle.loads(newest)
    assert isinstance(state, StoreMembersState) and set(state.newest) == {"M2"}


def test_store_repurchase_in_a_dataflow_resumes_after_a_crash(tmp_path: Path) -> None:
    items: list[Record] = [
        buy("M1", T0),
        buy("M2", T0, store="S2"),
        buy("M1", T0 + DAY),
        buy("M3", T0 + 2 * DAY),
        forget("M3", T0 + 3 * DAY),
        buy("M2", T0 + 4 * DAY, store="S2"),
        buy("M4", T0 + 40 * DAY),  # the window moves past M1's purchases
    ]
    expected: list[StoreMembers] = []
    run_flow(items, expected)
    final = {r.store_id: r for r in expected}
    assert final == repurchase_truth(items)
    assert (final["S1"].members_active, final["S1"].members_repeat) == (1, 0)  # M4 only
    assert (final["S2"].members_active, final["S2"].members_repeat) == (1, 1)  # M2 twice

    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    crashing = items[:4] + [TestingSource.ABORT()] + items[4:]  # the abort fires once
    first: list[StoreMembers] = []
    run_flow(crashing, first, recovery)
    assert {r.store_id: r for r in first}["S1"].members_active == 2  # M1, M3: before the forget
    second: list[StoreMembers] = []
    run_flow(crashing, second, recovery)
    # At-least-once output: the resumed run may repeat what followed the last snapshot,
    # but it ends with the uninterrupted records and writes nothing they do not hold.
    assert {r.store_id: r for r in first + second} == final
    assert set(map(repr, first + second)) <= set(map(repr, expected))
