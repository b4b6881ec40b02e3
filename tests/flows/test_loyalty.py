"""Loyalty points and levels in the member ledger (docs/member-profiles.md, "Loyalty"), and
what the member step tells the steps after it. Expected values are worked out by hand in
the comments; the month-long comparison with the independent batch recomputation is
``storepulse eval profiles`` (tests/test_eval.py)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from connectors.catalog import Level, Loyalty
from connectors.records import DeviceBinding, MemberChange, ProfileLatency, Sale, StoreForget, StorePurchase
from connectors.schemas import LoyaltyAccount, MemberErased, MemberProfile
from flows.loyalty import LoyaltyBook, NamedSale
from flows.member_ledger import DAY_MS, MemberLedger, RememberedSale
from flows.profiles import ProfileLogic

T0 = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * 1000)  # a Monday in March (UTC)

# 1 point per yuan (100 fen); silver from 500 yuan (down below 300), gold from 2000 (down below 1500).
PROGRAM = Loyalty(
    unit_minor=100,
    points_per_unit=1,
    birthday_multiplier_pct=200,
    expiry_days=30,
    qualify_days=60,
    levels=[
        Level(name="member", upgrade_at=0),
        Level(name="silver", upgrade_at=50_000, downgrade_below=30_000, multiplier_pct=150),
        Level(name="gold", upgrade_at=200_000, downgrade_below=150_000, multiplier_pct=200),
    ],
)


def programs(merchant_id: str) -> Loyalty | None:
    return PROGRAM if merchant_id == "X" else None


def sale(day: float, txn: str, amount: int, *, merchant: str = "X", redeemed: int = 0, store: str = "S1") -> Sale:
    return Sale(T0 + int(day * DAY_MS), txn, store, amount, False, "M1", 0, merchant_id=merchant,
                payment="cash", points_redeemed=redeemed)


def refund(day: float, txn: str, amount: int, ref: str | None = None, *, merchant: str = "X") -> Sale:
    return Sale(T0 + int(day * DAY_MS), txn, "S1", amount, True, "M1", 0, merchant_id=merchant, ref_txn_id=ref)


def account(ledger: MemberLedger) -> LoyaltyAccount:
    [acc] = ledger.profile("M1", programs).loyalty
    return acc


def test_a_sale_earns_at_the_level_held_before_it_and_upgrades_after() -> None:
    ledger = MemberLedger()
    ledger.apply(sale(0, "T1", 60_000))  # 600 yuan at member (100%): 600 points
    acc = account(ledger)
    assert (acc.points, acc.earned, acc.level, acc.qualifying_spend) == (600, 600, "silver", 60_000)
    ledger.apply(sale(1, "T2", 1_099))  # 10.99 yuan at silver (150%): 1099*150//10000 = 16
    acc = account(ledger)
    assert (acc.points, acc.earned) == (616, 616)


def test_a_whole_refund_takes_back_all_it_earned_and_returns_what_it_redeemed() -> None:
    ledger = MemberLedger()
    ledger.apply(sale(0, "T1", 10_000))  # 100 points
    ledger.apply(sale(1, "T2", 3_000, redeemed=40))  # 30 points, pays 40: 100 + 30 - 40 = 90
    ledger.apply(refund(2, "R1", 1_000, "T2"))  # a third: earned 30*3000//3000 - 30*2000//3000 = 10
    acc = account(ledger)                                  # redeemed 40 - 40*2000//3000 = 40 - 26 = 14 back
    assert (acc.points, acc.taken_back, acc.returned) == (90 - 10 + 14, 10, 14)
    ledger.apply(refund(3, "R2", 5_000, "T2"))  # the rest (2000 left): 20 back, 26 returned
    acc = account(ledger)
    assert (acc.taken_back, acc.returned, acc.redeemed, acc.earned) == (30, 40, 40, 130)
    assert acc.points == 100  # what T1 earned, as if T2 never happened
    assert acc.qualifying_spend == 10_000


def test_a_refund_without_its_sale_takes_back_points_at_the_base_rate() -> None:
    ledger = MemberLedger()
    ledger.apply(sale(0, "T1", 60_000))  # 600 points, silver after
    ledger.apply(refund(1, "R1", 35_050))  # 35050 * 1 // 100 = 350 at the base rate, not 150%
    acc = account(ledger)
    # Q = 60000 - 35050 = 24950 < 30000 (silver's downgrade_below): back to member
    assert (acc.points, acc.taken_back, acc.level, acc.qualifying_spend) == (250, 350, "member", 24_950)


def test_levels_hold_between_thresholds_and_fall_as_spend_leaves_the_qualifying_window() -> None:
    ledger = MemberLedger()
    ledger.apply(sale(0, "T1", 50_000))  # Q 50000: silver
    ledger.apply(refund(1, "R1", 10_000, "T1"))  # Q 40000: below upgrade_at, above 30000: still silver
    assert account(ledger).level == "silver"
    ledger.change(MemberChange(T0 + 61 * DAY_MS, "M1", "consent", 0, push=True))  # T1 left the 60 days
    acc = account(ledger)
    assert (acc.level, acc.qualifying_spend) == ("member", 0)


def test_a_positive_balance_lapses_after_expiry_days_without_a_purchase() -> None:
    ledger = MemberLedger()
    ledger.apply(sale(0, "T1", 10_000))  # 100 points
    ledger.change(MemberChange(T0 + 31 * DAY_MS, "M1", "consent", 0, push=True))  # 31 days > 30 without a purchase
    acc = account(ledger)
    assert (acc.points, acc.expired) == (0, 100)  # lapsed as of the consent
    ledger.apply(sale(32, "T2", 5_000))  # the sale expires the 100, then earns 50
    acc = account(ledger)
    assert (acc.points, acc.expired, acc.earned) == (50, 100, 150)


def test_a_sale_in_the_birthday_month_earns_the_birthday_multiplier() -> None:
    ledger = MemberLedger()
    ledger.apply(sale(1, "T1", 10_000))  # 100 * 200% = 200: the birthday below is in force at its ts
    ledger.change(MemberChange(T0, "M1", "profile", 0, birthday="03-17"))  # March, as T0; arrives late
    ledger.apply(sale(31, "T2", 10_000))  # 2026-04-02: April, 100
    assert account(ledger).earned == 300
    assert ledger.profile("M1", programs).birthday_month is False  # as of April
    ledger.change(MemberChange(T0 + 32 * DAY_MS, "M1", "profile", 0, birthday="04-30"))
    assert ledger.profile("M1", programs).birthday_month is True


def test_a_zero_sale_paid_with_points_redeems_them_and_earns_nothing() -> None:
    ledger = MemberLedger()
    ledger.apply(sale(0, "T1", 10_000))
    ledger.apply(sale(1, "T2", 0, redeemed=80))
    acc = account(ledger)
    assert (acc.points, acc.earned, acc.redeemed) == (20, 100, 80)


def test_a_merchant_without_a_programme_has_no_account_and_a_duplicate_earns_nothing() -> None:
    ledger = MemberLedger()
    ledger.apply(sale(0, "T1", 10_000, merchant="Y"))
    assert ledger.profile("M1", programs).loyalty == ()
    ledger.apply(sale(0, "T2", 10_000))
    ledger.apply(sale(0, "T2", 10_000))  # repeated txn_id
    assert account(ledger).earned == 100


def test_an_erasure_forgets_the_points() -> None:
    ledger = MemberLedger()
    ledger.apply(sale(0, "T1", 10_000))
    ledger.erase(T0 + DAY_MS)
    assert ledger.loyalty == LoyaltyBook()  # nothing of the points is left
    ledger.apply(sale(2, "T2", 2_000))
    assert account(ledger).earned == 20


def points(name: str, merchant: str) -> float:
    return REGISTRY.get_sample_value(f"storepulse_points_{name}_total", {"merchant": merchant}) or 0.0


def test_the_member_step_tells_purchases_bindings_latency_and_points_downstream() -> None:
    logic = ProfileLogic(None, loyalty=programs, now=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    issued, redeemed = points("issued", "X"), points("redeemed", "X")
    bind = MemberChange(T0, "M1", "bind_device", 0, device=42)
    first = sale(0, "T1", 10_000)
    first.produced_ms = 1_000
    out, _ = logic.on_batch([bind, first, sale(0.5, "T2", 0, redeemed=30), refund(1, "R1", 100)])
    assert [type(o) for o in out] == [DeviceBinding, StorePurchase, MemberProfile, ProfileLatency]
    assert out[0] == DeviceBinding(42, "M1", T0, True)
    assert out[1] == StorePurchase("S1", "M1", T0)  # the zero sale and the refund are no purchases
    assert out[3] == ProfileLatency("M1", (1_000,))
    assert (points("issued", "X") - issued, points("redeemed", "X") - redeemed) == (100, 30)


def test_an_erase_tells_every_store_and_device_to_forget_then_what_is_kept_again() -> None:
    logic = ProfileLogic(None, loyalty=programs, now=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    logic.on_batch([
        MemberChange(T0, "M1", "bind_device", 0, device=7),
        sale(0, "T1", 1_000, store="S1"),
        sale(2, "T2", 1_000, store="S2"),
        sale(2, "T2", 1_000, store="S2"),  # a duplicate: told once
        MemberChange(T0 + 2 * DAY_MS, "M1", "bind_device", 0, device=9),
    ])
    out, _ = logic.on_batch([MemberChange(T0 + DAY_MS, "M1", "erase", 0)])  # forgets T1 and device 7's bind
    erased = T0 + DAY_MS
    assert out[:5] == [
        MemberErased(member_id="M1", ts=erased),
        StoreForget("S1", "M1", erased),
        StoreForget("S2", "M1", erased),
        DeviceBinding(7, "M1", erased, False, erased=True),
        DeviceBinding(9, "M1", erased, False, erased=True),
    ]
    assert out[5:7] == [StorePurchase("S2", "M1", T0 + 2 * DAY_MS), DeviceBinding(9, "M1", T0 + 2 * DAY_MS, True)]
    assert isinstance(out[7], MemberProfile) and len(out) == 8


def records_in_two_orders() -> tuple[list[Sale | MemberChange], list[Sale | MemberChange]]:
    """One member's records across two merchants and both topics, in two arrival orders."""
    records: list[Sale | MemberChange] = [
        MemberChange(T0 + 3 * DAY_MS, "M1", "profile", 0, birthday="03-31"),  # in force from day 3
        sale(0, "T1", 40_000),  # 400 at member; Q 40000
        sale(1, "T2", 20_000, store="S2"),  # still member before it: 200; Q 60000: silver after
        refund(2, "R1", 20_000, "T1"),  # half of T1: 400 - 400*20000//40000 = 200 back; Q 40000: silver holds
        sale(3, "T3", 10_000, merchant="Y"),  # Y has no programme
        sale(4, "T4", 10_000, redeemed=50),  # silver, birthday month: 10000*150*200//10^6 = 300, 50 paid
        refund(5, "R2", 15_000),  # unmatched: 150 back at the base rate; Q 35000: silver holds
    ]
    # T2 and T4 (another store: another partition) come first, the profile event last
    shuffled = [records[2], records[5], records[1], records[4], records[3], records[6], records[0]]
    return records, shuffled


