"""The truth of member profiles: an independent batch recomputation, from docs/member-profiles.md.

The simulator knows every transaction it sent (``Truth.transactions``); this module turns
them into the profiles the engine must produce, for ``storepulse eval profiles`` and for
the tests.

Written from the contract's text with plain loops over whole lists, not from
``flows.profiles``: it keeps every transaction and decides each one by scanning what came
before it, where the engine keeps bounded incremental state. Use it as the expected side
of a test, for the member step alone or for the whole engine:

>>> from connectors.records import Sale
>>> from connectors.schemas import Item
>>> day = 86_400_000
>>> sales = [Sale(0, "T1", "S1", 900, False, "M1", 0, payment="cash", items=[Item("k", "tea", 3, 300)]),
...          Sale(day, "R1", "S1", 2000, True, "M1", 1, ref_txn_id="T1"),
...          Sale(0, "T1", "S1", 900, False, "M1", 0)]
>>> p = member_profiles(sales)["M1"]
>>> p.refunded, p.net_spend, p.duplicates, p.rfm, p.preferred_payment
(900, 0, 1, '511', 'cash')

The list is the arrival order, as the engine sees each member's transactions; what
depends on it is the contract's "Arrival order" section: a refund is matched only to a
sale that arrived before it, the 400-day memory is measured from the member's
``as_of_ts`` before each transaction, and of two records with one txn_id the first wins.

Member events (``MemberChange``, from ``changes_of``) go in the same list: the contract's
"Member events". An erase at E is an event-time rule, whenever it arrives: a record with
``ts`` <= the member's newest erase ts is dropped, before or after the erase; the records
newer than it count, in their arrival order, as for a member never seen before them (an
erase older than 8 days before what was kept forgets all of it: ``_kept``).
``arrival_order`` merges the two topics as the contract's
"Order" says (each in send order, by ts, a member event first on a tie):

>>> events = [MemberChange(0, "M1", "consent", 0, push=True),
...           MemberChange(day, "M1", "erase", 0), MemberChange(day + 5, "M1", "signup", 0)]
>>> records = arrival_order(sales, events)
>>> [type(r).__name__ for r in records]
['MemberChange', 'Sale', 'MemberChange', 'Sale', 'Sale', 'MemberChange']
>>> p = member_profiles(records)["M1"]  # all but the sign-up are at or before the erase
>>> p.sales, p.refunds, p.duplicates, p.push_consent, p.member_since_ts == day + 5, erasures(records)
(0, 0, 0, False, True, 1)

Loyalty (the contract's "Loyalty"): ``member_profiles(records, programmes)`` with each
merchant's programme (``programmes_of(catalog)``) adds ``loyalty``, one account per
merchant with a programme and an entry, computed by ``loyalty_accounts``. It is an
event-time replay: of the arrival-order pass it takes only what the contract decides at
arrival (which transactions are applied; for a refund, whether it names a remembered sale,
and ``r``); then each account's entries are sorted by (t, kind, txn_id), a refund of a
named sale at ``max(its ts, the sale's ts)`` and in the account of the *sale's* merchant,
and replayed, the birthday of each sale being that of the newest profile event with ``ts``
<= its ``t``. ``birthday_month`` is set with or without programmes.

Not modelled: the contract's 400-day memory of entries (folding into a settled state). The
scenarios this truth is used on (members-month: 30 days) span less than 400 days, where
no entry can leave the memory, so the replay of every kept entry is exact; with
programmes, ``member_profiles`` and ``loyalty_steps`` raise ValueError on records that
span 400 days or more.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import msgspec

from connectors.catalog import Catalog, Level, Loyalty
from connectors.privacy import DeviceHasher
from connectors.records import MemberChange, Sale
from connectors.schemas import Item, LoyaltyAccount, MemberProfile

DAY = 86_400_000


@dataclass
class Decided:
    """One applied transaction and what the rules made of it."""

    txn: Sale
    kind: str  # "sale", "zero_sale", "refund_of_sale" or "refund_unmatched"
    money: int  # a sale's amount; a refund's r (rule 4) or amount (rule 5)
    window_ts: int  # where the money counts in the windows
    of_sale: int | None = None  # index of the sale a rule-4 refund names


@dataclass
class History:
    applied: list[Decided]
    duplicates: int
    as_of: int
    events: list[MemberChange]  # member events kept (newer than the erase), in arrival order


def _with_events(p: MemberProfile, events: list[MemberChange]) -> MemberProfile:
    """The member-event fields, each decided by scanning all of the member's events."""
    signups = [e.ts for e in events if e.kind == "signup"]
    consent = False
    consent_ts = None
    birthday: str | None = None
    tags: tuple[str, ...] = ()
    details_ts = None
    newest_binding: dict[int, MemberChange] = {}
    for e in events:  # a later arrival with the same ts wins: >=
        if e.kind == "consent" and (consent_ts is None or e.ts >= consent_ts):
            consent, consent_ts = bool(e.push), e.ts
        if e.kind == "profile" and (details_ts is None or e.ts >= details_ts):
            birthday, tags, details_ts = e.birthday, tuple(sorted(set(e.tags))), e.ts
        if e.kind in ("bind_device", "unbind_device"):
            assert e.device is not None
            if e.device not in newest_binding or e.ts >= newest_binding[e.device].ts:
                newest_binding[e.device] = e
    kept = sorted(newest_binding, key=lambda d: (-newest_binding[d].ts, d))[:20]
    return msgspec.structs.replace(
        p,
        member_since_ts=min(signups) if signups else None,
        push_consent=consent,
        birthday=birthday,
        tags=tags,
        devices=len([d for d in kept if newest_binding[d].kind == "bind_device"]),
    )


