"""Member profiles: literal transactions in, exact profiles out (expected values worked by
hand from docs/member-profiles.md), a property test against the batch oracle
(simulators/profile_truth.py), pickle round trips, and the step inside a dataflow with a
crash and a resume."""

from __future__ import annotations

import itertools
import pickle
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow, Stream
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.records import MemberChange, Sale
from connectors.schemas import Item, MemberErased, MemberProfile
from flows.member_ledger import Applied, MemberLedger, rfm_score
from flows.profiles import MemberSnapshot, ProfileLogic, build_profile_logic, update_profiles
from simulators.profile_truth import arrival_order, decayed_quantities, erasures, member_profiles

T0 = 1_763_870_400_000  # 2025-11-23 04:00:00 UTC
DAY = 86_400_000


def sale(
    ts: int,
    txn: str,
    amount: int,
    *items: Item,
    store: str = "S1",
    payment: str = "wechat",
    member: str = "M1",
) -> Sale:
    return Sale(ts, txn, store, amount, False, member, 0, merchant_id="X", payment=payment, items=list(items))


def refund(ts: int, txn: str, amount: int, ref: str | None = None, *, member: str = "M1") -> Sale:
    return Sale(ts, txn, "S1", amount, True, member, 0, merchant_id="X", payment="wechat", ref_txn_id=ref)


def item(category: str, qty: int) -> Item:
    return Item(f"sku-{category}", category, qty, 100)


def applied(*txns: Sale) -> tuple[MemberLedger, list[Applied]]:
    ledger = MemberLedger()
    return ledger, [ledger.apply(t) for t in txns]


def profile(*txns: Sale) -> MemberProfile:
    ledger, _ = applied(*txns)
    return ledger.profile("M1")


# ---- one transaction at a time ------------------------------------------------------


def test_a_sale() -> None:
    # 1200 at S1 by wechat: 2 coffee, 1 cake. Recency 0 days -> R5; 1 purchase -> F1;
    # 1200 < 5000 -> M1.
    ledger, outcomes = applied(sale(T0, "T1", 1200, item("coffee", 2), item("cake", 1)))
    assert outcomes == [Applied.SALE]
    assert ledger.profile("M1") == MemberProfile(
        member_id="M1",
        as_of_ts=T0,
        sales=1,
        refunds=0,
        zero_sales=0,
        duplicates=0,
        gross_spend=1200,
        refunded=0,
        net_spend=1200,
        avg_ticket=1200,
        first_purchase_ts=T0,
        last_purchase_ts=T0,
        stores=("S1",),
        spend_30d=1200,
        spend_90d=1200,
        purchases_30d=1,
        purchases_90d=1,
        recency_days=0,
        rfm="511",
        favourite_categories=("coffee", "cake"),
        favourite_categories_decayed=("coffee", "cake"),
        preferred_payment="wechat",
    )


def test_a_zero_sale_moves_only_as_of_and_its_count() -> None:
    # The zero sale a day later at S2, by cash, of tea: only zero_sales and as_of_ts move,
    # so recency is now 1 day; stores, categories, payment and purchases stay the sale's.
    ledger, outcomes = applied(
        sale(T0, "T1", 1000, item("coffee", 1)),
        sale(T0 + DAY, "Z1", 0, item("tea", 5), store="S2", payment="cash"),
    )
    assert outcomes == [Applied.SALE, Applied.ZERO_SALE]
    p = ledger.profile("M1")
    assert (p.as_of_ts, p.zero_sales, p.sales, p.gross_spend, p.avg_ticket) == (T0 + DAY, 1, 1, 1000, 1000)
    assert (p.last_purchase_ts, p.recency_days, p.purchases_30d, p.spend_30d) == (T0, 1, 1, 1000)
    assert (p.stores, p.favourite_categories, p.preferred_payment) == (("S1",), ("coffee",), "wechat")


def test_a_member_with_only_a_zero_sale_has_no_purchase_fields() -> None:
    p = profile(sale(T0, "Z1", 0, item("tea", 1)))
    assert (p.as_of_ts, p.sales, p.zero_sales, p.avg_ticket, p.first_purchase_ts, p.last_purchase_ts) == (
        T0,
        0,
        1,
        None,
        None,
        None,
    )
    assert (p.recency_days, p.rfm, p.stores, p.favourite_categories, p.preferred_payment) == (None, None, (), (), None)


def test_a_duplicate_txn_id_is_counted_and_changes_nothing_else() -> None:
    # T1 again (a replay), then T1 with other content (the first record wins), a day later.
    first = sale(T0, "T1", 1000)
    ledger, outcomes = applied(first, first, sale(T0 + DAY, "T1", 5000, store="S9"))
    assert outcomes == [Applied.SALE, Applied.DUPLICATE, Applied.DUPLICATE]
    p = ledger.profile("M1")
    assert (p.duplicates, p.sales, p.gross_spend, p.as_of_ts, p.stores) == (2, 1, 1000, T0, ("S1",))


def test_refunds_naming_their_sale_are_capped_at_what_is_left() -> None:
    # Sale T1 of 10,000 at T0. R1 3,000 names T1: r = min(3000, 10000) = 3000, 7000 left.
    # R2 9,000 names T1: r = min(9000, 7000) = 7000 (capped), 0 left. R3 500: r = 0, but
    # still a refund. refunded = 3000 + 7000 + 0 = 10,000; net 0. Every r comes off at the
    # sale's ts (inside both windows): spend_30d = 10000 - 10000 = 0.
    ledger, outcomes = applied(
        sale(T0, "T1", 10_000),
        refund(T0 + DAY, "R1", 3_000, "T1"),
        refund(T0 + 2 * DAY, "R2", 9_000, "T1"),
        refund(T0 + 3 * DAY, "R3", 500, "T1"),
    )
    assert outcomes == [Applied.SALE] + [Applied.REFUND_OF_SALE] * 3
    p = ledger.profile("M1")
    assert (p.refunds, p.refunded, p.net_spend, p.gross_spend, p.avg_ticket) == (3, 10_000, 0, 10_000, 10_000)
    assert (p.spend_30d, p.spend_90d, p.purchases_30d, p.sales, p.as_of_ts) == (0, 0, 1, 1, T0 + 3 * DAY)


