"""One member's state: ``MemberLedger`` applies sales, refunds and member events by the
rules of docs/member-profiles.md (followed exactly) and gives the member's profile. Pure:
no clock, no metrics, no I/O, so it is usable outside the dataflow:

>>> from connectors.records import Sale
>>> from connectors.schemas import Item
>>> ledger = MemberLedger()
>>> ledger.apply(Sale(DAY_MS, "T1", "S1", 1200, False, "M1", 0, payment="wechat",
...                   items=[Item("sku-1", "coffee", 2, 600)]))
<Applied.SALE: 'sale'>
>>> ledger.apply(Sale(2 * DAY_MS, "R1", "S1", 500, True, "M1", 1, ref_txn_id="T1"))
<Applied.REFUND_OF_SALE: 'refund_of_sale'>
>>> ledger.apply(Sale(2 * DAY_MS, "R1", "S1", 500, True, "M1", 1, ref_txn_id="T1"))
<Applied.DUPLICATE: 'duplicate'>
>>> p = ledger.profile("M1")
>>> p.net_spend, p.spend_30d, p.recency_days, p.rfm, p.favourite_categories, p.duplicates
(700, 700, 1, '511', ('coffee',), 1)
>>> ledger.change(MemberChange(3 * DAY_MS, "M1", "consent", 7, push=True))
<Applied.MEMBER_EVENT: 'member_event'>
>>> p = ledger.profile("M1")
>>> p.push_consent, p.as_of_ts == 3 * DAY_MS, p.recency_days
(True, True, 2)

An erase at E forgets every record with ``ts`` <= E, whether it arrived before or after:

>>> ledger.erase(2 * DAY_MS) == 2 * DAY_MS  # T1 and R1 go; the newer consent stays
True
>>> ledger.apply(Sale(DAY_MS, "T0", "S1", 900, False, "M1", 2))  # late, older than E
<Applied.ERASED: 'erased'>
>>> p = ledger.profile("M1")
>>> p.sales, p.refunds, p.push_consent, p.as_of_ts == 3 * DAY_MS
(0, 0, True, True)

State per member (``MemberLedger``): counters and sums; the applied txn ids and the sales
(ts, what is left to refund, items) of the last 400 days of the member's event time; the
spend and purchases of the last 90 days by ts; the 100 stores most recently bought at;
quantity per category and uses per payment method (small, fixed sets); the earliest
sign-up, the newest consent and profile event, the 20 devices with the newest binding
events; the newest erase ts; the records applied in the last 8 days of event time
(``recent``, what an erase older than ``as_of_ts`` rebuilds from). Its size is bounded by
what a member does in 400 days. An erase resets the ledger to its erase ts and the
records newer than it; a member left with nothing but the erase ts (the tombstone, which
drops late older records) is discarded (``StatefulBatchLogic.DISCARD``) a wall-clock
``tombstone_s`` after its last erase (``notify_at``): the next snapshot is a deletion.

Arrival order matters in three ways only, all stated in the contract: a refund that
arrives before the sale it names is unmatched; the 400-day memory is measured from the
member's ``as_of_ts`` when a transaction arrives; of two different records with one
txn_id, the first to arrive is applied. An erase is an event-time rule (it forgets the
records with ``ts`` <= its own, arrived before or after it); member events are
newest-``ts``-wins, so how the two input topics interleave changes nothing but exact
``ts`` ties (and an erase more than 8 days older than the member's ``as_of_ts``, which
forgets all the member's records).
"""


from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from connectors.records import MemberChange, Sale
from connectors.schemas import Item, LoyaltyAccount, MemberProfile
from flows.loyalty import LoyaltyBook, LoyaltyOf, NamedSale, no_loyalty

DAY_MS = 86_400_000
MEMORY_MS = 400 * DAY_MS  # applied txn ids and refundable sales
REPLAY_MS = 8 * DAY_MS  # the records an erase older than as_of_ts rebuilds from
TOMBSTONE = timedelta(days=8)  # wall-clock life of a tombstone-only member (> 7-day max event age)
SHORT_MS, LONG_MS = 30 * DAY_MS, 90 * DAY_MS  # the spend and purchase windows
HALF_LIFE_MS = 30 * DAY_MS  # of the decayed category quantities
MAX_STORES = 100
MAX_DEVICES = 20  # devices with the newest binding events
TOP_CATEGORIES = 3

