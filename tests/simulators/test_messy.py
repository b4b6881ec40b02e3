"""Messy POS exports (``members-month``): every case at its share, on contract, consistent.

Expected values come from the transactions as sent (``truth.transactions``) and plain
computations over them; the truth is used only for what a message does not say (which
sale an unlinked refund is of). Shares are checked within four binomial standard
deviations of the scenario's values, on a fixed seed.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from datetime import UTC, datetime

import msgspec
import pytest

from connectors.decode import Limits, TransactionDecoder
from connectors.privacy import DeviceHasher
from connectors.records import RawBatch, RawMessage
from connectors.schemas import Transaction
from simulators.mall import MallSimulator, SimEvent
from simulators.pos import TrueSale
from simulators.scenario import Scenario
from storepulse.errors import ConfigError

SALES = "pos.transactions"
DAY_MS = 86_400_000


class Month:
    """The members-month run (seed 7), its transactions as sent, decoded."""

    def __init__(self) -> None:
        self.scenario = Scenario.load("members-month")
        self.sim = MallSimulator(self.scenario, seed=7)
        self.events = [e for e in self.sim.events() if e.topic == SALES]
        self.sent = [msgspec.json.decode(v, type=Transaction) for v in self.sim.truth.transactions]
        self.first: dict[str, Transaction] = {}  # txn_id -> first send
        self.order: dict[str, int] = {}  # txn_id -> index of its first send
        for i, t in enumerate(self.sent):
            self.first.setdefault(t.txn_id, t)
            self.order.setdefault(t.txn_id, i)
        self.truth: dict[str, TrueSale] = {s.txn_id: s for s in self.sim.truth.sales}
        self.sales = [t for t in self.first.values() if t.type == "sale"]
        self.refunds = [t for t in self.first.values() if t.type == "refund"]

    def of(self, refund: Transaction) -> str:
        """The sale a refund is of: named, or (unlinked) from the truth."""
        return refund.ref_txn_id or self.truth[refund.txn_id].refund_of  # type: ignore[return-value]

    def refunds_by_sale(self) -> dict[str, list[Transaction]]:
        out: dict[str, list[Transaction]] = defaultdict(list)
        for r in sorted(self.refunds, key=lambda r: self.order[r.txn_id]):
            out[self.of(r)].append(r)
        return out


@pytest.fixture(scope="module")
def month() -> Month:
    return Month()


def assert_share(hits: int, n: int, p: float) -> None:
    sd = math.sqrt(p * (1 - p) / n)
    assert n > 100 and abs(hits / n - p) <= 4 * sd, (hits, n, p, hits / n, sd)


def test_members_month_is_a_month_of_member_purchases(month: Month) -> None:
    sc = month.scenario
    assert (sc.days, sc.malls, sc.street_stores, sc.start_date) == (30, 1, 0, "2026-10-19")
    buys = Counter(t.member_id for t in month.sales if t.member_id and t.amount > 0)
    assert len(buys) >= 250  # hundreds of members ...
    assert sorted(buys.values())[len(buys) // 2] >= 5  # ... most with several purchases
    categories = {i.category for t in month.sales for i in t.items}
    payments = {t.payment for t in month.sales if t.member_id}
    assert len(categories) >= 5 and len(payments) == 7
    assert sum(t.member_id is None for t in month.sales) > len(month.sales) / 2  # non-members
    # every day of the month has transactions (opening hours are the same UTC date)
    days = {datetime.fromtimestamp(t.ts / 1000, UTC).date() for t in month.sent}
    assert len(days) == 30
    assert 14_000 < len(month.sent) < 16_000


def test_every_transaction_passes_the_decoder(month: Month) -> None:
    last = max(t.ts for t in month.sent)
    limits = Limits(max_event_age_ms=40 * DAY_MS, clock=lambda: (last + 3_600_000) / 1000)
    decoder = TransactionDecoder(DeviceHasher(b"k"), limits)
    batch = RawBatch(topic=SALES, partition=0, messages=[
        RawMessage(i, e.key, e.value) for i, e in enumerate(month.events)])
    good, bad = decoder.decode(batch, month.sim.catalog)
    assert bad == [] and len(good) == len(month.events)
    for e, t in zip(month.events, month.sent, strict=True):
        assert e.key == t.store_id.encode() and t.currency == "CNY"
        assert t.amount == sum(i.qty * i.unit_price for i in t.items)


def test_the_truth_lists_every_transaction_as_sent_in_send_order(month: Month) -> None:
    assert month.sim.truth.transactions == [e.value for e in month.events]
    assert [e.ts for e in month.events] == sorted(e.ts for e in month.events)


def test_zero_amount_sales_at_their_share(month: Month) -> None:
    zero = [t for t in month.sales if t.amount == 0]
    assert_share(len(zero), len(month.sales), month.scenario.zero_sale_share)
    shapes = Counter("adjustment" if not t.items else
                     "free item" if len(t.items) == 1 and t.items[0].qty == 1 else "write-off"
                     for t in zero)
    assert min(shapes.values()) > 0.2 * len(zero) and len(shapes) == 3, shapes
    assert all(i.unit_price == 0 for t in zero for i in t.items)
    refunded = month.refunds_by_sale()
    assert not any(t.txn_id in refunded for t in zero)  # a zero-amount sale is never refunded


def test_refunds_unlinked_partial_and_split_at_their_shares(month: Month) -> None:
    sc = month.scenario
    unlinked = [r for r in month.refunds if r.ref_txn_id is None]
    assert_share(len(unlinked), len(month.refunds), sc.unlinked_refund_share)
    firsts, partial, split = 0, 0, 0
    for sale_id, refunds in month.refunds_by_sale().items():
        sale = month.first[sale_id]
        assert len(refunds) <= 2
        firsts += 1
        if refunds[0].amount < sale.amount:
            partial += 1
            split += len(refunds) == 2
        else:
            assert len(refunds) == 1
    assert_share(partial, firsts, sc.partial_refund_share)
    # the rest of a partial refund is lost only after the last day or in an outage
    assert_share(split, partial, sc.split_refund_share)
    counts = month.sim.truth.pos_counts()
    assert (counts.refunds, counts.unlinked_refunds, counts.split_refunds) == (
        len(month.refunds), len(unlinked), split)
    assert counts.partial_refunds == partial + split
    assert counts.zero_sales == sum(t.amount == 0 for t in month.sales)
    assert counts.sales + counts.zero_sales == len(month.sales)
    assert counts.member_sales == sum(t.amount > 0 and t.member_id is not None
                                      for t in month.sales)


def test_refunds_are_of_an_earlier_sale_of_the_member_within_what_is_left(month: Month) -> None:
    later_days = []
    for sale_id, refunds in month.refunds_by_sale().items():
        sale = month.first[sale_id]
        assert sale.type == "sale" and sale.amount > 0
        left = sale.amount
        for r in refunds:
            if r.ref_txn_id is not None:  # names a sale sent before it
                assert month.order[r.ref_txn_id] < month.order[r.txn_id]
            assert (r.store_id, r.member_id, r.payment) == (sale.store_id, sale.member_id,
                                                            sale.payment)
            assert sale.ts < r.ts and 0 < r.amount <= left
            left -= r.amount
            later_days.append((r.ts - sale.ts) // DAY_MS)
        if len(refunds) == 2:
            assert left == 0  # a split refund returns the rest
    assert max(later_days) <= month.scenario.refund_max_days
    assert sum(d >= 1 for d in later_days) > len(later_days) / 3  # days later, often


def test_partial_refunds_return_units_of_the_basket_or_part_of_a_price(month: Month) -> None:
    for sale_id, refunds in month.refunds_by_sale().items():
        sale = month.first[sale_id]
        basket = Counter({i.sku: i.qty for i in sale.items})
        back: Counter[str] = Counter()
        for r in refunds:
            back.update({i.sku: i.qty for i in r.items})
        if sum(basket.values()) > 1 or len(refunds) == 1:
            assert back <= basket, (sale, refunds)
        prices = {i.sku: i.unit_price for i in sale.items}
        if sum(basket.values()) > 1:
            assert all(i.unit_price == prices[i.sku] for r in refunds for i in r.items)


def test_repeats_are_byte_identical_second_sends_at_their_share(month: Month) -> None:
    sends: dict[str, list[SimEvent]] = defaultdict(list)
    for e, t in zip(month.events, month.sent, strict=True):
        sends[t.txn_id].append(e)
    repeated = {k: v for k, v in sends.items() if len(v) > 1}
    assert all(len(v) == 2 and v[0].value == v[1].value and v[0].key == v[1].key
               for v in repeated.values())
    assert len(repeated) == month.sim.truth.repeats == month.sim.truth.pos_counts().repeats
    assert_share(len(repeated), len(sends), month.scenario.duplicate_share)
    gaps = [v[1].ts - v[0].ts for v in repeated.values()]
    ts_in_value = {t.txn_id: t.ts for t in month.sent}
    assert all(v[0].ts == ts_in_value[k] for k, v in repeated.items())
    assert min(gaps) > 0 and sum(g >= 60_000 for g in gaps) > len(gaps) / 3  # minutes apart
    assert sum(g < 60_000 for g in gaps) > 0


# ---- existing scenarios do not change --------------------------------------------------


def _digest(events: list[SimEvent]) -> str:
    h = hashlib.sha256()
    for e in events:
        h.update(e.topic.encode() + b"\0" + e.key + b"\0" + e.value + b"\0"
                 + str(e.ts).encode() + b"\n")
    return h.hexdigest()


@pytest.mark.parametrize("name,seed,now,count,digest", [
    # computed before the messy cases existed; the footfall evaluation depends on these bytes
    ("eval-footfall", 7, None, 797_336,
     "227b2cfb11e22d2703c6d5e64a7bd4dd3f870d2f88abfa014dc7dc24a68425a5"),
    ("smoke", 3, datetime(2025, 6, 2, 4, 0, tzinfo=UTC), 42_698,
     "7b71b95c4c108e352d23ac4452293526a42119389b22205ce6b2066e36d40952"),
])
def test_existing_scenarios_give_the_same_bytes(name: str, seed: int, now: datetime | None,
                                                count: int, digest: str) -> None:
    events = list(MallSimulator(Scenario.load(name), seed, now=now).events())
    assert (len(events), _digest(events)) == (count, digest)


def _small(**changes: object) -> Scenario:
    return Scenario.load("members-month").replace(
        name="small", days=3, stores_per_mall=4, shoppers_per_mall_per_day=300,
        **{"zero_sale_share": 0.0, "partial_refund_share": 0.0, "split_refund_share": 0.0,
           "unlinked_refund_share": 0.0, "refund_max_days": 0, "duplicate_share": 0.0,
           **changes})


def test_messy_cases_change_nothing_but_transactions() -> None:
    clean = list(MallSimulator(_small(), seed=2).events())
    messy = list(MallSimulator(_small(zero_sale_share=0.2, partial_refund_share=0.5,
                                      split_refund_share=0.5, unlinked_refund_share=0.5,
                                      refund_max_days=2, duplicate_share=0.2), seed=2).events())
    assert [e for e in clean if e.topic != SALES] == [e for e in messy if e.topic != SALES]
    assert [e for e in clean if e.topic == SALES] != [e for e in messy if e.topic == SALES]
    # repeats alone: the stream without second sends is the clean one
    repeated = list(MallSimulator(_small(duplicate_share=0.3), seed=2).events())
    seen: set[bytes] = set()
    firsts = []
    for e in repeated:
        if e.topic != SALES or e.value not in seen:
            firsts.append(e)
        seen.add(e.value)
    assert firsts == clean and len(repeated) > len(clean)


@pytest.mark.parametrize("text,fragment", [
    ("name: x\nzero_sale_share: -0.1", "zero_sale_share must be in [0, 1]"),
    ("name: x\nduplicate_share: 2", "duplicate_share must be in [0, 1]"),
    ("name: x\nunlinked_refund_share: 1.01", "unlinked_refund_share must be in [0, 1]"),
    ("name: x\nrefund_max_days: -1", "refund_max_days must be in [0, 365]"),
    ("name: x\nduplicate_delay_s: 0", "duplicate_delay_s must be positive"),
])
def test_bad_messy_fields_fail_clearly(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        Scenario.from_yaml(text)


def test_all_messy_fields_default_to_off() -> None:
    s = Scenario(name="x")
    assert (s.zero_sale_share, s.partial_refund_share, s.split_refund_share,
            s.unlinked_refund_share, s.refund_max_days, s.duplicate_share) == (0, 0, 0, 0, 0, 0)


# ---- erasures (erase_share) -----------------------------------------------------------


def test_erasures_at_night_after_a_purchase(month: Month) -> None:
    erase = [msgspec.json.decode(v) for v in month.sim.truth.member_events if b'"type":"erase"' in v]
    assert len(erase) == month.sim.truth.erasures > 0
    buyers = {t.member_id for t in month.sales if t.member_id is not None and t.amount > 0}
    assert_share(len(erase), len(buyers), month.scenario.erase_share * 0.9)  # some cannot: no purchase yet
    first_buy: dict[str, int] = {}
    for t in month.sales:
        if t.member_id is not None and t.amount > 0:
            first_buy[t.member_id] = min(first_buy.get(t.member_id, t.ts), t.ts)
    last_day = max(t.ts for t in month.sent)
    for e in erase:
        assert first_buy[e["member_id"]] < e["ts"]  # after some of their purchases
        assert 1 * DAY_MS < last_day - e["ts"] < 7 * DAY_MS  # some days before the end
        # hours from any of their transactions, so the topics' interleaving cannot matter
        assert all(abs(t.ts - e["ts"]) > 3 * 3_600_000 for t in month.sent if t.member_id == e["member_id"])
    after = {t.member_id for t in month.sales for e in erase if t.member_id == e["member_id"] and t.ts > e["ts"]}
    assert after  # some shop again: a fresh ledger


def test_erase_share_is_opt_in(month: Month) -> None:
    assert Scenario.load("demo").erase_share == 0.0
    with pytest.raises(ConfigError, match="erase_share"):
        Scenario.load("members-month").replace(erase_share=1.5)
