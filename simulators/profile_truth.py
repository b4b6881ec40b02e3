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
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from connectors.privacy import DeviceHasher
from connectors.records import MemberChange, Sale
from connectors.schemas import Item, MemberProfile

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


def member_profiles(records: Iterable[Sale | MemberChange]) -> dict[str, MemberProfile]:
    """Each member's profile after all ``records`` (transactions and member events, in
    arrival order); a member with no record after its erase (by ``ts``) has none."""
    out = {}
    for member, h in _histories(records).items():
        out[member] = _with_events(_profile(member, h), h.events)
    return out


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
