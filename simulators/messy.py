"""Messy POS exports: zero-amount sales, partial, split, later and unlinked refunds, repeats.

Reads the clean sales and refunds of one site (``simulators.pos.make_sales``) and the
scenario's shares of each messy case; returns what a real POS export would carry instead;
writes nothing. Every case is opt-in: with every share 0 and ``refund_max_days`` 0,
``Mess.off`` is true and the caller does not call these functions at all, so existing
scenarios give the same bytes. All draws come from the generator handed in (its own seeded
stream), a fixed block per input transaction, so turning a case on changes no footfall,
basket or member draw, and changing one share moves only the transactions it picks.

Each case, and what it guarantees:

* **zero-amount sale** (``zero_sale_share`` of sales): a free item (one unit of one basket
  item at unit price 0), a write-off (the basket at unit price 0) or an adjustment (no
  items), in equal parts; amount 0 = the sum of ``qty * unit_price``; never refunded.
* **later refund** (``refund_max_days``): a refund moves to a day 0 to ``refund_max_days``
  after its sale (uniform; a day past the scenario, or inside an outage of its payment,
  keeps it on the sale's day), inside opening hours.
* **partial refund** (``partial_refund_share`` of refunds): some of the basket's units come
  back (a basket of one unit: part of its price, as a price adjustment); the amount is
  below the sale's and equals its items' sum.
* **split refund** (``split_refund_share`` of partial refunds): 10 minutes to 3 hours of
  opening time after a partial refund (carried into the next day's opening hours past
  closing; none after the last day, or in an outage of its payment), the rest comes back;
  the two add up to the sale's amount.
* **unlinked refund** (``unlinked_refund_share`` of refunds, drawn for each refund): sent
  without ``ref_txn_id``, as most exports do; ``TrueSale.refund_of`` still names the sale.
* **repeat** (``duplicate_share`` of transactions): the same message sent again, byte for
  byte, after an exponential delay of mean ``duplicate_delay_s`` (often minutes).

Every refund is of an earlier sale of the same store, member and payment, and the refunds
of a sale never add up to more than its amount.

>>> it = [Item(sku="BAK-001", category="bakery", qty=2, unit_price=900)]
>>> back, rest = split_basket(it, 1800, [0.3, 0.1], 0.5)
>>> [(i.qty, i.unit_price) for i in back], [(i.qty, i.unit_price) for i in rest]
([(1, 900)], [(1, 900)])
>>> back, rest = split_basket([Item("BAK-001", "bakery", 1, 900)], 900, [0.3], 0.5)
>>> [(i.qty, i.unit_price) for i in back], [(i.qty, i.unit_price) for i in rest]
([(1, 450)], [(1, 450)])
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

import msgspec
import numpy as np

from connectors.schemas import Item
from simulators.pos import TrueSale, Windows
from simulators.scenario import Scenario

SPLIT_AFTER_MS = (600_000, 3 * 3_600_000)  # a split refund's rest comes back this much later
MAX_UNITS = 16  # sort keys drawn per transaction to pick returned units (a basket has <= 12)
_U = 10  # uniforms drawn per transaction
Made = list[tuple[TrueSale, list[Item]]]


@dataclass(frozen=True)
class Mess:
    """The scenario's shares of each messy case (see the module docstring)."""

    zero_sale_share: float = 0.0
    partial_refund_share: float = 0.0
    split_refund_share: float = 0.0
    unlinked_refund_share: float = 0.0
    refund_max_days: int = 0
    duplicate_share: float = 0.0
    duplicate_delay_s: float = 120.0

    @classmethod
    def of(cls, scenario: Scenario) -> Mess:
        return cls(zero_sale_share=scenario.zero_sale_share,
                   partial_refund_share=scenario.partial_refund_share,
                   split_refund_share=scenario.split_refund_share,
                   unlinked_refund_share=scenario.unlinked_refund_share,
                   refund_max_days=scenario.refund_max_days,
                   duplicate_share=scenario.duplicate_share,
                   duplicate_delay_s=scenario.duplicate_delay_s)

    @property
    def off(self) -> bool:
        """True when no case is on: the clean transactions are the export."""
        return not (self.zero_sale_share or self.partial_refund_share
                    or self.unlinked_refund_share or self.refund_max_days
                    or self.duplicate_share)


