"""The truth's loyalty (``simulators.profile_truth``), against docs/member-profiles.md
"Loyalty" worked by hand: literal records in, the expected accounts with the arithmetic
in comments. Loyalty is an event-time replay: each account's entries sorted by (t, kind,
txn_id), so the arrival order matters only through what rules 1-5 of the transactions
decide at arrival (applied or not; a refund's verdict and r). The members-month scenario
(every rule happens in it, in any arrival order) is in test_loyalty_sim.py.

One programme ``X`` throughout (merchant ``Y`` has none; ``Z`` is not in the catalog):
2 points per 100 fen at the base rate, levels base (0), silver (10,000; down below
6,000; x1.5) and gold (30,000; down below 30,000; x2), a 30-day qualifying window,
a 10-day expiry and a x2 birthday bonus. T0 is 2026-03-02 00:00 UTC (a March).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.catalog import Level, Loyalty
from connectors.records import MemberChange, Sale
from connectors.schemas import LoyaltyAccount
from simulators.profile_truth import loyalty_steps, member_profiles, sales_of

DAY = 86_400_000
HOUR = 3_600_000
T0 = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * 1000)
P = Loyalty(
    unit_minor=100,
    points_per_unit=2,
    birthday_multiplier_pct=200,
    expiry_days=10,
    qualify_days=30,
    levels=[
        Level(name="base", upgrade_at=0),
        Level(name="silver", upgrade_at=10_000, downgrade_below=6_000, multiplier_pct=150),
        Level(name="gold", upgrade_at=30_000, downgrade_below=30_000, multiplier_pct=200),
    ],
)
PROGRAMMES = {"X": P}


def sale(ts: int, txn: str, amount: int, *, merchant: str = "X", points: int = 0) -> Sale:
    return Sale(ts, txn, "S1", amount, False, "U1", 0, merchant, "cash", points_redeemed=points)


def refund(ts: int, txn: str, amount: int, ref: str | None = None, *, merchant: str = "X") -> Sale:
    return Sale(ts, txn, "S1", amount, True, "U1", 0, merchant, "cash", ref_txn_id=ref)


def event(ts: int, kind: str, birthday: str | None = None) -> MemberChange:
    return MemberChange(ts, "U1", kind, 0, birthday=birthday)


def account(**fields: object) -> LoyaltyAccount:
    base: dict[str, object] = dict(
        merchant_id="X",
        level="base",
        points=0,
        earned=0,
        redeemed=0,
        taken_back=0,
        returned=0,
        expired=0,
        qualifying_spend=0,
    )
    return LoyaltyAccount(**{**base, **fields})  # type: ignore[arg-type]


def loyalty(*records: Sale | MemberChange, programmes: dict[str, Loyalty] = PROGRAMMES) -> tuple[LoyaltyAccount, ...]:
    return member_profiles(list(records), programmes)["U1"].loyalty


# A sale at each level; upgrades at "level after"; "level before" decides the rate.
AT_EACH_LEVEL: list[Sale | MemberChange] = [
    sale(T0, "S1", 8_000),  # base: 8000*2*100*100 // (100*100*100) = 160; Q 8000 < 10000: base
    sale(T0 + DAY, "S2", 4_000),  # base: 4000*2 // 100 = 80; Q 12000 >= 10000: silver
    sale(T0 + 2 * DAY, "S3", 20_000),  # silver: 20000*2*150*100 // 1000000 = 600; Q 32000: gold
    sale(T0 + 3 * DAY, "S4", 1_001),  # gold: 1001*2*200*100 // 1000000 = 40 (40.04); Q 33001
]


@pytest.mark.parametrize(
    "records,expected",
    [
        pytest.param(
            AT_EACH_LEVEL,
            account(level="gold", points=880, earned=880, qualifying_spend=33_001),
            id="a sale at each level, upgrades",
        ),  # 160 + 80 + 600 + 40 = 880
        pytest.param(
            [*AT_EACH_LEVEL, refund(T0 + 4 * DAY, "R1", 5_000, "S3")],
            # left 20000 -> 15000: 600*20000//20000 - 600*15000//20000 = 600 - 450 = 150 back;
            # Q 33001 - 5000 = 28001 < 30000 (gold's downgrade_below): silver (28001 >= 6000)
            account(level="silver", points=730, earned=880, taken_back=150, qualifying_spend=28_001),
            id="downgrade via a partial refund",
        ),
        pytest.param(
            [sale(T0, "S1", 12_000), sale(T0 + 20 * DAY, "S2", 1_000)],
            # S1 at base: 12000*2//100 = 240; Q 12000: silver. S2: level before with Q at
            # T0+20d = 12000 still (window 30 days): silver, 1000*2*150//10000 = 30; but the
            # 240 lapsed (20 days > 10) first: expired 240, points 30
            account(level="silver", points=30, earned=270, expired=240, qualifying_spend=13_000),
            id="lapse at the next sale",
        ),
        pytest.param(
            [sale(T0, "S1", 12_000), sale(T0 + 31 * DAY, "S2", 1_000)],
            # level before S2: Q(T0+31d) = 0 (S1 is out of the 30 days) < 6000: base, so S2
            # earns 1000*2//100 = 20, not silver's 30; the 240 of S1 expire; Q 1000: base
            account(level="base", points=20, earned=260, expired=240, qualifying_spend=1_000),
            id="downgrade via the qualifying window, level before",
        ),
        pytest.param(
            [sale(T0, "S1", 5_000), sale(T0 + 10 * DAY, "S2", 1_000)],
            # exactly 10 days is not more than 10: nothing lapses; 100 + 20
            account(points=120, earned=120, qualifying_spend=6_000),
            id="exactly expiry_days later: no lapse",
        ),
        pytest.param(
            [sale(T0, "S1", 12_000), event(T0 + 31 * DAY, "consent")],
            # shown at as_of T0+31d: Q = 0 -> level(silver, 0) = base (0 < 6000); lapsed
            # (31 > 10 days) with 240 > 0: shown 0 points, 240 expired (not stored)
            account(level="base", points=0, earned=240, expired=240, qualifying_spend=0),
            id="display-time level and lapse",
        ),
        pytest.param(
            [
                sale(T0, "S1", 1_000),
                sale(T0 + HOUR, "S2", 2_999, points=13),
                refund(T0 + 2 * HOUR, "R1", 1_000, "S2"),
                refund(T0 + 3 * HOUR, "R2", 5_000, "S2"),
            ],
            # S1: 20. S2: 2999*2//100 = 59 (59.98) earned, 13 redeemed: 20 + 59 - 13 = 66.
            # R1, left 2999 -> 1999: back 59 - 59*1999//2999 = 59 - 39 = 20; given back
            # 13 - 13*1999//2999 = 13 - 8 = 5: 66 - 20 + 5 = 51.
            # R2 asks 5000, r = min(5000, 1999) = 1999, left 1999 -> 0: back 39 - 0 = 39,
            # given 8 - 0 = 8: 51 - 39 + 8 = 20. The whole sale: back 59 = its earned, 13 returned.
            # Q: 1000 + 2999 - 1000 - 1999 = 1000
            account(points=20, earned=79, redeemed=13, taken_back=59, returned=13, qualifying_spend=1_000),
            id="partial then whole refund of a sale that redeemed points",
        ),
        pytest.param(
            [*AT_EACH_LEVEL, refund(T0 + 4 * DAY, "R1", 1_234), refund(T0 + 4 * DAY, "R2", 100, "nope")],
            # unlinked, at the base rate whatever the level: 1234*2//100 = 24; one naming a
            # sale never made is unlinked too: 100*2//100 = 2. 880 - 26 = 854;
            # Q 33001 - 1234 - 100 = 31667 >= 30000: still gold
            account(level="gold", points=854, earned=880, taken_back=26, qualifying_spend=31_667),
            id="unlinked refunds at the base rate",
        ),
        pytest.param(
            [refund(T0, "R1", 550)],
            # a refund opens the account: 550*2//100 = 11 back, a negative balance; Q -550
            account(points=-11, taken_back=11, qualifying_spend=-550),
            id="an account opened by a refund",
        ),
        pytest.param(
            [sale(T0, "S1", 5_000), sale(T0 + HOUR, "Z1", 0, points=30), sale(T0 + 11 * DAY, "S2", 1_000)],
            # S1: 100. Z1, a reward paid with points: redeemed 30, points 70; no Q, not a
            # purchase. S2: the last purchase is still S1, 11 days before: 70 expire; +20
            account(points=20, earned=120, redeemed=30, expired=70, qualifying_spend=6_000),
            id="a zero-amount sale paid with points, then expiry",
        ),
        pytest.param(
            [
                sale(T0, "S1", 5_000),
                event(T0 + HOUR, "profile", "04-20"),
                sale(T0 + 2 * HOUR, "S2", 5_000),
                event(T0 + 3 * HOUR, "profile", "03-21"),
                event(T0 - DAY, "profile", "03-20"),
                sale(T0 + 4 * HOUR, "S3", 5_000),
            ],
            # birthday by event time: the profile event with the largest ts <= the sale's t.
            # S1 at T0: 03-20 (ts T0-1d, arrived last but one) is in force, a March sale, at
            # base: 5000*2*100*200 // 1000000 = 200; Q 5000. S2 at T0+2h: 04-20 (T0+1h),
            # no bonus, at base (Q 5000): 100; Q 10000: silver. S3 at T0+4h: 03-21 (T0+3h),
            # at silver: 5000*2*150*200 // 1000000 = 300. 600; the profile shows 03-21
            account(level="silver", points=600, earned=600, qualifying_spend=15_000),
            id="birthday multiplier by event time",
        ),
        pytest.param(
            [sale(T0, "S1", 5_000), event(T0 - DAY, "profile", "03-20"), event(T0 - DAY, "profile", "05-01")],
            # two profile events with one ts: the later arrival (05-01) is the birthday at T0: 100
            account(points=100, earned=100, qualifying_spend=5_000),
            id="birthday: equal ts, the later arrival",
        ),
        pytest.param(
            [
                sale(T0, "S1", 12_000),
                sale(T0 + 2 * DAY, "S3", 20_000),
                refund(T0 + DAY, "R1", 4_000, "S3"),
                sale(T0 + DAY + HOUR, "S2", 1_000),
            ],
            # replay: S1 (T0), S2 (T0+1d+1h), S3 (T0+2d), R1 at t = max(T0+1d, T0+2d) = T0+2d, after S3.
            # S1 at base: 240; Q 12000: silver. S2 at silver: 1000*2*150*100 // 1000000 = 30;
            # Q 13000. S3 at silver: 20000*2*150*100 // 1000000 = 600; Q 33000: gold.
            # R1 (r 4000), level before gold: S3's 600*20000//20000 - 600*16000//20000 = 600 - 480
            # = 120 back; -4000 at S3's ts: Q 29000 < 30000: silver. 240 + 30 + 600 - 120 = 750
            account(level="silver", points=750, earned=870, taken_back=120, qualifying_spend=29_000),
            id="a refund dated before its sale is replayed after it",
        ),
        pytest.param(
            [sale(T0, "S1", 5_000), sale(T0 + HOUR, "S1", 5_000)],
            # the second S1 is a duplicate: nothing
            account(points=100, earned=100, qualifying_spend=5_000),
            id="a duplicate does nothing",
        ),
        pytest.param(
            [
                sale(T0, "S1", 5_000),
                event(T0 + HOUR, "erase"),
                sale(T0 + 2 * HOUR, "S2", 1_000),
                sale(T0 - HOUR, "S0", 9_000),
            ],
            # the erase forgets S1 (and S0, older than it, arriving after): only S2, 20
            account(points=20, earned=20, qualifying_spend=1_000),
            id="erasure resets the account",
        ),
    ],
)
def test_loyalty_by_hand(records: list[Sale | MemberChange], expected: LoyaltyAccount) -> None:
    assert loyalty(*records) == (expected,)


def test_merchants_without_a_programme_have_no_account() -> None:
    records = [
        sale(T0, "S1", 5_000, merchant="Y"),
        sale(T0 + 1, "S2", 5_000, merchant="Z"),
        refund(T0 + 2, "R1", 5_000, "S1", merchant="Y"),
    ]
    assert loyalty(*records) == ()
    # a refund at X naming a sale at Y is replayed in Y's account (the sale's): none, so
    # X has no entry and no account
    assert loyalty(*records[:2], refund(T0 + 3, "R2", 5_000, "S1")) == ()
    # and a refund at Y naming a sale at X is replayed in X's account: 5000 of 10000,
    # 200 - 200*5000//10000 = 100 back; -5000 at the sale's ts
    assert loyalty(sale(T0, "S1", 10_000), refund(T0 + 1, "R1", 5_000, "S1", merchant="Y")) == (
        account(points=100, earned=200, taken_back=100, qualifying_spend=5_000),
    )
    # two merchants: one account each, sorted by merchant id
    two = {"X": P, "A": Loyalty(unit_minor=1000, points_per_unit=3)}
    p = member_profiles([sale(T0, "S1", 5_000), sale(T0 + 1, "S2", 5_999, merchant="A")], two)["U1"]
    # A: 5999*3*100*100 // (1000*100*100) = 17 (17.997), level "member" (the default)
    assert [(a.merchant_id, a.level, a.points) for a in p.loyalty] == [("A", "member", 17), ("X", "base", 100)]


def test_no_programmes_no_accounts_and_birthday_month() -> None:
    records: list[Sale | MemberChange] = [event(T0, "profile", "03-31"), sale(T0 + HOUR, "S1", 5_000)]
    p = member_profiles(records)["U1"]
    assert (p.loyalty, p.birthday_month) == ((), True)
    # the month of as_of_ts, UTC: 2026-03-31 23:59:59.999 is March, one ms later April
    end = int(datetime(2026, 4, 1, tzinfo=UTC).timestamp() * 1000)
    assert member_profiles([*records, event(end - 1, "consent")])["U1"].birthday_month is True
    assert member_profiles([*records, event(end, "consent")])["U1"].birthday_month is False
    assert member_profiles([sale(T0, "S1", 1)])["U1"].birthday_month is False  # no birthday


def test_birthday_bonus_uses_the_sales_utc_month() -> None:
    end = int(datetime(2026, 4, 1, tzinfo=UTC).timestamp() * 1000)
    records: list[Sale | MemberChange] = [
        event(T0, "profile", "03-05"),
        sale(end - 1, "S1", 5_000),
        sale(end, "S2", 5_000),
    ]
    # S1 in March, at base: 5000*2*100*200 // 1000000 = 200; S2 in April, at base (Q
    # 5000 before it), no bonus: 100; Q 10000 after it: silver
    assert loyalty(*records) == (account(level="silver", points=300, earned=300, qualifying_spend=10_000),)


def test_sales_of_reads_points_redeemed() -> None:
    v = (
        b'{"type":"sale","txn_id":"T1","ts":5,"merchant_id":"X","store_id":"S1","amount":0,'
        b'"currency":"CNY","payment":"cash","member_id":"U1","items":[],"points_redeemed":40}'
    )
    w = v.replace(b',"points_redeemed":40', b"")
    assert [s.points_redeemed for s in sales_of([v, w])] == [40, 0]


def test_a_sale_before_a_refund_at_the_same_t() -> None:
    # kind before txn_id: the sale "Z" is replayed before the unmatched refund "A" of the
    # same t. Z at base: 200; Q 10000: silver (index 1). A: 5000*2//100 = 100 back; Q 5000
    # < 6000: base (index 0)
    records = [refund(T0, "A", 5_000), sale(T0, "Z", 10_000)]
    steps = loyalty_steps(records, PROGRAMMES)
    assert [(s.txn_id, s.kind, s.level_before, s.level_after) for s in steps] == [
        ("Z", "sale", 0, 1),
        ("A", "refund_unmatched", 1, 0),
    ]
    assert loyalty(*records) == (account(points=100, earned=200, taken_back=100, qualifying_spend=5_000),)


A = Loyalty(unit_minor=1000, points_per_unit=3, birthday_multiplier_pct=300)  # level "member"
TWO = {"X": P, "A": A}
# one member at two merchants, with a profile event (03-10) dated T0+2h
S1, S2, R1 = sale(T0, "S1", 12_000), sale(T0 + DAY, "S2", 1_000), refund(T0 + 2 * DAY, "R1", 1_000, "S2")
A1, A2 = sale(T0 + HOUR, "A1", 5_999, merchant="A"), sale(T0 + 3 * DAY, "A2", 20_000, merchant="A")
BIRTHDAY = event(T0 + 2 * HOUR, "profile", "03-10")


@pytest.mark.parametrize(
    "records",
    [
        pytest.param([S1, A1, BIRTHDAY, S2, R1, A2], id="in ts order"),
        # A's partition read first, X's late sale S1 last of the sales, members.events read last
        pytest.param([A2, A1, S2, R1, S1, BIRTHDAY], id="other partitions and topic first"),
        pytest.param([BIRTHDAY, A2, S2, A1, R1, S1], id="the member event first"),
    ],
)
def test_accounts_do_not_depend_on_arrival_order(records: list[Sale | MemberChange]) -> None:
    # X: S1 at T0, no birthday yet (03-10 is dated T0+2h), at base: 240; Q 12000: silver.
    # S2 at T0+1d, silver, birthday in March: 1000*2*150*200 // 1000000 = 60; Q 13000.
    # R1 (all of S2): 60 back; Q 12000: silver. 240 + 60 - 60 = 240.
    # A: A1 at T0+1h, before the birthday: 5999*3*100*100 // (1000*100*100) = 17;
    # A2 at T0+3d, the March birthday: 20000*3*100*300 // 100000000 = 180. 197, Q 25999
    assert loyalty(*records, programmes=TWO) == (
        account(merchant_id="A", level="member", points=197, earned=197, qualifying_spend=25_999),
        account(level="silver", points=240, earned=300, taken_back=60, qualifying_spend=12_000),
    )


def test_a_profile_event_arriving_after_the_sale_sets_its_bonus() -> None:
    # the sale arrives first; the profile event dated before it, later: S1 earns the March
    # bonus, 5000*2*100*200 // 1000000 = 200, whichever arrived first
    late: list[Sale | MemberChange] = [sale(T0, "S1", 5_000), event(T0 - HOUR, "profile", "03-20")]
    expected = (account(points=200, earned=200, qualifying_spend=5_000),)
    assert loyalty(*late) == loyalty(*reversed(late)) == expected
    assert [s.birthday_pct for s in loyalty_steps(late, PROGRAMMES)] == [200]


def test_records_spanning_400_days_are_refused_with_programmes() -> None:
    records: list[Sale | MemberChange] = [sale(T0, "S1", 5_000), sale(T0 + 400 * DAY, "S2", 5_000)]
    assert member_profiles(records)["U1"].sales == 2  # no loyalty, no limit
    with pytest.raises(ValueError, match="400-day memory"):
        member_profiles(records, PROGRAMMES)
    with pytest.raises(ValueError, match="400-day memory"):
        loyalty_steps(records, PROGRAMMES)
    assert loyalty(records[0], sale(T0 + 400 * DAY - 1, "S2", 5_000))  # just under
