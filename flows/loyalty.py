"""One member's loyalty points and levels, per merchant, by event time (the "Loyalty"
section of docs/member-profiles.md, followed exactly). Pure: no clock, no I/O.

``LoyaltyBook`` keeps what the rules need: each merchant's entries (the member's applied
transactions there) and the member's birthdays. An account is not updated as records
arrive: it is replayed from the entries in event-time order when the profile is made, so
the result does not depend on how the input topics and partitions interleave.

>>> from connectors.catalog import Level, Loyalty
>>> gold = Loyalty(levels=[Level(name="member", upgrade_at=0),
...                        Level(name="gold", upgrade_at=50_000, downgrade_below=30_000, multiplier_pct=200)])
>>> book = LoyaltyBook()
>>> book.sale("X", DAY_MS * 2, "T2", 10_000, 0)   # arrives first, but is replayed second
>>> book.sale("X", DAY_MS, "T1", 60_000, 100)     # 600 points at member, pays 100: gold after
>>> book.refund("X", DAY_MS * 3, "R1", 5_000, NamedSale("T2", DAY_MS * 2, "X", 5_000))  # half of T2 back
>>> [acc] = book.accounts({"X": gold}.get, DAY_MS * 3)
>>> acc.level, acc.earned, acc.redeemed, acc.taken_back, acc.points, acc.qualifying_spend
('gold', 800, 100, 100, 600, 65000)

T2 earned 200 at gold (10,000 fen at 1 point per 100, doubled); the refund of half of it
takes back 100.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import NamedTuple

from connectors.catalog import Loyalty
from connectors.schemas import LoyaltyAccount

DAY_MS = 86_400_000
MEMORY_MS = 400 * DAY_MS  # entries kept; older ones are folded into the settled state

LoyaltyOf = Callable[[str], Loyalty | None]
"""A merchant's points programme now (``Catalog.loyalty``), None for none."""


def no_loyalty(merchant_id: str) -> None:
    """No merchant has a points programme."""
    return None

SALE, REFUND = 0, 1  # entry kinds, in replay order at equal t (a zero sale is a SALE)


class Entry(NamedTuple):
    """One applied transaction of the member at a merchant, sorted in replay order.

    ``t`` is the replay time (a refund of a named sale: not before that sale); ``target``
    is the named sale's txn id and ``r`` the amount refunded of it (decided at arrival by
    the ledger's rule 4); ``attributed_ts`` is where the spend counts (``ts``, or the
    named sale's ts)."""

    t: int
    kind: int
    txn_id: str
    ts: int
    amount: int
    redeemed: int
    target: str | None
    r: int
    attributed_ts: int


class NamedSale(NamedTuple):
    """The remembered sale a refund names (rule 4 of the transactions): its txn id, ts and
    merchant, and how much of it the refund refunded (``r``, decided at arrival)."""

    txn_id: str
    ts: int
    merchant_id: str
    refunded: int


@dataclass(slots=True)
class Account:
    """An account's state during a replay: the level index, the totals, the newest
    purchase ts, the spend contributions (attributed ts, net) that can still count, and
    the sales a refund can name (txn id -> [earned, redeemed, amount, left, ts])."""

    level: int = 0
    points: int = 0
    earned: int = 0
    redeemed: int = 0
    taken_back: int = 0
    returned: int = 0
    expired: int = 0
    last_purchase_ts: int | None = None
    spend: list[tuple[int, int]] = field(default_factory=list)
    sales: dict[str, list[int]] = field(default_factory=dict)

    def copy(self) -> Account:
        return replace(self, spend=list(self.spend), sales={k: list(v) for k, v in self.sales.items()})


class Qualifying:
    """``Q(t)``: the spend contributions added so far with an attributed ts in
    ``(t - qualify_days, t]``, for non-decreasing ``t`` (a heap of what may still count)."""

    def __init__(self, program: Loyalty, contributions: Iterable[tuple[int, int]]) -> None:
        self.span = program.qualify_days * DAY_MS
        self.heap = list(contributions)
        heapq.heapify(self.heap)
        self.total = sum(net for _, net in self.heap)

    def add(self, ts: int, net: int) -> None:
        heapq.heappush(self.heap, (ts, net))
        self.total += net

    def at(self, t: int) -> int:
        while self.heap and self.heap[0][0] <= t - self.span:
            self.total -= heapq.heappop(self.heap)[1]
        return self.total