def member_profiles(
    records: Iterable[Sale | MemberChange], programmes: Mapping[str, Loyalty] | None = None
) -> dict[str, MemberProfile]:
    """Each member's profile after all ``records`` (transactions and member events, in
    arrival order); a member with no record after its erase (by ``ts``) has none.
    ``programmes``: each merchant's loyalty programme (``programmes_of(catalog)``); None or
    a merchant left out: no programme, no account (the contract's "Loyalty"). With
    programmes, ``records`` must span less than 400 days (``_check_span``: the loyalty
    truth does not model the 400-day memory), else ValueError."""
    records = list(records)
    if programmes:
        _check_span(records)
    out = {}
    for member, h in _histories(records).items():
        p = _with_events(_profile(member, h), h.events)
        out[member] = msgspec.structs.replace(
            p,
            birthday_month=p.birthday is not None and int(p.birthday[:2]) == _utc_month(h.as_of),
            loyalty=loyalty_accounts(h, programmes or {}),
        )
    return out


def programmes_of(catalog: Catalog) -> dict[str, Loyalty]:
    """The catalog's loyalty programmes by merchant id (merchants without one left out)."""
    return {m.merchant_id: m.loyalty for m in catalog.merchants if m.loyalty is not None}


def decayed_quantities(records: Iterable[Sale | MemberChange]) -> dict[str, dict[str, float]]:
    """Each member's decayed quantity per category at its ``as_of_ts``."""
    return {member: _decayed(h) for member, h in _histories(records).items()}


def erasures(records: Iterable[Sale | MemberChange]) -> int:
    """How many erase events there are among ``records``."""
    return len([r for r in records if isinstance(r, MemberChange) and r.kind == "erase"])


def arrival_order(transactions: list[Sale], changes: list[MemberChange]) -> list[Sale | MemberChange]:
    """One list from the two topics: each kept in its own (send) order, merged by ``ts``, a
    member event before a transaction of the same ``ts``."""
    out: list[Sale | MemberChange] = []
    i = j = 0
    while i < len(transactions) or j < len(changes):
        if j < len(changes) and (i == len(transactions) or changes[j].ts <= transactions[i].ts):
            out.append(changes[j])
            j += 1
        else:
            out.append(transactions[i])
            i += 1
    return out


def _kept(records: Iterable[Sale | MemberChange]) -> dict[str, list[Sale | MemberChange]]:
    """Each member's records that count, in arrival order: the contract's erase rule.

    E is the member's newest erase ts; a record with ``ts`` <= E is dropped, whenever it
    arrives. An erase newer than E cuts what is kept to the records with a larger ``ts``;
    if it is older than ``as_of_ts - 8 days`` (of what is kept before it), nothing is kept
    and E becomes that ``as_of_ts``.
    """
    kept: dict[str, list[Sale | MemberChange]] = {}
    newest_erase: dict[str, int] = {}
    for record in records:
        member = record.member_id
        if member is None:  # a transaction without a member makes no profile
            continue
        e = newest_erase.get(member)
        if isinstance(record, MemberChange) and record.kind == "erase":
            if e is not None and record.ts <= e:
                continue
            mine = kept.get(member, [])
            as_of = _history(mine).as_of if mine else None
            if as_of is not None and record.ts < as_of - 8 * DAY:
                newest_erase[member], kept[member] = as_of, []
            else:
                newest_erase[member] = record.ts
                kept[member] = [r for r in mine if r.ts > record.ts]
        elif e is None or record.ts > e:
            kept.setdefault(member, []).append(record)
    return kept


