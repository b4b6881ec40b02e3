"""Point-of-sale: which store visits end in a sale, what is in the basket, how it is paid.

Reads store visits and the people who made them; writes nothing. Every visit draws the
same random numbers whether or not it ends in a sale, so two runs with the same seed
that differ only in a ``sales_drop`` incident make the same baskets, and the one with the
incident makes a subset of the other's sales. Guarantees: a sale lies inside its visit,
amounts are positive integers in fen (CNY) equal to the sum of ``qty * unit_price``; a
member's ``member_id`` is on sales made after they signed up; a refund refers to an
earlier sale of the same store and day, for the same amount and payment, inside opening
hours; a payment method in an outage is never used in its window (shoppers pay another
way, or leave without buying). Opt-in (the scenario's ``loyalty``): ``redeem_points`` has
some member sales pay with points (``points_redeemed``); a refund never carries any, and
a value with none leaves the field out, so scenarios without loyalty keep their bytes.

>>> pick_payment(0.0), pick_payment(0.999999)
('wechat', 'andpay')
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import msgspec
import numpy as np

from connectors.catalog import Loyalty
from connectors.schemas import Item, Transaction
from simulators.shops import CATEGORIES, PAYMENT_MIX

GLANCE_MS = 120_000
GLANCE_FACTOR = 0.2  # a visit under two minutes rarely ends in a sale
ABANDON_ON_OUTAGE = 0.2
MAX_ITEMS = 5
CURRENCY = "CNY"  # of every simulated store (``simulators.geometry.build_catalog``) and sale

_PAY_NAMES = list(PAYMENT_MIX)


def pick_payment(u: float, excluded: frozenset[str] = frozenset()) -> str:
    """The payment method at quantile ``u`` of the payment mix, without ``excluded``."""
    names = [p for p in _PAY_NAMES if p not in excluded]
    total = sum(PAYMENT_MIX[p] for p in names)
    acc = 0.0
    for p in names:
        acc += PAYMENT_MIX[p] / total
        if u < acc:
            return p
    return names[-1]


@dataclass(frozen=True, slots=True)
class TrueSale:
    """A transaction as the POS made it (a refund has ``refund`` and ``ref_txn_id``).

    ``ref_txn_id`` is what the message names (None for a refund sent without it);
    ``refund_of`` the sale a refund is of, named in the message or not;
    ``partial``: a refund of less than the sale's amount; ``split``: the second refund
    of a sale, for what the first (partial) one left."""

    txn_id: str
    store_id: str
    ts: int
    amount: int
    payment: str
    member_id: str | None
    refund: bool = False
    ref_txn_id: str | None = None
    refund_of: str | None = None
    partial: bool = False
    split: bool = False
    points_redeemed: int = 0  # loyalty points paid with (sales only; ``redeem_points``)


@dataclass(frozen=True)
class StoreInfo:
    store_id: str
    merchant_id: str
    category: str
    leave_by_ms: list[int]  # per scenario day: the last moment anyone is in the store


@dataclass(frozen=True)
class Windows:
    """Incidents resolved to epoch ms: sales drops by store, outages by payment."""

    sales_drop: dict[str, list[tuple[int, int, float]]]
    outage: dict[str, list[tuple[int, int]]]

    def factor(self, store_id: str, ts: int) -> float:
        f = 1.0
        for start, end, factor in self.sales_drop.get(store_id, ()):
            if start <= ts < end:
                f *= factor
        return f

    def out(self, ts: int) -> frozenset[str]:
        return frozenset(p for p, ws in self.outage.items() if any(a <= ts < b for a, b in ws))


def make_sales(
    rng: np.random.Generator,
    *,
    stores: list[StoreInfo],
    visit_store: np.ndarray,
    visit_start: np.ndarray,
    visit_end: np.ndarray,
    visit_day: np.ndarray,
    member_id: list[str | None],
    member_since: np.ndarray,
    refund_share: float,
    windows: Windows,
) -> list[tuple[TrueSale, list[Item]]]:
    """Sales and refunds of the visits (one row per visit in every array; ``member_id``
    and ``member_since`` are per visit too). Returns ``(TrueSale, items)`` pairs."""
    n = len(visit_store)
    u_buy, u_when, u_pay, u_alt, u_leave, u_refund, u_rwhen = rng.random((7, n))
    n_items = rng.integers(1, 4, n)
    item_keys = rng.random((n, MAX_ITEMS)).tolist()
    u_qty = rng.random((n, 3)).tolist()
    ids = rng.integers(0, 2**62, size=(n, 2)).tolist()
    u_buy, u_when, u_pay, u_alt, u_leave, u_refund, u_rwhen = (
        a.tolist() for a in (u_buy, u_when, u_pay, u_alt, u_leave, u_refund, u_rwhen))
    n_items = n_items.tolist()
    visit_store, visit_start, visit_end = (
        a.tolist() for a in (visit_store, visit_start, visit_end))
    visit_day, member_since = visit_day.tolist(), member_since.tolist()
    out: list = []
    for v in range(n):
        store = stores[int(visit_store[v])]
        cat = CATEGORIES[store.category]
        start, end = int(visit_start[v]), int(visit_end[v])
        dwell = end - start
        ts = end - int(20_000 + u_when[v] * min(300_000, 0.3 * dwell))
        ts = max(ts, start + min(5_000, dwell // 2))
        p = cat.purchase_p * (GLANCE_FACTOR if dwell < GLANCE_MS else 1.0)
        if not u_buy[v] < p * windows.factor(store.store_id, ts):
            continue
        out_now = windows.out(ts)
        payment = pick_payment(u_pay[v])
        if payment in out_now:
            if u_leave[v] < ABANDON_ON_OUTAGE or len(out_now) == len(_PAY_NAMES):
                continue
            payment = pick_payment(u_alt[v], out_now)
        menu = cat.items
        keys = item_keys[v]
        chosen = sorted(range(len(menu)), key=keys.__getitem__)[: min(n_items[v], len(menu))]
        items = [
            Item(sku=menu[i][0], category=store.category, unit_price=menu[i][2],
                 qty=1 + int(u_qty[v][j] ** 2 * cat.max_qty))
            for j, i in enumerate(chosen)
        ]
        amount = sum(it.qty * it.unit_price for it in items)
        member = member_id[v] if member_since[v] <= ts else None
        sale = TrueSale(txn_id=f"T{ids[v][0]:016x}", store_id=store.store_id, ts=ts,
                        amount=amount, payment=payment, member_id=member)
        out.append((sale, items))
        if u_refund[v] < refund_share:
            r_ts = ts + int(600_000 + u_rwhen[v] * 3 * 3600_000)
            if r_ts < store.leave_by_ms[int(visit_day[v])] and payment not in windows.out(r_ts):
                refund = TrueSale(txn_id=f"T{ids[v][1]:016x}", store_id=store.store_id,
                                  ts=r_ts, amount=amount, payment=payment, member_id=member,
                                  refund=True, ref_txn_id=sale.txn_id,
                                  refund_of=sale.txn_id)
                out.append((refund, items))
    return out


DAY_MS = 86_400_000
ZERO_REDEEM_FACTOR = 4.0  # zero-amount sales are rewards: paid with points this much more often


def redeem_points(
    rng: np.random.Generator,
    made: list[tuple[TrueSale, list[Item]]],
    *,
    merchant_of: dict[str, str],
    programmes: dict[str, Loyalty],
    share: float,
) -> list[tuple[TrueSale, list[Item]]]:
    """``made`` (one site's transactions, in any order) with some member sales paying
    with loyalty points (opt-in: the scenario's ``loyalty`` and ``redeem_share``).

    ``share`` of the member sales (amount > 0) at a store whose merchant (``merchant_of``)
    has a programme redeem 20-100% of a rough running balance the simulator keeps per
    member and merchant, in ``ts`` order: the base rate of each sale, less what was
    redeemed, refunded (at the base rate) or left to expire. A zero-amount sale (a reward)
    redeems with ``ZERO_REDEEM_FACTOR`` times that chance. Only when the estimate is
    positive; the estimate ignores level and birthday multipliers (so it is at most the
    balance unless refunds intervene) and the engine and the truth recompute exactly.
    Draws a fixed block (two uniforms) per transaction; refunds keep 0 points; the order
    and every other field of ``made`` are unchanged.

    >>> p = {"M1": Loyalty(unit_minor=100, points_per_unit=2)}
    >>> made = [(TrueSale("T1", "S1", 10, 5000, "cash", "U1"), []), (TrueSale("T2", "S1", 20, 900, "cash", "U1"), [])]
    >>> out = redeem_points(np.random.default_rng(1), made, merchant_of={"S1": "M1"}, programmes=p, share=1.0)
    >>> [t.points_redeemed for t, _ in out]  # T1 earns 5000 * 2 // 100 = 100; T2 pays with 95 of them
    [0, 95]
    """
    u = rng.random((len(made), 2)).tolist()
    balance: dict[tuple[str, str], int] = {}
    last_buy: dict[tuple[str, str], int] = {}
    out = list(made)
    for k in sorted(range(len(made)), key=lambda k: made[k][0].ts):
        t, items = made[k]
        merchant = merchant_of.get(t.store_id)
        programme = programmes.get(merchant) if merchant is not None else None
        if t.member_id is None or programme is None or merchant is None:
            continue
        key = (t.member_id, merchant)
        base = t.amount * programme.points_per_unit // programme.unit_minor
        have = balance.get(key, 0)
        if t.refund:
            balance[key] = have - base
            continue
        last = last_buy.get(key)
        if t.amount > 0 and programme.expiry_days and last is not None \
                and t.ts - last > programme.expiry_days * DAY_MS:
            have = 0
        chance = share * (ZERO_REDEEM_FACTOR if t.amount == 0 else 1.0)
        points = 0
        if have > 0 and u[k][0] < chance:
            points = max(1, int(have * (0.2 + 0.8 * u[k][1])))
            out[k] = (replace(t, points_redeemed=points), items)
        balance[key] = have + base - points
        if t.amount > 0:
            last_buy[key] = t.ts  # the newest: ``made`` is walked in ts order
    return out


_NO_POINTS = b',"points_redeemed":0}'


def encode_sale(sale: TrueSale, merchant_id: str, items: list[Item]) -> bytes:
    """The ``pos.transactions`` value of a sale or refund; ``points_redeemed`` only when
    points paid (its default 0 is left out, so scenarios without loyalty keep their bytes).

    >>> t = TrueSale("T1", "S1", 5, 900, "cash", "U1")
    >>> encode_sale(t, "M1", []).endswith(b'"items":[]}'), encode_sale(replace(t, points_redeemed=7), "M1", [])[-20:]
    (True, b'"points_redeemed":7}')
    """
    value = msgspec.json.encode(
        Transaction(
            type="refund" if sale.refund else "sale", txn_id=sale.txn_id, ts=sale.ts,
            merchant_id=merchant_id, store_id=sale.store_id, amount=sale.amount,
            currency=CURRENCY, payment=sale.payment, member_id=sale.member_id,  # type: ignore[arg-type]
            ref_txn_id=sale.ref_txn_id, items=items, points_redeemed=sale.points_redeemed,
        )
    )
    if value.endswith(_NO_POINTS):  # the last field: cut it, keep the closing brace
        value = value[: -len(_NO_POINTS)] + b"}"
    return value