def level(program: Loyalty, i: int, q: int) -> int:
    """``level(i, q)``: up while the next level's ``upgrade_at`` is reached, then down
    while below the level's ``downgrade_below`` (an index beyond the levels: the top).

    >>> from connectors.catalog import Level
    >>> p = Loyalty(levels=[Level(name="a", upgrade_at=0), Level(name="b", upgrade_at=100, downgrade_below=50)])
    >>> level(p, 0, 99), level(p, 0, 100), level(p, 1, 50), level(p, 1, 49), level(p, 7, 60)
    (0, 1, 1, 0, 1)
    """
    levels = program.levels
    i = min(i, len(levels) - 1)
    while i + 1 < len(levels) and q >= levels[i + 1].upgrade_at:
        i += 1
    while i > 0 and q < levels[i].downgrade_below:
        i -= 1
    return i


def _month(ts: int) -> int:
    return datetime.fromtimestamp(ts / 1000, UTC).month


def _lapsed(program: Loyalty, account: Account, t: int) -> bool:
    last = account.last_purchase_ts
    return program.expiry_days > 0 and last is not None and t - last > program.expiry_days * DAY_MS


def replay(
    program: Loyalty, start: Account, entries: Iterable[Entry], birthday_at: Callable[[int], str | None]
) -> tuple[Account, Qualifying]:
    """Rules 1 to 5 over ``entries`` (in replay order) from ``start`` (not changed)."""
    account = start.copy()
    q = Qualifying(program, account.spend)
    for e in entries:
        t = e.t
        account.level = level(program, account.level, q.at(t))  # rule 1
        if e.kind == SALE and e.amount > 0:  # rule 2
            if account.points > 0 and _lapsed(program, account, t):
                account.expired += account.points
                account.points = 0
            birthday = birthday_at(t)
            bonus = program.birthday_multiplier_pct if birthday is not None and int(birthday[:2]) == _month(t) else 100
            rate = program.levels[account.level].multiplier_pct
            earned = e.amount * program.points_per_unit * rate * bonus // (program.unit_minor * 100 * 100)
            account.earned += earned
            account.redeemed += e.redeemed
            account.points += earned - e.redeemed
            account.sales[e.txn_id] = [earned, e.redeemed, e.amount, e.amount, e.ts]
            if account.last_purchase_ts is None or e.ts > account.last_purchase_ts:
                account.last_purchase_ts = e.ts
            _contribute(account, q, e.ts, e.amount)
        elif e.kind == SALE:  # a zero sale: a reward paid for wholly with points
            account.redeemed += e.redeemed
            account.points -= e.redeemed
        elif e.target is not None:  # rule 3
            sale = account.sales.get(e.target)
            if sale is not None:  # else the sale was forgotten (800 days): nothing to take back
                earned, redeemed, amount, left, _ = sale
                back = earned * left // amount - earned * (left - e.r) // amount
                given = redeemed * left // amount - redeemed * (left - e.r) // amount
                sale[3] = left - e.r
                account.taken_back += back
                account.returned += given
                account.points += given - back
            _contribute(account, q, e.attributed_ts, -e.r)
        else:  # rule 4
            back = e.amount * program.points_per_unit // program.unit_minor
            account.taken_back += back
            account.points -= back
            _contribute(account, q, e.ts, -e.amount)
        account.level = level(program, account.level, q.at(t))  # rule 5
    return account, q


def _contribute(account: Account, q: Qualifying, ts: int, net: int) -> None:
    account.spend.append((ts, net))
    q.add(ts, net)


def view(merchant_id: str, program: Loyalty, account: Account, q: Qualifying, as_of: int) -> LoyaltyAccount:
    """The account as of ``as_of``: its level and lapse then (not stored)."""
    points, expired = account.points, account.expired
    if points > 0 and _lapsed(program, account, as_of):
        points, expired = 0, expired + points
    qualifying = q.at(as_of)
    return LoyaltyAccount(
        merchant_id=merchant_id,
        level=program.levels[level(program, account.level, qualifying)].name,
        points=points,
        earned=account.earned,
        redeemed=account.redeemed,
        taken_back=account.taken_back,
        returned=account.returned,
        expired=expired,
        qualifying_spend=qualifying,
    )