@pytest.mark.parametrize(
    ("ref", "outcome", "spend_30d", "spend_90d"),
    [
        # Unmatched: 4,000 off at the refund's ts (T0 + 40 d, the as_of): inside 30 days,
        # while the sale at T0 is not (T0 <= as_of - 30 d). 30 d: -4000; 90 d: 10000 - 4000.
        (None, Applied.REFUND_UNMATCHED, -4_000, 6_000),
        ("T-unknown", Applied.REFUND_UNMATCHED, -4_000, 6_000),
        # Naming T1: 4,000 off at the sale's ts, outside 30 days. 30 d: 0; 90 d: 6000.
        ("T1", Applied.REFUND_OF_SALE, 0, 6_000),
    ],
)
def test_where_a_refund_comes_off_the_windows(
    ref: str | None, outcome: Applied, spend_30d: int, spend_90d: int
) -> None:
    ledger, outcomes = applied(sale(T0, "T1", 10_000), refund(T0 + 40 * DAY, "R1", 4_000, ref))
    assert outcomes == [Applied.SALE, outcome]
    p = ledger.profile("M1")
    assert (p.spend_30d, p.spend_90d, p.refunded, p.net_spend) == (spend_30d, spend_90d, 4_000, 6_000)


def test_an_unmatched_refund_is_not_capped() -> None:
    # 5,000 refunded against 1,000 bought, no sale named: refunded 5000, net -4000.
    p = profile(sale(T0, "T1", 1_000), refund(T0, "R1", 5_000))
    assert (p.refunded, p.net_spend, p.spend_30d) == (5_000, -4_000, -4_000)


def test_a_refund_naming_another_members_sale_is_unmatched() -> None:
    # T1 is M1's. M2's refund of 3,000 names it: M2 never made T1, so rule 5 (uncapped,
    # at the refund's ts); M1's sale is untouched.
    txns = [
        sale(T0, "T1", 1_000, member="M1"),
        sale(T0, "T2", 500, member="M2"),
        refund(T0 + DAY, "R1", 3_000, "T1", member="M2"),
    ]
    m1, m2 = MemberLedger(), MemberLedger()
    outcomes = [(m1 if t.member_id == "M1" else m2).apply(t) for t in txns]
    assert outcomes == [Applied.SALE, Applied.SALE, Applied.REFUND_UNMATCHED]
    p1, p2 = m1.profile("M1"), m2.profile("M2")
    assert (p1.refunded, p1.net_spend) == (0, 1_000)
    assert (p2.refunded, p2.net_spend, p2.spend_30d) == (3_000, -2_500, -2_500)


def test_a_refund_naming_a_zero_sale_or_a_later_sale_is_unmatched() -> None:
    # Z1 is not a sale (rule 2): unmatched. R2 names T2, which arrives after it: unmatched
    # (arrival order), and T2 keeps its whole amount for later refunds.
    ledger, outcomes = applied(
        sale(T0, "Z1", 0),
        refund(T0, "R1", 100, "Z1"),
        refund(T0 + 1, "R2", 300, "T2"),
        sale(T0, "T2", 1_000),
        refund(T0 + 2, "R3", 1_000, "T2"),
    )
    assert outcomes == [
        Applied.ZERO_SALE,
        Applied.REFUND_UNMATCHED,
        Applied.REFUND_UNMATCHED,
        Applied.SALE,
        Applied.REFUND_OF_SALE,
    ]
    assert ledger.profile("M1").refunded == 100 + 300 + 1_000


def test_a_zero_amount_refund_counts_and_moves_no_money() -> None:
    p = profile(sale(T0, "T1", 1_000), refund(T0, "R1", 0, "T1"), refund(T0, "R2", 0))
    assert (p.refunds, p.refunded, p.net_spend, p.spend_30d) == (2, 0, 1_000, 1_000)


# ---- windows, memory, RFM -----------------------------------------------------------