# RFM thresholds, best score first: (bound, score).
RECENCY_DAYS = ((7, 5), (30, 4), (90, 3), (180, 2))  # recency_days <= bound
FREQUENCY = ((10, 5), (5, 4), (3, 3), (2, 2))  # purchases_90d >= bound
MONETARY = ((200_000, 5), (50_000, 4), (20_000, 3), (5_000, 2))  # spend_90d >= bound


class Applied(StrEnum):
    """What ``MemberLedger.apply`` did with a transaction (rules 1 to 5 of the contract),
    or ``change`` with a member event; ``ERASED``: dropped, at or before the member's erase."""

    SALE = "sale"
    ZERO_SALE = "zero_sale"
    REFUND_OF_SALE = "refund_of_sale"
    REFUND_UNMATCHED = "refund_unmatched"
    DUPLICATE = "duplicate"
    MEMBER_EVENT = "member_event"
    ERASED = "erased"


@dataclass(slots=True)
class RememberedSale:
    """A sale a refund can name: its ts, the amount not refunded yet, its items, its merchant."""

    ts: int
    left: int
    items: tuple[Item, ...]
    merchant_id: str = ""


@dataclass(slots=True)
class WindowEntry:
    """Spend (sales minus refunds attributed here) and purchases at one ts of the 90 days."""

    spend: int = 0
    purchases: int = 0