def _histories(records: Iterable[Sale | MemberChange]) -> dict[str, History]:
    return {member: _history(mine) for member, mine in _kept(records).items() if mine}


def _history(everything: list[Sale | MemberChange]) -> History:
    """One member's kept records, in arrival order, decided one by one."""
    applied: list[Decided] = []
    duplicates = 0
    as_of: int | None = None
    events: list[MemberChange] = []
    for t in everything:
        if isinstance(t, MemberChange):
            events.append(t)
            as_of = t.ts if as_of is None else max(as_of, t.ts)
            continue
        # Remembered: applied before this one, ts within 400 days of the as_of before it.
        remembered = [i for i, d in enumerate(applied) if as_of is not None and d.txn.ts > as_of - 400 * DAY]
        if any(applied[i].txn.txn_id == t.txn_id for i in remembered):
            duplicates += 1
            continue
        if not t.refund and t.amount == 0:
            decided = Decided(t, "zero_sale", 0, t.ts)
        elif not t.refund:
            decided = Decided(t, "sale", t.amount, t.ts)
        else:
            named = [
                i
                for i in remembered
                if applied[i].kind == "sale" and t.ref_txn_id is not None and applied[i].txn.txn_id == t.ref_txn_id
            ]
            if named:
                sale_index = named[0]
                sale = applied[sale_index].txn
                earlier = 0
                for d in applied:
                    if d.kind == "refund_of_sale" and d.of_sale == sale_index:
                        earlier += d.money
                r = min(t.amount, sale.amount - earlier)
                decided = Decided(t, "refund_of_sale", r, sale.ts, sale_index)
            else:
                decided = Decided(t, "refund_unmatched", t.amount, t.ts)
        applied.append(decided)
        as_of = t.ts if as_of is None else max(as_of, t.ts)
    assert as_of is not None  # the first record of a member is never a duplicate
    return History(applied, duplicates, as_of, events)


def _decayed(h: History) -> dict[str, float]:
    terms: dict[str, list[float]] = {}
    for d in h.applied:
        if d.kind == "sale" and d.txn.ts > h.as_of - 400 * DAY:  # the remembered sales
            for item in d.txn.items:
                terms.setdefault(item.category, []).append(item.qty * 0.5 ** ((h.as_of - d.txn.ts) / (30 * DAY)))
    return {category: math.fsum(values) for category, values in terms.items()}


def _ranked(weights: dict[str, int] | dict[str, float], n: int) -> tuple[str, ...]:
    names = [name for name in weights if weights[name] > 0]
    names.sort(key=lambda name: (-weights[name], name))
    return tuple(names[:n])


def _profile(member: str, h: History) -> MemberProfile:
    as_of = h.as_of
    sales = [d.txn for d in h.applied if d.kind == "sale"]
    refunds = [d for d in h.applied if d.kind in ("refund_of_sale", "refund_unmatched")]
    zero_sales = [d for d in h.applied if d.kind == "zero_sale"]

    def spend(days: int) -> int:
        total = 0
        for s in sales:
            if s.ts > as_of - days * DAY:
                total += s.amount
        for d in refunds:
            if d.window_ts > as_of - days * DAY:
                total -= d.money
        return total

    def purchases(days: int) -> int:
        return len([s for s in sales if s.ts > as_of - days * DAY])

    last_at: dict[str, int] = {}
    qty: dict[str, int] = {}
    payments: dict[str, int] = {}
    for s in sales:
        last_at[s.store_id] = max(last_at.get(s.store_id, s.ts), s.ts)
        for item in s.items:
            qty[item.category] = qty.get(item.category, 0) + item.qty
        if s.payment != "":
            payments[s.payment] = payments.get(s.payment, 0) + 1
    newest_stores = sorted(last_at, key=lambda store: (-last_at[store], store))[:100]

    gross = sum(s.amount for s in sales)
    refunded = sum(d.money for d in refunds)
    recency = rfm = first = last = None
    if sales:
        first = min(s.ts for s in sales)
        last = max(s.ts for s in sales)
        recency = (as_of - last) // DAY
        if recency <= 7:
            r = 5
        elif recency <= 30:
            r = 4
        elif recency <= 90:
            r = 3
        elif recency <= 180:
            r = 2
        else:
            r = 1
        n = purchases(90)
        f = 5 if n >= 10 else 4 if n >= 5 else 3 if n >= 3 else 2 if n >= 2 else 1
        m90 = spend(90)
        m = 5 if m90 >= 200_000 else 4 if m90 >= 50_000 else 3 if m90 >= 20_000 else 2 if m90 >= 5_000 else 1
        rfm = f"{r}{f}{m}"
    preferred = _ranked(payments, 1)
    return MemberProfile(
        member_id=member,
        as_of_ts=as_of,
        sales=len(sales),
        refunds=len(refunds),
        zero_sales=len(zero_sales),
        duplicates=h.duplicates,
        gross_spend=gross,
        refunded=refunded,
        net_spend=gross - refunded,
        avg_ticket=gross // len(sales) if sales else None,
        first_purchase_ts=first,
        last_purchase_ts=last,
        stores=tuple(sorted(newest_stores)),
        spend_30d=spend(30),
        spend_90d=spend(90),
        purchases_30d=purchases(30),
        purchases_90d=purchases(90),
        recency_days=recency,
        rfm=rfm,
        favourite_categories=_ranked(qty, 3),
        favourite_categories_decayed=_ranked(_decayed(h), 3),
        preferred_payment=preferred[0] if preferred else None,
    )