def test_accounts_are_the_same_in_any_arrival_order_of_partitions() -> None:
    expected = None
    for order in records_in_two_orders():
        ledger = MemberLedger()
        for record in order:
            if isinstance(record, Sale):
                ledger.apply(record)
            else:
                ledger.change(record)
        acc = account(ledger)
        assert (acc.earned, acc.taken_back, acc.redeemed, acc.points) == (900, 350, 50, 500)
        assert (acc.level, acc.qualifying_spend) == ("silver", 35_000)
        expected = expected or acc
        assert acc == expected


@pytest.mark.parametrize("bad", [
    Loyalty(unit_minor=0),
    Loyalty(levels=[Level(name="a", upgrade_at=5)]),
    Loyalty(levels=[Level(name="a", upgrade_at=0), Level(name="b", upgrade_at=0)]),
    Loyalty(qualify_days=401),
])
def test_a_broken_programme_is_named(bad: Loyalty) -> None:
    assert bad.problem() is not None


def test_folding_entries_out_of_the_400_day_memory_changes_no_account() -> None:
    # Two years of sales every 10 days (one refund of a whole sale 5 days after it, and a
    # birthday); the book folded at every profile equals one replayed whole.
    folded, whole = LoyaltyBook(), LoyaltyBook()
    for book in (folded, whole):
        book.profile_event(T0, "03-20")
    for n in range(73):
        ts = T0 + n * 10 * DAY_MS
        for book in (folded, whole):
            book.sale("X", ts, f"T{n}", 7_000 + 1_000 * (n % 5), 30 if n % 7 == 0 else 0)
            if n % 9 == 0:
                book.refund("X", ts + 5 * DAY_MS, f"R{n}", 7_000, NamedSale(f"T{n}", ts, "X", 7_000 + 1_000 * (n % 5)))
        folded.fold(programs, ts)
        assert folded.accounts(programs, ts) == whole.accounts(programs, ts)
    assert folded.settled and len(folded.entries["X"]) < len(whole.entries["X"])  # it did fold


def test_a_ledger_snapshotted_before_loyalty_resumes_with_an_empty_book() -> None:
    # The state an earlier release pickled: no loyalty book, remembered sales without a merchant.
    old = MemberLedger()
    old.apply(sale(0, "T1", 10_000))
    state = dict(old.__dict__)
    del state["loyalty"]
    remembered = object.__new__(RememberedSale)
    for name, value in (("ts", T0), ("left", 10_000), ("items", ())):
        object.__setattr__(remembered, name, value)
    state["remembered"] = {"T1": remembered}
    resumed = pickle.loads(pickle.dumps(state))
    ledger = MemberLedger.__new__(MemberLedger)
    ledger.__setstate__(resumed)
    assert ledger.loyalty == LoyaltyBook() and ledger.remembered["T1"].merchant_id == ""
    ledger.apply(refund(1, "R1", 4_000, "T1"))  # names the old sale: the profile still works
    p = ledger.profile("M1", programs)
    assert (p.refunded, p.loyalty) == (4_000, ())