@dataclass
class MemberLedger:
    """One member's state: ``apply`` a transaction, read the ``profile``. Pure: no clock.

    Expiry runs when event time has moved a day since the last sweep; lookups check their
    horizon themselves, so results never depend on when a sweep ran.
    """

    as_of_ts: int | None = None
    sales: int = 0
    refunds: int = 0
    zero_sales: int = 0
    duplicates: int = 0
    gross_spend: int = 0
    refunded: int = 0
    first_purchase_ts: int | None = None
    last_purchase_ts: int | None = None
    store_last_ts: dict[str, int] = field(default_factory=dict)  # at most MAX_STORES
    category_qty: dict[str, int] = field(default_factory=dict)
    payment_uses: dict[str, int] = field(default_factory=dict)
    txn_ts: dict[str, int] = field(default_factory=dict)  # applied txn id -> ts, 400 days
    remembered: dict[str, RememberedSale] = field(default_factory=dict)  # sale txn id, 400 days
    window: dict[int, WindowEntry] = field(default_factory=dict)  # ts -> entry, 90 days
    swept_at: int | None = None
    member_since_ts: int | None = None  # earliest sign-up
    consent: tuple[int, bool] | None = None  # (ts, push) of the newest consent
    details: tuple[int, str | None, tuple[str, ...]] | None = None  # (ts, birthday, tags), newest
    device_events: dict[int, tuple[int, bool]] = field(default_factory=dict)  # device -> (ts, bound)
    erased_ts: int | None = None  # the newest erase: every record with ts <= it is dropped
    recent: tuple[Sale | MemberChange, ...] = ()  # applied records, ts > as_of_ts - REPLAY_MS
    loyalty: LoyaltyBook = field(default_factory=LoyaltyBook)  # entries per merchant, birthdays

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A ledger snapshotted by an earlier release resumes: the fields added since (the
        loyalty book, a remembered sale's merchant) take their defaults."""
        self.__dict__.update(MemberLedger().__dict__ | state)
        for sale in self.remembered.values():
            if not hasattr(sale, "merchant_id"):
                sale.merchant_id = ""

    def erase(self, ts: int) -> int:
        """Forget every record with ``ts`` <= the erase's (rule 5 of "Member events"), in
        any arrival order; returns the ts the member is now erased up to.

        Only a newer erase changes anything. The ledger is rebuilt from the applied records
        with a newer ``ts``, replayed from ``recent`` in their arrival order; if the erase is
        older than ``as_of_ts - REPLAY_MS`` (``recent`` may not hold them all), everything
        is forgotten and the erase counts as one at ``as_of_ts``."""
        if self.erased_ts is not None and ts <= self.erased_ts:
            return self.erased_ts
        kept: tuple[Sale | MemberChange, ...] = ()
        if self.as_of_ts is not None and ts < self.as_of_ts - REPLAY_MS:
            ts = self.as_of_ts
        else:
            kept = tuple(r for r in self.recent if r.ts > ts)
        fresh = MemberLedger(erased_ts=ts)
        for record in kept:
            if isinstance(record, Sale):
                fresh.apply(record)
            else:
                fresh.change(record)
        for f in fields(self):
            setattr(self, f.name, getattr(fresh, f.name))
        return ts

    def _erased(self, ts: int) -> bool:
        return self.erased_ts is not None and ts <= self.erased_ts

    def _log(self, record: Sale | MemberChange, now: int) -> None:
        if record.ts > now - REPLAY_MS:
            self.recent += (record,)

    def change(self, event: MemberChange) -> Applied:
        """Apply one member event other than ``erase`` (rules 1 to 4 of "Member events");
        one at or before the member's erase is dropped (``Applied.ERASED``)."""
        if event.kind == "erase":
            raise ValueError(f"an erase of member {event.member_id!r} is not a change: use MemberLedger.erase")
        ts = event.ts
        if self._erased(ts):
            return Applied.ERASED
        if event.kind == "signup":
            if self.member_since_ts is None or ts < self.member_since_ts:
                self.member_since_ts = ts
        elif event.kind in ("bind_device", "unbind_device"):
            if event.device is None:
                raise ValueError(f"{event.kind} of member {event.member_id!r} names no device")
            self._binding(event.device, ts, event.kind == "bind_device")
        elif event.kind == "consent":
            if self.consent is None or ts >= self.consent[0]:  # equal ts: the later arrival
                self.consent = (ts, bool(event.push))
        elif event.kind == "profile":
            self.loyalty.profile_event(ts, event.birthday)
            if self.details is None or ts >= self.details[0]:
                self.details = (ts, event.birthday, tuple(sorted(set(event.tags))))
        else:
            raise ValueError(f"unknown member event kind {event.kind!r} of member {event.member_id!r}")
        now = ts if self.as_of_ts is None else max(self.as_of_ts, ts)
        self.as_of_ts = now
        self._log(event, now)
        if self.swept_at is None or now - self.swept_at >= DAY_MS:
            self._sweep(now)
        return Applied.MEMBER_EVENT

    def _binding(self, device: int, ts: int, bound: bool) -> None:
        """The newest binding event per device; keep the MAX_DEVICES devices whose newest
        event is newest (ties: the smaller device id stays). A dropped device's threshold
        only rises, so a late older event of it is dropped again, as in a batch ranking."""
        events = self.device_events
        last = events.get(device)
        if last is None or ts >= last[0]:  # equal ts: the later arrival
            events[device] = (ts, bound)
        if len(events) > MAX_DEVICES:
            del events[min(events, key=lambda d: (events[d][0], -d))]

    def apply(self, sale: Sale) -> Applied:
        """Apply one sale or refund of this member (the contract's rules, in order); one at
        or before the member's erase is dropped (``Applied.ERASED``)."""
        if self._erased(sale.ts):
            return Applied.ERASED
        if self._remembers(self.txn_ts.get(sale.txn_id)):
            self.duplicates += 1
            if self.as_of_ts is not None:
                self._log(sale, self.as_of_ts)
            return Applied.DUPLICATE
        now = sale.ts if self.as_of_ts is None else max(self.as_of_ts, sale.ts)
        self._log(sale, now)
        if sale.ts > now - MEMORY_MS:  # an older one could never be looked up again
            self.txn_ts[sale.txn_id] = sale.ts
        if sale.refund:
            outcome = self._refund(sale, now)
        elif sale.amount == 0:
            self.zero_sales += 1
            self.loyalty.sale(sale.merchant_id, sale.ts, sale.txn_id, 0, sale.points_redeemed)
            outcome = Applied.ZERO_SALE
        else:
            self._sale(sale, now)
            outcome = Applied.SALE
        self.as_of_ts = now
        if self.swept_at is None or now - self.swept_at >= DAY_MS:
            self._sweep(now)
        return outcome

    def profile(self, member_id: str, loyalty: LoyaltyOf = no_loyalty) -> MemberProfile:
        """The member's profile as of the newest transaction or member event applied, its
        points accounts replayed with ``loyalty`` (the programmes now). Folds the loyalty
        entries that left the 400-day memory (``LoyaltyBook.fold``)."""
        as_of = self.as_of_ts
        if as_of is None:
            raise ValueError(f"nothing of member {member_id!r} applied yet: no profile to give")
        spend_30d = spend_90d = purchases_30d = purchases_90d = 0
        for ts, entry in self.window.items():
            if ts > as_of - LONG_MS:
                spend_90d += entry.spend
                purchases_90d += entry.purchases
                if ts > as_of - SHORT_MS:
                    spend_30d += entry.spend
                    purchases_30d += entry.purchases
        recency = rfm = None
        if self.last_purchase_ts is not None:
            recency = (as_of - self.last_purchase_ts) // DAY_MS
            rfm = rfm_score(recency, purchases_90d, spend_90d)
        return MemberProfile(
            member_id=member_id,
            as_of_ts=as_of,
            sales=self.sales,
            refunds=self.refunds,
            zero_sales=self.zero_sales,
            duplicates=self.duplicates,
            gross_spend=self.gross_spend,
            refunded=self.refunded,
            net_spend=self.gross_spend - self.refunded,
            avg_ticket=self.gross_spend // self.sales if self.sales else None,
            first_purchase_ts=self.first_purchase_ts,
            last_purchase_ts=self.last_purchase_ts,
            stores=tuple(sorted(self.store_last_ts)),
            spend_30d=spend_30d,
            spend_90d=spend_90d,
            purchases_30d=purchases_30d,
            purchases_90d=purchases_90d,
            recency_days=recency,
            rfm=rfm,
            favourite_categories=_top(self.category_qty, TOP_CATEGORIES),
            favourite_categories_decayed=_top(self.decayed_qty(), TOP_CATEGORIES),
            preferred_payment=next(iter(_top(self.payment_uses, 1)), None),
            member_since_ts=self.member_since_ts,
            push_consent=self.consent[1] if self.consent is not None else False,
            birthday=self.details[1] if self.details is not None else None,
            tags=self.details[2] if self.details is not None else (),
            devices=sum(1 for _, bound in self.device_events.values() if bound),
            birthday_month=self._birthday_month(as_of),
            loyalty=self._accounts(loyalty, as_of),
        )

    def _accounts(self, loyalty: LoyaltyOf, as_of: int) -> tuple[LoyaltyAccount, ...]:
        self.loyalty.fold(loyalty, as_of)
        return self.loyalty.accounts(loyalty, as_of)

    def _birthday_month(self, ts: int) -> bool:
        """Whether the member's birthday in force has the month of ``ts`` (UTC)."""
        birthday = self.details[1] if self.details is not None else None
        return birthday is not None and int(birthday[:2]) == datetime.fromtimestamp(ts / 1000, UTC).month

    def decayed_qty(self) -> dict[str, float]:
        """Decayed quantity per category at ``as_of_ts`` over the remembered sales (400
        days): terms ``qty * 0.5 ** (age / 30 days)``, summed with ``math.fsum`` (exactly
        rounded, so the sum does not depend on the order of the sales)."""
        as_of = self.as_of_ts
        terms: dict[str, list[float]] = {}
        if as_of is None:
            return {}
        for sale in self.remembered.values():
            if sale.ts <= as_of - MEMORY_MS:
                continue
            weight = 0.5 ** ((as_of - sale.ts) / HALF_LIFE_MS)
            for item in sale.items:
                terms.setdefault(item.category, []).append(item.qty * weight)
        return {category: math.fsum(values) for category, values in terms.items()}

    # ---- the rules ------------------------------------------------------------------

    def _remembers(self, ts: int | None) -> bool:
        """Whether a transaction at ``ts`` is still in the 400-day memory (as of now,
        before the transaction being applied moves ``as_of_ts``)."""
        return ts is not None and self.as_of_ts is not None and ts > self.as_of_ts - MEMORY_MS

    def _sale(self, sale: Sale, now: int) -> None:
        self.loyalty.sale(sale.merchant_id, sale.ts, sale.txn_id, sale.amount, sale.points_redeemed)
        self.sales += 1
        self.gross_spend += sale.amount
        if self.first_purchase_ts is None or sale.ts < self.first_purchase_ts:
            self.first_purchase_ts = sale.ts
        if self.last_purchase_ts is None or sale.ts > self.last_purchase_ts:
            self.last_purchase_ts = sale.ts
        self._bought_at(sale.store_id, sale.ts)
        for item in sale.items:
            self.category_qty[item.category] = self.category_qty.get(item.category, 0) + item.qty
        if sale.payment:  # "" is a record from before payments were carried: unknown
            self.payment_uses[sale.payment] = self.payment_uses.get(sale.payment, 0) + 1
        if sale.ts > now - MEMORY_MS:
            self.remembered[sale.txn_id] = RememberedSale(sale.ts, sale.amount, tuple(sale.items), sale.merchant_id)
        self._add_to_window(sale.ts, sale.amount, 1, now)

    def _refund(self, refund: Sale, now: int) -> Applied:
        self.refunds += 1
        target = self.remembered.get(refund.ref_txn_id) if refund.ref_txn_id is not None else None
        if target is not None and self._remembers(target.ts):
            taken = min(refund.amount, target.left)
            target.left -= taken
            self.refunded += taken
            self._add_to_window(target.ts, -taken, 0, now)  # the sale's spend shrinks
            named = NamedSale(refund.ref_txn_id or "", target.ts, target.merchant_id, taken)
            self.loyalty.refund(refund.merchant_id, refund.ts, refund.txn_id, refund.amount, named)
            return Applied.REFUND_OF_SALE
        self.refunded += refund.amount
        self._add_to_window(refund.ts, -refund.amount, 0, now)
        self.loyalty.refund(refund.merchant_id, refund.ts, refund.txn_id, refund.amount)
        return Applied.REFUND_UNMATCHED

    def _bought_at(self, store_id: str, ts: int) -> None:
        """Keep the MAX_STORES stores most recently bought at (newest last purchase first,
        ties by store id). The rank a store drops out at only rises, so a late sale at a
        dropped store comes back only if it would rank in a batch recomputation too."""
        last = self.store_last_ts.get(store_id)
        if last is None or ts > last:
            self.store_last_ts[store_id] = ts
        if len(self.store_last_ts) > MAX_STORES:
            last_ts = self.store_last_ts
            del last_ts[max(last_ts, key=lambda s: (-last_ts[s], s))]

    def _add_to_window(self, ts: int, spend: int, purchases: int, now: int) -> None:
        if ts <= now - LONG_MS:
            return
        entry = self.window.get(ts)
        if entry is None:
            entry = self.window[ts] = WindowEntry()
        entry.spend += spend
        entry.purchases += purchases

    def _sweep(self, now: int) -> None:
        memory, window = now - MEMORY_MS, now - LONG_MS
        self.txn_ts = {t: ts for t, ts in self.txn_ts.items() if ts > memory}
        self.remembered = {t: s for t, s in self.remembered.items() if s.ts > memory}
        self.window = {ts: e for ts, e in self.window.items() if ts > window}
        self.recent = tuple(r for r in self.recent if r.ts > now - REPLAY_MS)
        self.swept_at = now


def rfm_score(recency_days: int, purchases_90d: int, spend_90d: int) -> str:
    """Three digits, recency, frequency, monetary, each 1 to 5, from fixed thresholds.

    >>> rfm_score(7, 10, 200_000), rfm_score(8, 9, 199_999), rfm_score(181, 1, -50)
    ('555', '444', '111')
    """
    r = next((score for bound, score in RECENCY_DAYS if recency_days <= bound), 1)
    f = next((score for bound, score in FREQUENCY if purchases_90d >= bound), 1)
    m = next((score for bound, score in MONETARY if spend_90d >= bound), 1)
    return f"{r}{f}{m}"


def _top(weights: dict[str, int] | dict[str, float], n: int) -> tuple[str, ...]:
    """The ``n`` names of highest positive weight, highest first, ties by name.

    >>> _top({"b": 2, "a": 2, "c": 5, "d": 1, "z": 0}, 3)
    ('c', 'a', 'b')
    """
    ranked = sorted((name for name, w in weights.items() if w > 0), key=lambda name: (-weights[name], name))
    return tuple(ranked[:n])