def _utc_month(ts: int) -> int:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ts)).month


def _level(levels: list[Level], i: int, q: int) -> int:
    """The contract's ``level(i, q)``: up while the next level's ``upgrade_at`` is reached,
    then down while below the current one's ``downgrade_below``."""
    while i + 1 < len(levels) and q >= levels[i + 1].upgrade_at:
        i += 1
    while i > 0 and q < levels[i].downgrade_below:
        i -= 1
    return i


def _lapsed(p: Loyalty, last_purchase_ts: int | None, t: int) -> bool:
    return p.expiry_days > 0 and last_purchase_ts is not None and t - last_purchase_ts > p.expiry_days * DAY


def _birthday_at(events: list[MemberChange], t: int) -> str | None:
    """The contract's "birthday at t": that of the profile event with the largest ``ts <=
    t`` (equal ts: the later arrival, ``events`` being in arrival order), None if none."""
    birthday: str | None = None
    newest: int | None = None
    for e in events:
        if e.kind == "profile" and e.ts <= t and (newest is None or e.ts >= newest):
            birthday, newest = e.birthday, e.ts
    return birthday


def _check_span(records: list[Sale | MemberChange]) -> None:
    """The truth leaves out the contract's 400-day memory of loyalty entries (entries
    folded into a settled state): it is exact only when no entry can have left it, which
    holds when all ``records`` lie within less than 400 days."""
    stamps = [r.ts for r in records]
    if stamps and max(stamps) - min(stamps) >= 400 * DAY:
        raise ValueError(
            f"records span {(max(stamps) - min(stamps)) / DAY:.1f} days: the loyalty truth does not "
            "model the 400-day memory (settled state), so it needs a span of less than 400 days"
        )


class _Entry(NamedTuple):
    """One entry of an account; its fields in order are the contract's replay order
    ("Entries", "Replay order": t, kind, txn_id), so entries sort as tuples."""

    t: int  # its ts; a refund of a named sale: max(its ts, the sale's ts)
    rank: int  # 0 a sale or zero sale, 1 a refund
    txn_id: str
    applied_at: int  # its position in History.applied (txn ids are unique among them)


@dataclass
class _Kept:
    """A replayed sale, for the refunds of it: what it earned and paid, and of its amount
    what is left to refund."""

    earned: int
    paid: int
    amount: int
    left: int


def _entries(h: History) -> dict[str, list[_Entry]]:
    """Each merchant's entries, in replay order: every applied transaction with a
    ``merchant_id``, a refund of a named sale in the account of that *sale's* merchant."""
    out: dict[str, list[_Entry]] = {}
    for k, d in enumerate(h.applied):
        if d.kind == "refund_of_sale":
            assert d.of_sale is not None
            sale = h.applied[d.of_sale].txn
            merchant, entry = sale.merchant_id, _Entry(max(d.txn.ts, sale.ts), 1, d.txn.txn_id, k)
        else:
            merchant = d.txn.merchant_id
            entry = _Entry(d.txn.ts, 1 if d.kind == "refund_unmatched" else 0, d.txn.txn_id, k)
        if merchant:
            out.setdefault(merchant, []).append(entry)
    for entries in out.values():
        entries.sort()
    return out