@dataclass
class LoyaltyBook:
    """A member's entries per merchant (replay order), settled accounts, and birthdays.

    ``birthdays``: (ts, arrival number, birthday) of the member's profile events, sorted;
    in force at ``t``: the last with ts <= t (equal ts: the later arrival)."""

    entries: dict[str, list[Entry]] = field(default_factory=dict)
    settled: dict[str, Account] = field(default_factory=dict)
    birthdays: list[tuple[int, int, str | None]] = field(default_factory=list)
    arrivals: int = 0

    def sale(self, merchant_id: str, ts: int, txn_id: str, amount: int, redeemed: int) -> None:
        """A sale or zero sale the ledger applied."""
        self._add(merchant_id, Entry(ts, SALE, txn_id, ts, amount, redeemed, None, 0, ts))

    def refund(self, merchant_id: str, ts: int, txn_id: str, amount: int, named: NamedSale | None = None) -> None:
        """A refund the ledger applied: of the remembered sale ``named`` (replayed in that
        sale's account), or unmatched (None)."""
        if named is None:
            self._add(merchant_id, Entry(ts, REFUND, txn_id, ts, amount, 0, None, 0, ts))
            return
        entry = Entry(max(ts, named.ts), REFUND, txn_id, ts, amount, 0, named.txn_id, named.refunded, named.ts)
        self._add(named.merchant_id, entry)

    def profile_event(self, ts: int, birthday: str | None) -> None:
        self.arrivals += 1
        bisect.insort(self.birthdays, (ts, self.arrivals, birthday))

    def birthday_at(self, t: int) -> str | None:
        i = bisect.bisect_right(self.birthdays, (t, self.arrivals + 1))
        return self.birthdays[i - 1][2] if i else None

    def _add(self, merchant_id: str, entry: Entry) -> None:
        bisect.insort(self.entries.setdefault(merchant_id, []), entry)

    def accounts(self, loyalty: LoyaltyOf, as_of: int) -> tuple[LoyaltyAccount, ...]:
        """Every account with a programme now, replayed, as of ``as_of``, by merchant id."""
        out = []
        for merchant_id in sorted(self.entries.keys() | self.settled.keys()):
            program = loyalty(merchant_id)
            if program is None:
                continue
            start = self.settled.get(merchant_id) or Account()
            account, q = replay(program, start, self.entries.get(merchant_id, ()), self.birthday_at)
            out.append(view(merchant_id, program, account, q, as_of))
        return tuple(out)

    def fold(self, loyalty: LoyaltyOf, now: int) -> None:
        """Fold the entries with ``t <= now - 400 days`` into each settled account (the
        replay's state after them; a merchant without a programme now: dropped), and
        forget the birthdays and sales no replay needs any more."""
        horizon = now - MEMORY_MS
        for merchant_id, entries in list(self.entries.items()):
            cut = bisect.bisect_right(entries, (horizon, REFUND + 1))
            if not cut:
                continue
            program = loyalty(merchant_id)
            if program is not None:
                start = self.settled.get(merchant_id) or Account()
                account, _ = replay(program, start, entries[:cut], self.birthday_at)
                # What replays from the settled state can still need: contributions a
                # qualifying window (<= 400 days) of a later entry can reach, and sales a
                # refund still in memory can name (they were remembered when it arrived).
                account.spend = [(ts, net) for ts, net in account.spend if ts > horizon - MEMORY_MS]
                account.sales = {t: s for t, s in account.sales.items() if s[4] > horizon - MEMORY_MS}
                self.settled[merchant_id] = account
            del entries[:cut]
            if not entries:
                del self.entries[merchant_id]
        older = bisect.bisect_right(self.birthdays, (horizon, self.arrivals + 1))
        del self.birthdays[: max(0, older - 1)]  # keep the newest one at or before the horizon