def test_windows_at_their_edges() -> None:
    # as_of = A (a zero sale). Windows are (A - N days, A].
    #   1000 at A - 90 d      : in neither
    #    100 at A - 90 d + 1  : 90 d only
    #     10 at A - 30 d      : 90 d only
    #      1 at A - 30 d + 1  : both
    #  refund of 5 (no ref) at A - 30 d + 1: both
    # spend_30d = 1 - 5 = -4; spend_90d = 100 + 10 + 1 - 5 = 106; purchases 1 and 3.
    # A zero sale half a day before A runs the expiry sweep (once per day of event time),
    # so the 1000 is still held at A and the profile itself must leave it out.
    a = T0 + 200 * DAY
    p = profile(
        sale(a - 90 * DAY, "T1", 1000),
        sale(a - 90 * DAY + 1, "T2", 100),
        sale(a - 30 * DAY, "T3", 10),
        sale(a - 30 * DAY + 1, "T4", 1),
        refund(a - 30 * DAY + 1, "R1", 5),
        sale(a - DAY // 2, "Z0", 0),
        sale(a, "Z1", 0),
    )
    assert (p.spend_30d, p.spend_90d, p.purchases_30d, p.purchases_90d) == (-4, 106, 1, 3)
    assert (p.gross_spend, p.net_spend) == (1111, 1106)


@pytest.mark.parametrize(
    ("later_ms", "outcome", "refunded", "decayed"),
    [
        # The sale at T0 is remembered while T0 > as_of - 400 d, i.e. as_of < T0 + 400 d.
        (400 * DAY - 1, Applied.REFUND_OF_SALE, 1_000, ("tea",)),  # capped at the sale's 1,000
        (400 * DAY, Applied.REFUND_UNMATCHED, 3_000, ()),  # forgotten: the whole amount
    ],
)
def test_sales_are_remembered_for_400_days(
    later_ms: int, outcome: Applied, refunded: int, decayed: tuple[str, ...]
) -> None:
    # Zero sales move as_of to T0 + later_ms - 12 h (the expiry sweep runs, T1 stays),
    # then to T0 + later_ms (no sweep: the rules must hold on what is still held). A
    # refund of 3,000 names T1, and T1 is replayed: a duplicate while remembered, applied
    # again once forgotten. Decayed counts are over remembered sales only.
    ledger, outcomes = applied(
        sale(T0, "T1", 1_000, item("tea", 1)),
        sale(T0 + later_ms - DAY // 2, "Z0", 0),
        sale(T0 + later_ms, "Z1", 0),
        refund(T0 + later_ms, "R1", 3_000, "T1"),
        sale(T0, "T1", 1_000, item("tea", 1)),
    )
    replay = Applied.DUPLICATE if outcome == Applied.REFUND_OF_SALE else Applied.SALE
    assert outcomes == [Applied.SALE, Applied.ZERO_SALE, Applied.ZERO_SALE, outcome, replay]
    p = ledger.profile("M1")
    assert (p.refunded, p.favourite_categories, p.favourite_categories_decayed) == (refunded, ("tea",), decayed)


def test_state_is_bounded_by_400_and_90_days() -> None:
    # One sale a day for 1000 days: at most 400 days of txn ids and sales, 90 of windows.
    ledger = MemberLedger()
    for day in range(1000):
        ledger.apply(sale(T0 + day * DAY, f"T{day}", 100, item("tea", 1), store=f"S{day}"))
    assert len(ledger.txn_ts) <= 401 and len(ledger.remembered) <= 401
    assert len(ledger.window) <= 91 and len(ledger.store_last_ts) == 100
    p = ledger.profile("M1")
    assert (p.sales, p.purchases_90d, p.purchases_30d, p.spend_90d) == (1000, 90, 30, 9_000)


@pytest.mark.parametrize(
    ("recency", "purchases", "spend", "rfm"),
    [
        (7, 10, 200_000, "555"),
        (8, 9, 199_999, "444"),
        (30, 5, 50_000, "444"),
        (31, 4, 49_999, "333"),
        (90, 3, 20_000, "333"),
        (91, 2, 19_999, "222"),
        (180, 2, 5_000, "222"),
        (181, 1, 4_999, "111"),
        (0, 0, -1, "511"),
    ],
)
def test_rfm_thresholds_at_their_edges(recency: int, purchases: int, spend: int, rfm: str) -> None:
    assert rfm_score(recency, purchases, spend) == rfm


@pytest.mark.parametrize(
    ("age_ms", "recency", "rfm"),
    [
        (8 * DAY - 1, 7, "513"),  # 7.99 days floors to 7: R5
        (8 * DAY, 8, "413"),
    ],
)
def test_recency_floors_whole_days(age_ms: int, recency: int, rfm: str) -> None:
    # One purchase of 20,000 (F1, M3), then a zero sale age_ms later moves as_of.
    p = profile(sale(T0, "T1", 20_000), sale(T0 + age_ms, "Z1", 0))
    assert (p.recency_days, p.rfm) == (recency, rfm)


# ---- rankings -----------------------------------------------------------------------


def test_favourite_categories_ties_go_by_name() -> None:
    # qty 3 each for tea, cake, books, coffee; 1 for apples: the first three names.
    p = profile(
        sale(T0, "T1", 100, item("tea", 3), item("cake", 3)),
        sale(T0, "T2", 100, item("books", 2), item("coffee", 3), item("books", 1), item("apples", 1)),
    )
    assert p.favourite_categories == ("books", "cake", "coffee")
    assert p.favourite_categories_decayed == ("books", "cake", "coffee")


def test_decayed_favourites_weigh_recent_quantities() -> None:
    # as_of = T0 + 60 d. coffee: 3 at T0 -> 3 * 0.5 ** 2 = 0.75; tea: 2 at as_of -> 2.0;
    # cake: 2 at T0 + 30 d -> 2 * 0.5 = 1.0 and juice: 1 at as_of -> 1.0, an exact tie.
    # Totals: coffee 3, cake 2, tea 2, juice 1.
    ledger, _ = applied(
        sale(T0, "T1", 100, item("coffee", 3)),
        sale(T0 + 30 * DAY, "T2", 100, item("cake", 2)),
        sale(T0 + 60 * DAY, "T3", 100, item("tea", 2), item("juice", 1)),
    )
    assert ledger.decayed_qty() == {"coffee": 0.75, "cake": 1.0, "tea": 2.0, "juice": 1.0}
    p = ledger.profile("M1")
    assert p.favourite_categories == ("coffee", "cake", "tea")
    assert p.favourite_categories_decayed == ("tea", "cake", "juice")


def test_preferred_payment_ties_go_by_name_and_unknown_is_not_counted() -> None:
    # wechat 2, alipay 2, cash 1, "" (unknown) 3: alipay.
    payments = ["wechat", "alipay", "cash", "wechat", "alipay", "", "", ""]
    p = profile(*(sale(T0 + i, f"T{i}", 100, payment=pay) for i, pay in enumerate(payments)))
    assert p.preferred_payment == "alipay"
    assert profile(sale(T0, "T1", 100, payment="")).preferred_payment is None


def test_stores_keep_the_100_most_recently_bought_at() -> None:
    # S000..S100 bought at T0 + i: S000 (the oldest) drops out. A late sale at S000
    # (T0 - 1) keeps it out. A late one at S050 leaves its last purchase at T0 + 50, so a
    # new sale at S000 (T0 + 200) brings S000 back and drops S001 (T0 + 1), not S050.
    txns = [sale(T0 + i, f"T{i}", 100, store=f"S{i:03}") for i in range(101)]
    ledger, _ = applied(*txns)
    assert ledger.profile("M1").stores == tuple(f"S{i:03}" for i in range(1, 101))
    ledger.apply(sale(T0 - 1, "L1", 100, store="S000"))
    assert ledger.profile("M1").stores == tuple(f"S{i:03}" for i in range(1, 101))
    ledger.apply(sale(T0 - 1, "L2", 100, store="S050"))
    ledger.apply(sale(T0 + 200, "L3", 100, store="S000"))
    assert ledger.profile("M1").stores == ("S000",) + tuple(f"S{i:03}" for i in range(2, 101))
    assert ledger.profile("M1").sales == 104


def test_stores_tied_at_the_bound_go_by_store_id() -> None:
    # 101 stores bought at the same ts: the 100 smallest ids stay, in any arrival order.
    txns = [sale(T0, f"T{i}", 100, store=f"S{i:03}") for i in range(101)]
    random.Random(7).shuffle(txns)
    assert profile(*txns).stores == tuple(f"S{i:03}" for i in range(100))


def test_the_ledger_survives_pickle_mid_stream() -> None:
    txns = [
        sale(T0, "T1", 10_000, item("coffee", 2), store="S2", payment="alipay"),
        refund(T0 + DAY, "R1", 3_000, "T1"),
        sale(T0 + 2 * DAY, "T2", 500, item("tea", 1)),
        sale(T0 + 2 * DAY, "T2", 500, item("tea", 1)),
        refund(T0 + 3 * DAY, "R2", 9_000, "T1"),
        sale(T0 + 500 * DAY, "T3", 0),
    ]
    whole, _ = applied(*txns)
    half, _ = applied(*txns[:3])
    resumed = pickle.loads(pickle.dumps(half, protocol=pickle.HIGHEST_PROTOCOL))
    for t in txns[3:]:
        resumed.apply(t)
    assert resumed == whole
    assert resumed.profile("M1") == whole.profile("M1") == member_profiles(txns)["M1"]


# ---- against the batch oracle -------------------------------------------------------

MEMBERS = ("A", "B", "C")
STORES = ("S1", "S2", "S3", "S4")
PAYMENTS = ("wechat", "alipay", "cash", "")
CATEGORIES = ("cake", "coffee", "tea", "toys")
EXAMPLES = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def streams(draw: st.DrawFn, span_days: int, ordered: bool) -> list[Sale]:
    """Sales and refunds of a few members over ``span_days``; refunds name an earlier
    txn id (of any member), an unknown one or none; exact replays of earlier records are
    injected. Unless ``ordered``, a refund may be older than the sale it names and other
    records may reuse a txn id."""
    n = draw(st.integers(1, 30))
    txns: list[Sale] = []
    for i in range(n):
        member = draw(st.sampled_from(MEMBERS))
        # Whole days plus a few ms, so window and memory edges get hit now and then.
        ts = T0 + draw(st.integers(0, span_days)) * DAY + draw(st.sampled_from((0, 0, 1, -1, 12 * 3_600_000)))
        kind = draw(st.sampled_from(("sale", "sale", "sale", "zero", "refund")))
        if kind == "refund":
            earlier = [t for t in txns if not t.refund]
            named = draw(st.one_of(st.none(), st.sampled_from(earlier))) if earlier else None
            ref = named.txn_id if named else draw(st.sampled_from((None, "T-unknown")))
            if ordered and named:
                ts = max(ts, named.ts)
            txns.append(refund(ts, f"T{i}", draw(st.integers(0, 30_000)), ref, member=member))
            continue
        items = draw(st.lists(st.builds(item, st.sampled_from(CATEGORIES), st.integers(1, 5)), max_size=3))
        amount = 0 if kind == "zero" else draw(st.integers(1, 60_000))
        store, payment = draw(st.sampled_from(STORES)), draw(st.sampled_from(PAYMENTS))
        txns.append(sale(ts, f"T{i}", amount, *items, store=store, payment=payment, member=member))
    for _ in range(draw(st.integers(0, 5))):
        txns.append(draw(st.sampled_from(txns)))
    if not ordered and draw(st.booleans()):
        other = draw(st.sampled_from(txns))
        txns.append(sale(other.ts + DAY, other.txn_id, 777, store="S9", member=other.member_id or "A"))
    return txns


def by_member_in_batches(txns: list[Sale], cuts: list[int]) -> tuple[dict[str, MemberProfile], dict[str, MemberLedger]]:
    """Apply like the engine: batches of the arrival order, each member's part of a batch
    to its ledger, which goes through a snapshot (pickle) between batches. After each
    batch, the profiles of the members it touched are the oracle's for the prefix."""
    ledgers: dict[str, MemberLedger] = {}
    last: dict[str, MemberProfile] = {}
    bounds = sorted({0, len(txns), *(c for c in cuts if c < len(txns))})
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        ledgers = {m: pickle.loads(pickle.dumps(ledger)) for m, ledger in ledgers.items()}
        touched: set[str] = set()
        for t in txns[lo:hi]:
            member = t.member_id or ""
            ledgers.setdefault(member, MemberLedger()).apply(t)
            touched.add(member)
        expected = member_profiles(txns[:hi])
        for member in touched:
            last[member] = ledgers[member].profile(member)
            assert last[member] == expected[member]
    return last, ledgers


@EXAMPLES
@given(streams(span_days=900, ordered=False), st.lists(st.integers(1, 40), max_size=6), st.randoms())
def test_the_ledger_agrees_with_the_oracle_in_any_arrival_order(
    txns: list[Sale], cuts: list[int], rnd: random.Random
) -> None:
    # Any order, 900 days (so the 400-day memory forgets), replays and other records
    # reusing a txn id: both follow the arrival order, batch after batch.
    rnd.shuffle(txns)
    profiles, ledgers = by_member_in_batches(txns, cuts)
    assert profiles == member_profiles(txns)
    expected_decayed = decayed_quantities(txns)
    for member, ledger in ledgers.items():
        assert ledger.decayed_qty() == pytest.approx(expected_decayed[member], rel=1e-9)


def refunds_after_their_sales(txns: list[Sale], rnd: random.Random) -> list[Sale]:
    """A random arrival order in which each refund comes after the sale it names."""
    pending, order, sent = list(txns), [], set()
    names = {t.txn_id for t in txns}
    while pending:
        ready = [t for t in pending if not t.refund or t.ref_txn_id in sent or t.ref_txn_id not in names]
        t = rnd.choice(ready)
        pending.remove(t)
        order.append(t)
        sent.add(t.txn_id)
    return order


@EXAMPLES
@given(streams(span_days=300, ordered=True), st.randoms())
def test_arrival_order_does_not_matter_when_refunds_follow_their_sales(txns: list[Sale], rnd: random.Random) -> None:
    # Within 400 days, replays exact copies, every refund no older than the sale it
    # names and arriving after it: the rules are order-free. In ts order (sales before
    # refunds at one ts) or in any such order, the same profiles, the oracle's.
    in_ts_order = sorted(txns, key=lambda t: (t.ts, t.refund))
    shuffled = refunds_after_their_sales(txns, rnd)
    expected = member_profiles(in_ts_order)
    assert by_member_in_batches(in_ts_order, [])[0] == expected
    assert by_member_in_batches(shuffled, [])[0] == expected


# ---- in a dataflow ------------------------------------------------------------------


def keyed(txns: list[Sale]) -> list[tuple[str, Sale]]:
    """``(member_id, Sale)``, as ``flows.engine.member_sales_of`` routes them."""
    return [(t.member_id or "", t) for t in txns]


def run_flow(items: list, out: list, recovery: RecoveryConfig | None = None, tombstone_s: float = 8 * 86_400) -> None:
    flow = Dataflow("profiles_test")
    sales = op.input("read_member_sales", flow, TestingSource(items))  # (member_id, Sale)
    profiles = profiles_only(update_profiles("update_profiles", sales, tombstone_s=tombstone_s))
    op.output("write_profiles", profiles, TestingSink(out))
    run_main(flow, epoch_interval=None if recovery is None else timedelta(0), recovery_config=recovery)


def profiles_only(outputs: Stream[Any]) -> Stream[MemberProfile | MemberErased]:
    """The profiles and erasures of the member step (not what it tells other steps)."""
    return op.filter("profiles_only", outputs, lambda r: isinstance(r, MemberProfile | MemberErased))


def last_per_member(profiles: list[MemberProfile]) -> dict[str, MemberProfile]:
    return {p.member_id: p for p in profiles}


def test_one_profile_per_member_per_batch() -> None:
    # One source batch: three transactions of M1, one of M2 -> one profile each, after
    # the whole batch (M1: 100 + 200 + 300 = 600 over 3 sales).
    txns = [sale(T0, "T1", 100), sale(T0 + 1, "T2", 200), sale(T0, "T9", 50, member="M2"), sale(T0 + 2, "T3", 300)]
    out: list = []  # MemberProfile | MemberErased
    flow = Dataflow("profiles_batch_test")
    sales = op.input("read_member_sales", flow, TestingSource(keyed(txns), batch_size=10))
    op.output("write_profiles", profiles_only(update_profiles("update_profiles", sales)), TestingSink(out))
    run_main(flow)
    assert sorted((p.member_id, p.sales, p.gross_spend) for p in out) == [("M1", 3, 600), ("M2", 1, 50)]


def test_update_profiles_in_a_dataflow_resumes_after_a_crash(tmp_path: Path) -> None:
    txns = [
        sale(T0, "T1", 10_000, item("coffee", 2), member="M1"),
        sale(T0, "T2", 3_000, item("tea", 1), member="M2", store="S2"),
        refund(T0 + DAY, "R1", 4_000, "T1", member="M1"),
        refund(T0 + DAY, "R2", 1_000, "T1", member="M2"),  # names M1's sale: unmatched
        sale(T0 + 2 * DAY, "T3", 2_000, member="M1", store="S3"),
        sale(T0 + 2 * DAY, "T3", 2_000, member="M1", store="S3"),  # a replay
        sale(T0 + 3 * DAY, "T4", 0, member="M2"),
        refund(T0 + 4 * DAY, "R3", 9_000, "T1", member="M1"),  # capped at the 6,000 left
    ]
    items = keyed(txns)
    expected: list[MemberProfile] = []
    run_flow(items, expected)
    assert last_per_member(expected) == member_profiles(txns)
    # M1: 10000 + 2000 sold; 4000 + 6000 refunded; net 2000. M2: 3000 sold, 1000 refunded.
    m1, m2 = last_per_member(expected)["M1"], last_per_member(expected)["M2"]
    assert (m1.net_spend, m1.refunded, m1.duplicates, m1.stores) == (2_000, 10_000, 1, ("S1", "S3"))
    assert (m2.net_spend, m2.refunded, m2.zero_sales, m2.as_of_ts) == (2_000, 1_000, 1, T0 + 3 * DAY)

    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    crashing = items[:5] + [TestingSource.ABORT()] + items[5:]  # the abort fires once
    first: list[MemberProfile] = []
    run_flow(crashing, first, recovery)
    assert last_per_member(first)["M1"].sales == 2  # crashed before the replay of T3
    second: list[MemberProfile] = []
    run_flow(crashing, second, recovery)
    # At-least-once output: the resumed run may repeat what followed the last snapshot,
    # but it ends with the uninterrupted profiles and writes nothing they do not hold.
    assert last_per_member(first + second) == last_per_member(expected)
    assert set(map(repr, first + second)) <= set(map(repr, expected))


# ---- member events ------------------------------------------------------------------


def ev(
    ts: int,
    kind: str,
    *,
    member: str = "M1",
    device: int | None = None,
    push: bool | None = None,
    birthday: str | None = None,
    tags: tuple[str, ...] = (),
) -> MemberChange:
    return MemberChange(ts, member, kind, 0, device=device, push=push, birthday=birthday, tags=list(tags))


def fold(*records: Sale | MemberChange) -> list[MemberProfile | MemberErased]:
    """One batch of one member through the step's logic, from a new member."""
    return main_outputs(ProfileLogic(None).on_batch(list(records))[0])


def main_outputs(out: list[Any]) -> list[MemberProfile | MemberErased]:
    """The profiles and erasures of a batch (not what the step tells the steps after it)."""
    return [o for o in out if isinstance(o, MemberProfile | MemberErased)]


def fields_of(p: MemberProfile | MemberErased) -> tuple:
    assert isinstance(p, MemberProfile)
    return (p.as_of_ts, p.member_since_ts, p.push_consent, p.birthday, p.tags, p.devices)


@pytest.mark.parametrize(
    "records,expected",
    [
        # Sign-ups: the earliest ts, in any order; as_of_ts is the newest event.
        ((ev(T0 + 5, "signup"), ev(T0, "signup")), (T0 + 5, T0, False, None, (), 0)),
        # Consent: the newest ts wins, not the last to arrive.
        ((ev(T0 + 9, "consent", push=True), ev(T0, "consent", push=False)), (T0 + 9, None, True, None, (), 0)),
        # ... and on a tie, the last to arrive.
        ((ev(T0, "consent", push=True), ev(T0, "consent", push=False)), (T0, None, False, None, (), 0)),
        # Profile: birthday and tags together from the newest, tags sorted and unique.
        (
            (
                ev(T0 + 1, "profile", birthday="02-29", tags=("b", "a", "b")),
                ev(T0, "profile", birthday="01-01", tags=("z",)),
            ),
            (T0 + 1, None, False, "02-29", ("a", "b"), 0),
        ),
        # Devices: 1 and 2 bound, 2 unbound later, 3 unbound-then-bound with the bind newer,
        # 4's unbind (newer) arrives before its bind -> 1 and 3 are bound.
        (
            (
                ev(T0, "bind_device", device=1),
                ev(T0, "bind_device", device=2),
                ev(T0 + 1, "unbind_device", device=2),
                ev(T0, "unbind_device", device=3),
                ev(T0 + 2, "bind_device", device=3),
                ev(T0 + 3, "unbind_device", device=4),
                ev(T0, "bind_device", device=4),
            ),
            (T0 + 3, None, False, None, (), 2),
        ),
    ],
)
def test_member_event_rules(records: tuple[MemberChange, ...], expected: tuple) -> None:
    (p,) = fold(*records)
    assert fields_of(p) == expected
    assert fields_of(member_profiles(records)["M1"]) == expected


def test_devices_keep_the_20_with_the_newest_binding_events() -> None:
    # 25 binds at T0 + d (d = 0..24): devices 5..24 are kept (20). A late bind of device 0
    # at T0 (older than all kept) comes and goes; unbinding 24 leaves 19.
    binds = [ev(T0 + d, "bind_device", device=d) for d in range(25)]
    (p,) = fold(*binds, ev(T0, "bind_device", device=0), ev(T0 + 30, "unbind_device", device=24))
    assert isinstance(p, MemberProfile) and p.devices == 19
    ledger = MemberLedger()
    for b in binds:
        ledger.change(b)
    assert sorted(ledger.device_events) == list(range(5, 25))


def test_member_events_move_as_of_and_the_windows() -> None:
    # A sale of 6000 at T0; a consent 31 days later: as_of moves, the sale leaves the 30
    # days but stays in the 90 -> recency 31 (R3), F1, M2.
    (p,) = fold(sale(T0, "T1", 6_000), ev(T0 + 31 * DAY, "consent", push=True))
    assert isinstance(p, MemberProfile)
    assert (p.as_of_ts, p.spend_30d, p.spend_90d, p.recency_days, p.rfm) == (T0 + 31 * DAY, 0, 6_000, 31, "312")


def test_a_member_with_only_member_events_has_a_profile_without_purchases() -> None:
    (p,) = fold(ev(T0, "signup"))
    assert isinstance(p, MemberProfile)
    assert (p.sales, p.avg_ticket, p.rfm, p.member_since_ts, p.as_of_ts) == (0, None, None, T0, T0)


def test_an_erase_forgets_and_what_follows_starts_afresh() -> None:
    # Before the erase: a sale T1, consent, a sign-up. After it: T1 again counts as a new
    # sale (no duplicate), a refund naming T1... names the new T1 (capped at 1000); no
    # consent and no member_since survive.
    out = fold(
        ev(T0, "signup"),
        sale(T0, "T1", 1_000),
        ev(T0, "consent", push=True),
        ev(T0 + DAY, "erase"),
        sale(T0 + 2 * DAY, "T1", 1_000),
        sale(T0 + 2 * DAY, "T1", 1_000),
        refund(T0 + 3 * DAY, "R1", 5_000, "T1"),
    )
    assert out[0] == MemberErased(member_id="M1", ts=T0 + DAY)
    p = out[1]
    assert isinstance(p, MemberProfile) and len(out) == 2
    assert (p.sales, p.duplicates, p.refunded, p.net_spend, p.first_purchase_ts) == (1, 1, 1_000, 0, T0 + 2 * DAY)
    assert (p.member_since_ts, p.push_consent, p.as_of_ts) == (None, False, T0 + 3 * DAY)


def test_a_refund_after_an_erase_cannot_name_a_sale_from_before() -> None:
    (erased, p) = fold(sale(T0, "T1", 1_000), ev(T0 + DAY, "erase"), refund(T0 + 2 * DAY, "R1", 300, "T1"))
    assert isinstance(p, MemberProfile)
    assert (p.sales, p.refunds, p.refunded, p.spend_30d) == (0, 1, 300, -300)


def test_an_erase_last_keeps_only_the_tombstone_until_its_notify() -> None:
    # A second, newer erase moves E to T0 + 2 d; a third, older one changes nothing (E
    # stays). No profile: nothing but the erase ts is left, kept (RETAIN) to drop late
    # older records, and discarded when the tombstone's wall-clock life (1 h) is over.
    clock = datetime(2025, 11, 23, tzinfo=UTC)
    logic = ProfileLogic(None, tombstone=timedelta(hours=1), now=lambda: clock)
    out, keep = logic.on_batch(
        [sale(T0, "T1", 1_000), ev(T0 + DAY, "erase"), ev(T0 + 2 * DAY, "erase"), ev(T0, "erase")]
    )
    assert main_outputs(out) == [MemberErased(member_id="M1", ts=T0 + d * DAY) for d in (1, 2, 2)]
    assert keep is ProfileLogic.RETAIN
    assert logic.ledger == MemberLedger(erased_ts=T0 + 2 * DAY)  # the tombstone, nothing else
    assert logic.notify_at() == clock + timedelta(hours=1)
    out, keep = logic.on_batch([sale(T0 + 2 * DAY, "T2", 5)])  # late, at E: dropped, no profile
    assert (out, keep, logic.notify_at()) == ([], ProfileLogic.RETAIN, clock + timedelta(hours=1))
    assert logic.on_notify() == ([], ProfileLogic.DISCARD)
    # Resumed from its snapshot, the deadline holds; a newer record makes it a member again
    # (no notify), and its notify then keeps it.
    resumed = build_profile_logic(logic.snapshot())
    assert resumed.notify_at() == clock + timedelta(hours=1)
    (p,) = main_outputs(resumed.on_batch([sale(T0 + 3 * DAY, "T3", 7)])[0])
    assert isinstance(p, MemberProfile) and (p.sales, p.net_spend) == (1, 7)
    assert resumed.notify_at() is None and resumed.on_notify() == ([], ProfileLogic.RETAIN)


def test_an_erase_drops_older_records_that_arrive_after_it() -> None:
    # The erase at E = T0 + 1 d arrives first; the older sale (T0), a refund and a consent
    # at exactly E, and a device bound before E come after it: all dropped. The sale and
    # sign-up after E make the profile.
    ledger = MemberLedger()
    assert ledger.erase(T0 + DAY) == T0 + DAY
    outcomes = [
        ledger.apply(sale(T0, "T1", 1_000)),
        ledger.apply(refund(T0 + DAY, "R1", 300)),
        ledger.change(ev(T0 + DAY, "consent", push=True)),
        ledger.change(ev(T0, "bind_device", device=7)),
        ledger.apply(sale(T0 + DAY + 1, "T2", 40)),
        ledger.change(ev(T0 + 2 * DAY, "signup")),
    ]
    assert outcomes == [Applied.ERASED] * 4 + [Applied.SALE, Applied.MEMBER_EVENT]
    p = ledger.profile("M1")
    assert (p.sales, p.refunds, p.net_spend, p.push_consent, p.devices) == (1, 0, 40, False, 0)
    assert (p.first_purchase_ts, p.member_since_ts, p.as_of_ts) == (T0 + DAY + 1, T0 + 2 * DAY, T0 + 2 * DAY)


ERASE_CASE: list[Sale | MemberChange] = [
    sale(T0, "T1", 1_000, item("tea", 1)),  # before E: forgotten
    ev(T0, "signup"),  # before E: forgotten
    ev(T0 + DAY, "consent", push=True),  # at E: forgotten
    ev(T0 + DAY, "erase"),  # E
    sale(T0 + 2 * DAY, "T2", 500, item("cake", 2), store="S2"),
    refund(T0 + 3 * DAY, "R1", 200, "T1"),  # names a forgotten sale: unmatched
    ev(T0 + 3 * DAY, "profile", birthday="02-03", tags=("vip",)),
]


def test_an_erase_gives_the_same_profile_in_every_arrival_order() -> None:
    # All 5040 orders of one batch: MemberErased(E) first, then the profile of T2, R1
    # (unmatched: 200 off at its ts) and the profile event, worked out by hand: sales 1,
    # refunded 200, net 300, as_of T0 + 3 d, recency 1 -> R5, F1, M1.
    expected = (1, 1, 200, 300, ("S2",), ("cake",), T0 + 3 * DAY, "511", None, False, "02-03", ("vip",))
    for order in itertools.permutations(ERASE_CASE):
        out = fold(*order)
        assert out[0] == MemberErased(member_id="M1", ts=T0 + DAY) and len(out) == 2
        p = out[1]
        assert isinstance(p, MemberProfile)
        got = (p.sales, p.refunds, p.refunded, p.net_spend, p.stores, p.favourite_categories, p.as_of_ts)
        assert got + (p.rfm, p.member_since_ts, p.push_consent, p.birthday, p.tags) == expected
        assert member_profiles(list(order))["M1"] == p


def test_an_erase_older_than_what_was_applied_rebuilds_from_the_newer_records() -> None:
    # The erase (E = T0 + 1 d) arrives last, after records on both sides of it: the ledger
    # is the one of the newer records alone, replayed in arrival order, with the tombstone.
    late = ERASE_CASE[:3] + ERASE_CASE[4:]
    ledger = MemberLedger()
    for r in late:
        ledger.apply(r) if isinstance(r, Sale) else ledger.change(r)
    ledger.erase(T0 + DAY)
    fresh = MemberLedger(erased_ts=T0 + DAY)
    for r in ERASE_CASE[4:]:
        fresh.apply(r) if isinstance(r, Sale) else fresh.change(r)
    assert ledger == fresh
    assert fresh.profile("M1") == member_profiles(late + [ERASE_CASE[3]])["M1"]


def test_an_erase_older_than_the_replayable_8_days_forgets_everything() -> None:
    # as_of T0 + 20 d; an erase at T0 + 12 d - 1 ms is older than as_of - 8 d: the records
    # after it are not all kept to replay, so everything goes and the erase counts as one
    # at as_of (Redis then deletes the stored profile). At T0 + 12 d exactly: a rebuild.
    records = [sale(T0, "T1", 100), sale(T0 + 12 * DAY + 1, "T2", 20), sale(T0 + 20 * DAY, "T3", 3)]
    out = fold(*records, ev(T0 + 12 * DAY - 1, "erase"), sale(T0 + 15 * DAY, "T4", 4))
    assert out == [MemberErased(member_id="M1", ts=T0 + 20 * DAY)]
    assert member_profiles([*records, ev(T0 + 12 * DAY - 1, "erase")]) == {}
    erased, p = fold(*records, ev(T0 + 12 * DAY, "erase"))
    assert erased == MemberErased(member_id="M1", ts=T0 + 12 * DAY)
    assert isinstance(p, MemberProfile) and (p.sales, p.gross_spend) == (2, 23)


def test_arrival_order_merges_by_ts_member_events_first() -> None:
    txns = [sale(T0, "T1", 1), sale(T0 + 5, "T2", 1), sale(T0 + 1, "T1", 1)]  # a late repeat last
    events = [ev(T0, "signup"), ev(T0 + 5, "erase")]
    merged = arrival_order(txns, events)
    assert [getattr(r, "txn_id", getattr(r, "kind", None)) for r in merged] == ["signup", "T1", "erase", "T2", "T1"]
    assert erasures(merged) == 1


@st.composite
def with_member_events(draw: st.DrawFn) -> list[Sale | MemberChange]:
    """A stream of ``streams`` with member events (erasures among them) mixed in."""
    txns: list[Sale | MemberChange] = list(draw(streams(span_days=900, ordered=False)))
    for _ in range(draw(st.integers(0, 25))):
        member = draw(st.sampled_from(MEMBERS))
        ts = T0 + draw(st.integers(0, 900)) * DAY + draw(st.sampled_from((0, 1, -1)))
        kind = draw(st.sampled_from(("signup", "bind_device", "unbind_device", "consent", "profile", "erase")))
        change = ev(
            ts,
            kind,
            member=member,
            device=draw(st.integers(0, 25)),
            push=draw(st.booleans()),
            birthday=draw(st.sampled_from(("01-01", "12-31"))),
            tags=tuple(draw(st.lists(st.sampled_from("abc"), max_size=3))),
        )
        txns.insert(draw(st.integers(0, len(txns))), change)
    return txns


def by_logic_in_batches(records: list[Sale | MemberChange], cuts: list[int]) -> dict[str, MemberProfile]:
    """Like the engine: batches of the arrival order per member through ``ProfileLogic``,
    the ledger pickled between batches (its tombstone never expires here)."""
    state: dict[str, bytes] = {}
    last: dict[str, MemberProfile] = {}
    bounds = sorted({0, len(records), *(c for c in cuts if c < len(records))})
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        batch: dict[str, list[Sale | MemberChange]] = {}
        for r in records[lo:hi]:
            batch.setdefault(r.member_id or "", []).append(r)
        for member, values in batch.items():
            logic = build_profile_logic(state.get(member))
            out, keep = logic.on_batch(values)
            for o in main_outputs(out):
                if isinstance(o, MemberErased):
                    last.pop(member, None)
                else:
                    last[member] = o
            if keep is ProfileLogic.DISCARD:
                state.pop(member, None)
            else:
                state[member] = logic.snapshot()
        assert last == {m: p for m, p in member_profiles(records[:hi]).items()}
    return last


@EXAMPLES
@given(with_member_events(), st.lists(st.integers(1, 60), max_size=6))
def test_the_step_agrees_with_the_oracle_with_member_events_and_erasures(
    records: list[Sale | MemberChange], cuts: list[int]
) -> None:
    assert by_logic_in_batches(records, cuts) == member_profiles(records)


@EXAMPLES
@given(streams(span_days=7, ordered=True), st.data(), st.randoms())
def test_erasures_give_the_same_profiles_in_any_arrival_order(
    txns: list[Sale], data: st.DataObject, rnd: random.Random
) -> None:
    # Within 7 days (so every erase is within the 8 days a ledger can rebuild from), member
    # events at distinct ts (no ties to break by arrival), erases among them, arriving
    # anywhere, before or after the older records: in ts order or in any order with each
    # refund after the sale it names, the same profiles, the oracle's, batch after batch.
    events: list[MemberChange] = []
    for n in range(data.draw(st.integers(0, 12))):
        kind = data.draw(st.sampled_from(("signup", "bind_device", "consent", "profile", "erase", "erase")))
        ts = T0 + data.draw(st.integers(0, 7)) * DAY + 2 + 3 * n  # distinct, and apart from the sales'
        member = data.draw(st.sampled_from(MEMBERS))
        events.append(ev(ts, kind, member=member, device=n, push=n % 2 == 0, birthday="01-01", tags=(str(n),)))
    in_ts_order: list[Sale | MemberChange] = sorted(
        [*txns, *events], key=lambda r: (r.ts, isinstance(r, Sale) and r.refund)
    )
    shuffled: list[Sale | MemberChange] = list(refunds_after_their_sales(txns, rnd))
    for e in events:
        shuffled.insert(rnd.randint(0, len(shuffled)), e)
    expected = member_profiles(in_ts_order)
    assert by_logic_in_batches(in_ts_order, []) == expected
    assert by_logic_in_batches(shuffled, data.draw(st.lists(st.integers(1, 40), max_size=4))) == expected


def snaps(recovery_dir: Path) -> list[tuple[str, str, int, bytes | None]]:
    rows: list[tuple[str, str, int, bytes | None]] = []
    for part in sorted(recovery_dir.glob("part-*.sqlite3")):
        with sqlite3.connect(part) as db:
            rows += db.execute("SELECT step_id, state_key, snap_epoch, ser_change FROM snaps").fetchall()
    return rows


def m1_snapshots(recovery_dir: Path) -> list[tuple[int, bytes | None]]:
    rows = snaps(recovery_dir)
    return sorted(
        (epoch, change) for step, key, epoch, change in rows if step.endswith(".update_profiles") and key == "M1"
    )


def test_an_erasure_leaves_only_a_tombstone_then_nothing(tmp_path: Path) -> None:
    # Epoch after every item (epoch_interval 0): M1 buys, signs up, binds a device, sets a
    # birthday and tags; M2 buys; M1 is erased (E = T0 + 1 d); M1's older sale arrives late
    # (dropped: no profile of M1 follows); M2 buys again (another epoch after the erase).
    items: list[tuple[str, Sale | MemberChange]] = [
        ("M1", sale(T0, "TXN-OF-M1", 1_000)),
        ("M1", ev(T0, "signup")),
        ("M1", ev(T0 + 1, "bind_device", device=42)),
        ("M1", ev(T0 + 2, "profile", birthday="02-03", tags=("TAG-OF-M1",))),
        ("M2", sale(T0, "T2", 500, member="M2")),
        ("M1", ev(T0 + DAY, "erase")),
        ("M1", sale(T0 - DAY, "LATE-TXN-OF-M1", 2_000)),
        ("M2", sale(T0 + 2 * DAY, "T3", 500, member="M2")),
    ]
    # Without the erase (a control run), M1's snapshot holds its transaction and tags.
    (tmp_path / "control").mkdir()
    init_db_dir(tmp_path / "control", 1)
    run_flow(
        [i for i in items if not (isinstance(i[1], MemberChange) and i[1].kind == "erase")],
        [],
        RecoveryConfig(str(tmp_path / "control")),
    )
    control = m1_snapshots(tmp_path / "control")
    assert control and control[-1][1] is not None
    assert b"TXN-OF-M1" in control[-1][1] and b"TAG-OF-M1" in control[-1][1]

    # The erase with the default 8-day tombstone: the key holds the erase ts and nothing else.
    (tmp_path / "erased").mkdir()
    init_db_dir(tmp_path / "erased", 1)
    out: list = []
    run_flow(items, out, RecoveryConfig(str(tmp_path / "erased")))
    assert MemberErased(member_id="M1", ts=T0 + DAY) in out
    assert [o.member_id for o in out if isinstance(o, MemberProfile)] == ["M1"] * 4 + ["M2", "M2"]
    _, newest = m1_snapshots(tmp_path / "erased")[-1]
    assert newest is not None
    tombstone = pickle.loads(pickle.loads(newest))  # bytewax pickles the snapshot's bytes
    assert isinstance(tombstone, MemberSnapshot) and tombstone.tombstone_until is not None
    ledger = tombstone.ledger
    assert ledger == MemberLedger(erased_ts=T0 + DAY)  # every other field at its empty default
    assert (ledger.sales, ledger.txn_ts, ledger.remembered, ledger.recent) == (0, {}, {}, ())
    assert (ledger.device_events, ledger.details, ledger.member_since_ts, ledger.as_of_ts) == ({}, None, None, None)
    assert b"TXN-OF-M1" not in newest and b"TAG-OF-M1" not in newest and b"02-03" not in newest

    # A tombstone of 0 s (so without the late sale, which it would no longer stop): its
    # notify fires on the next activation (M2's item after it) and the key is discarded:
    # the newest snapshot of M1 is a deletion, and nothing later.
    (tmp_path / "expired").mkdir()
    init_db_dir(tmp_path / "expired", 1)
    on_time = [i for i in items if not (isinstance(i[1], Sale) and i[1].txn_id == "LATE-TXN-OF-M1")]
    run_flow(on_time, [], RecoveryConfig(str(tmp_path / "expired")), tombstone_s=0)
    expired_at, gone = m1_snapshots(tmp_path / "expired")[-1]
    assert gone is None
    rows = snaps(tmp_path / "expired")
    later = [r for r in rows if r[2] >= expired_at and r[3] is not None]
    assert any(r[1] == "M2" for r in later)  # M2's state was snapshotted after the deletion
    assert not any(b"M1" in (r[3] or b"") for r in later if r[0].endswith(".update_profiles"))