@dataclass(frozen=True)
class LoyaltyStep:
    """What the replay did with one entry (for tests and evaluation reports): its ``t``,
    the level index before rule 1, after rule 1 and after rule 5, the points expired by
    rule 2, the birthday percentage ``b`` a sale earned at (100 otherwise), and the points
    earned, taken back and returned."""

    member_id: str
    merchant_id: str
    txn_id: str
    kind: str  # as Decided.kind
    t: int
    level_start: int
    level_before: int
    level_after: int
    expired: int
    birthday_pct: int
    earned: int
    points_redeemed: int
    taken_back: int
    returned: int


def loyalty_steps(records: Iterable[Sale | MemberChange], programmes: Mapping[str, Loyalty]) -> list[LoyaltyStep]:
    """Every entry the loyalty replay applied: member by member (by id), account by
    account (by merchant id), each in replay order."""
    records = list(records)
    _check_span(records)
    steps: list[LoyaltyStep] = []
    histories = _histories(records)
    for member in sorted(histories):
        loyalty_accounts(histories[member], programmes, steps)
    return steps


def loyalty_accounts(
    h: History, programmes: Mapping[str, Loyalty], steps: list[LoyaltyStep] | None = None
) -> tuple[LoyaltyAccount, ...]:
    """The member's loyalty accounts as of ``h.as_of`` (the contract's "Loyalty"), by
    merchant_id: each account's entries replayed in event-time order through rules 1 to 5,
    then shown at ``as_of``. Which transactions are applied, and each refund's verdict and
    ``r``, are the arrival-order decisions of ``_history``; nothing else here depends on the
    arrival order (but a profile event's, among equal ``ts``). ``steps``, if given, gets
    one ``LoyaltyStep`` per entry replayed. The 400-day memory is not modelled (see
    ``_check_span``).

    >>> day = 86_400_000
    >>> p = {"X": Loyalty(points_per_unit=2, expiry_days=7, levels=[Level(name="a", upgrade_at=0),
    ...       Level(name="b", upgrade_at=1000, downgrade_below=500, multiplier_pct=150)])}
    >>> h = _history([Sale(day, "T2", "S1", 1000, False, "U1", 0, "X"), Sale(0, "T1", "S1", 1200, False, "U1", 0, "X"),
    ...               Sale(9 * day, "T3", "S1", 1, False, "U1", 0, "Y")])
    >>> [(a.level, a.points, a.earned, a.expired) for a in loyalty_accounts(h, p)]  # T1 24, T2 30; lapsed at day 9
    [('b', 0, 54, 54)]
    """
    out = []
    entries_of = _entries(h)
    for merchant in sorted(entries_of):
        p = programmes.get(merchant)
        if p is None:
            continue
        levels = p.levels
        attributed: list[tuple[int, int]] = []  # (ts, +amount / -r / -amount) replayed so far

        def q(t: int, attributed: list[tuple[int, int]] = attributed, days: int = p.qualify_days) -> int:
            return sum(money for ts, money in attributed if t - days * DAY < ts <= t)

        i = points = earned = redeemed = taken_back = returned = expired = 0
        last_purchase_ts: int | None = None
        kept: dict[int, _Kept] = {}  # a replayed sale's index in h.applied -> what its refunds need
        for e in entries_of[merchant]:
            d = h.applied[e.applied_at]
            t = d.txn
            start = i
            i = _level(levels, i, q(e.t))  # 1. level before
            before, gone, b, here, back, given = i, 0, 100, 0, 0, 0
            if d.kind == "sale":  # 2.
                if _lapsed(p, last_purchase_ts, e.t) and points > 0:
                    gone, expired, points = points, expired + points, 0
                birthday = _birthday_at(h.events, e.t)
                if birthday is not None and int(birthday[:2]) == _utc_month(e.t):
                    b = p.birthday_multiplier_pct
                here = t.amount * p.points_per_unit * levels[i].multiplier_pct * b // (p.unit_minor * 100 * 100)
                earned += here
                redeemed += t.points_redeemed
                points += here - t.points_redeemed
                kept[e.applied_at] = _Kept(here, t.points_redeemed, t.amount, t.amount)
                last_purchase_ts = t.ts if last_purchase_ts is None else max(last_purchase_ts, t.ts)
                attributed.append((t.ts, t.amount))
            elif d.kind == "zero_sale":  # 2., a reward paid for with points
                redeemed += t.points_redeemed
                points -= t.points_redeemed
            elif d.kind == "refund_of_sale":  # 3., in the sale's account, after the sale
                assert d.of_sale is not None and d.of_sale in kept, "a refund replayed before its sale"
                sale = kept[d.of_sale]
                left, amount = sale.left, sale.amount
                back = sale.earned * left // amount - sale.earned * (left - d.money) // amount
                given = sale.paid * left // amount - sale.paid * (left - d.money) // amount
                sale.left = left - d.money
                taken_back += back
                returned += given
                points += given - back
                attributed.append((d.window_ts, -d.money))  # the sale's ts
            else:  # 4. refund_unmatched, at the base rate
                back = t.amount * p.points_per_unit // p.unit_minor
                taken_back += back
                points -= back
                attributed.append((t.ts, -t.amount))
            i = _level(levels, i, q(e.t))  # 5. level after
            if steps is not None:
                steps.append(
                    LoyaltyStep(
                        t.member_id or "",
                        merchant,
                        t.txn_id,
                        d.kind,
                        e.t,
                        start,
                        before,
                        i,
                        gone,
                        b,
                        here,
                        t.points_redeemed,
                        back,
                        given,
                    )
                )
        shown = q(h.as_of)
        if _lapsed(p, last_purchase_ts, h.as_of) and points > 0:
            points, expired = 0, expired + points
        out.append(
            LoyaltyAccount(
                merchant_id=merchant,
                level=levels[_level(levels, i, shown)].name,
                points=points,
                earned=earned,
                redeemed=redeemed,
                taken_back=taken_back,
                returned=returned,
                expired=expired,
                qualifying_spend=shown,
            )
        )
    return tuple(out)