def mess_up(rng: np.random.Generator, made: Made, *, mess: Mess,
            hours: list[tuple[int, int]], windows: Windows) -> Made:
    """The transactions of one site as the export carries them (see the module docstring).

    ``made`` is ``make_sales``' output (each refund right after its sale); ``hours`` is,
    per scenario day, the site's opening and the last moment anyone is in a store."""
    n = len(made)
    u = rng.random((n, _U)).tolist()
    keys = rng.random((n, MAX_UNITS)).tolist()
    ids = rng.integers(0, 2**62, size=n).tolist()
    opens = [a for a, _ in hours]
    sales: dict[str, tuple[TrueSale, list[Item]]] = {}
    out: Made = []
    for k, (t, items) in enumerate(made):
        uk = u[k]
        if not t.refund:
            if uk[0] < mess.zero_sale_share:
                t, items = _zero(t, items, uk[1])
            sales[t.txn_id] = (t, items)
            out.append((t, items))
            continue
        sale, basket = sales[t.ref_txn_id]  # type: ignore[index]
        if sale.amount == 0:
            continue  # a zero-amount sale is never refunded
        ts = _later(t, sale, uk[2], uk[3], mess.refund_max_days, opens, hours, windows)
        amount, back = sale.amount, basket
        rest: list[Item] = []
        partial = uk[4] < mess.partial_refund_share and sale.amount >= 2
        if partial:
            back, rest = split_basket(basket, sale.amount, keys[k], uk[5])
            amount = sum(i.qty * i.unit_price for i in back)
        first = _refund(t, sale, ts, amount, partial, uk[6] < mess.unlinked_refund_share)
        out.append((first, back))
        if partial and uk[7] < mess.split_refund_share:
            r_ts = _open_after(ts + SPLIT_AFTER_MS[0]
                               + int(uk[8] * (SPLIT_AFTER_MS[1] - SPLIT_AFTER_MS[0])), opens, hours)
            if r_ts is not None and sale.payment not in windows.out(r_ts):
                second = replace(first, txn_id=f"T{ids[k]:016x}", ts=r_ts,
                                 amount=sale.amount - amount, split=True,
                                 ref_txn_id=None if uk[9] < mess.unlinked_refund_share
                                 else sale.txn_id)
                out.append((second, rest))
    return out


def repeats(rng: np.random.Generator, ts: list[int], *, mess: Mess) -> list[tuple[int, int]]:
    """``(index, write ts)`` of the transactions sent twice: ``duplicate_share`` of them,
    the repeat an exponential ``duplicate_delay_s`` (mean) after the first send."""
    n = len(ts)
    u = rng.random(n)
    delay = rng.exponential(mess.duplicate_delay_s * 1000.0, n)
    return [(i, ts[i] + 1 + int(delay[i])) for i in np.flatnonzero(u < mess.duplicate_share).tolist()]


def split_basket(items: list[Item], amount: int, keys: list[float], u: float
                 ) -> tuple[list[Item], list[Item]]:
    """(returned, kept) items of a partial refund of a sale of ``amount``: 1 to n-1 of its
    n units, picked by ``keys``; a single unit is split by price, ``u`` of it back (at least
    1 fen, at most ``amount - 1``). Both parts have a positive sum."""
    units = [i for i, it in enumerate(items) for _ in range(it.qty)]
    if len(units) < 2:
        it = items[0]
        part = min(amount - 1, max(1, int(amount * (0.2 + 0.6 * u))))
        return ([Item(sku=it.sku, category=it.category, qty=1, unit_price=part)],
                [Item(sku=it.sku, category=it.category, qty=1, unit_price=amount - part)])
    n_back = 1 + int(u * (len(units) - 1))
    picked = sorted(range(len(units)), key=keys.__getitem__)[:n_back]
    back_qty = [0] * len(items)
    for p in picked:
        back_qty[units[p]] += 1
    back = [msgspec.structs.replace(it, qty=q) for it, q in zip(items, back_qty, strict=True) if q]
    kept = [msgspec.structs.replace(it, qty=it.qty - q) for it, q in zip(items, back_qty, strict=True)
            if it.qty - q]
    return back, kept


def _open_after(ts: int, opens: list[int], hours: list[tuple[int, int]]) -> int | None:
    """``ts`` if the stores are open then; past closing, as long into the next day's
    opening hours; None if there is no next scenario day."""
    day = bisect.bisect_right(opens, ts) - 1
    if day < 0:
        return None
    if ts < hours[day][1]:
        return ts
    if day + 1 >= len(hours):
        return None
    return min(hours[day + 1][0] + ts - hours[day][1], hours[day + 1][1] - 1)


def _zero(sale: TrueSale, items: list[Item], u: float) -> tuple[TrueSale, list[Item]]:
    if u < 1 / 3:  # a free item
        first = items[0]
        free = [Item(sku=first.sku, category=first.category, qty=1, unit_price=0)]
    elif u < 2 / 3:  # a write-off of the basket
        free = [msgspec.structs.replace(it, unit_price=0) for it in items]
    else:  # an adjustment: no items
        free = []
    return replace(sale, amount=0), free


def _later(refund: TrueSale, sale: TrueSale, u_day: float, u_when: float, max_days: int,
           opens: list[int], hours: list[tuple[int, int]], windows: Windows) -> int:
    if max_days <= 0:
        return refund.ts
    sale_day = bisect.bisect_right(opens, sale.ts) - 1
    day = sale_day + int(u_day * (max_days + 1))
    if day == sale_day or day >= len(hours):
        return refund.ts
    lo, hi = hours[day]
    ts = lo + int(u_when * (hi - lo))
    return refund.ts if sale.payment in windows.out(ts) else ts


def _refund(refund: TrueSale, sale: TrueSale, ts: int, amount: int, partial: bool,
            unlinked: bool) -> TrueSale:
    return replace(refund, ts=ts, amount=amount, partial=partial, refund_of=sale.txn_id,
                   ref_txn_id=None if unlinked else sale.txn_id)