def sales_of(values: Iterable[bytes]) -> list[Sale]:
    """The member transactions among ``pos.transactions`` values, as plain ``Sale`` records,
    in the order given (parsed with ``json``, not the engine's decoder; every value the
    simulator sends as valid is valid, so nothing is checked here but the member).

    >>> v = b'{"type": "refund", "txn_id": "R1", "ts": 5, "merchant_id": "X", "store_id": "S1", ' \\
    ...     b'"amount": 300, "currency": "CNY", "payment": "cash", "member_id": "U1", "ref_txn_id": "T1"}'
    >>> [(s.txn_id, s.refund, s.amount, s.ref_txn_id) for s in sales_of([v, b'{"member_id": null}'])]
    [('R1', True, 300, 'T1')]
    """
    out = []
    for value in values:
        doc = json.loads(value)
        if doc.get("member_id") is None:
            continue
        out.append(
            Sale(
                ts=doc["ts"],
                txn_id=doc["txn_id"],
                store_id=doc["store_id"],
                amount=doc["amount"],
                refund=doc["type"] == "refund",
                member_id=doc["member_id"],
                offset=0,
                merchant_id=doc["merchant_id"],
                payment=doc["payment"],
                ref_txn_id=doc.get("ref_txn_id"),
                items=[Item(i["sku"], i["category"], i["qty"], i["unit_price"]) for i in doc.get("items") or []],
                points_redeemed=doc.get("points_redeemed", 0),
            )
        )
    return out


def changes_of(values: Iterable[bytes], hasher: DeviceHasher) -> list[MemberChange]:
    """The ``members.events`` values as ``MemberChange`` records, in the order given (plain
    ``json``, not the engine's decoder): a bound MAC becomes ``hasher.device(mac, ts)``, as
    probes do; a birthday ``YYYY-MM-DD`` becomes ``MM-DD``; tags are sorted and unique.

    >>> v = b'{"type": "profile", "member_id": "U1", "ts": 5, "birthday": "1990-02-03", "tags": ["b", "a", "b"]}'
    >>> c = changes_of([v, b'{"type": "erase", "member_id": "U1", "ts": 9}'], DeviceHasher(b"k"))
    >>> [(x.kind, x.birthday, x.tags) for x in c]
    [('profile', '02-03', ['a', 'b']), ('erase', None, [])]
    """
    out = []
    for value in values:
        doc = json.loads(value)
        birthday = doc.get("birthday")
        mac = doc.get("mac")
        out.append(
            MemberChange(
                ts=doc["ts"],
                member_id=doc["member_id"],
                kind=doc["type"],
                offset=0,
                store_id=doc.get("store_id"),
                device=hasher.device(mac, doc["ts"]) if mac is not None else None,
                push=doc.get("push"),
                birthday=birthday[5:] if birthday is not None else None,
                tags=sorted(set(doc.get("tags") or [])),
            )
        )
    return out
