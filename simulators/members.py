"""Member events: signups, device bindings, push consent and profiles of member shoppers.

Reads the people of a site and their trips; writes nothing. Members who existed before
the scenario are sent as a block shortly after local midnight of the first day (as a
CRM sync would), in order signup, bind_device (if they carry a phone), consent, profile.
New members sign up during their first trip, inside the first shop they enter, and the
other three events follow within seconds. A few consenting members withdraw consent
during opening hours. Opt-in (``erase_share``, ``plan_erasures``): that share of the members
who bought something ask to be erased, at 03:00 local time 2 to 6 days before the last
scenario day, after at least one purchase; they may shop again afterwards. Guarantees:
every member event of a member comes after that member's signup; a bound MAC is the one
the phone joins WiFi with (its stable MAC, or a private per-network MAC for a phone that
randomises, which it never probes with); about 4% of members have their birthday on a
scenario day.

>>> ev = Consent(member_id="U0000001", ts=5, push=True)
>>> msgspec.json.encode(ev)
b'{"type":"consent","member_id":"U0000001","ts":5,"push":true}'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import msgspec
import numpy as np

from connectors.schemas import BindDevice, Consent, Erase, MemberEvent, Profile, Signup
from simulators.people import Population, Trips
from simulators.pos import TrueSale

BIRTHDAY_TODAY_SHARE = 0.04
WITHDRAW_SHARE = 0.03
SYNC_OFFSET_MS = 60_000
ERASE_MINUTE = 180  # local 03:00: hours from any transaction (stores open at 08:00 at the earliest)
ERASE_DAYS_BEFORE_END = (2, 6)
TAGS = ("coffee", "fashion", "family", "student", "foodie", "sports", "beauty")


@dataclass
class MemberPlan:
    """Member ids and signup times of the people of one site, and their events."""

    member_id: list[str | None]  # per person
    member_since: np.ndarray  # per person: signup epoch ms (huge if not a member)
    events: list[tuple[int, str, bytes]]  # (ts, member_id, value)


def plan_members(
    rng: np.random.Generator,
    *,
    people: Population,
    trips: Trips,
    store_ids: tuple[str, ...],
    mac_text: list[bytes],
    dates: list[date],
    sync_ms: int,
    open_close_ms: list[tuple[int, int]],
    first_number: int,
) -> MemberPlan:
    """Members among the people who made a trip; ids count up from ``first_number``."""
    size = len(people)
    member_id: list[str | None] = [None] * size
    since = np.full(size, np.iinfo(np.int64).max, dtype=np.int64)
    first_trip = np.full(size, -1, dtype=np.int64)
    for t in range(len(trips) - 1, -1, -1):
        first_trip[trips.person[t]] = t
    members = np.flatnonzero(people.member & (first_trip >= 0))
    u = rng.random((len(members), 6))
    events: list[tuple[int, str, bytes]] = []
    number = first_number
    sync_rank = 0
    for k, p in enumerate(members.tolist()):
        mid = f"U{number:07d}"
        number += 1
        member_id[p] = mid
        t = int(first_trip[p])
        if people.new_member[p]:
            store = None
            vis = np.flatnonzero(trips.visit_trip == t)
            if len(vis):
                v = int(vis[0])
                store = store_ids[int(trips.visit_store[v])]
                a, z = int(trips.visit_start[v]), int(trips.visit_end[v])
            else:
                a, z = int(trips.arrive[t]), int(trips.depart[t])
            ts = a + int((z - a) * (0.2 + 0.3 * u[k, 0]))
            steps = (0, 3_000, 5_000, 8_000)
        else:
            store = None
            ts = sync_ms + SYNC_OFFSET_MS + sync_rank * 40
            sync_rank += 1
            steps = (0, 1, 2, 3)
        since[p] = ts
        batch: list[MemberEvent] = [Signup(member_id=mid, ts=ts + steps[0], store_id=store)]
        if people.has_phone[p]:
            mac = mac_text[int(people.bind_mac[p])].decode()
            batch.append(BindDevice(member_id=mid, ts=ts + steps[1], mac=mac))
        consent = bool(people.consent[p])
        batch.append(Consent(member_id=mid, ts=ts + steps[2], push=consent))
        batch.append(Profile(member_id=mid, ts=ts + steps[3], birthday=_birthday(u[k], dates),
                             tags=[TAGS[i] for i in sorted({int(u[k, 3] * 7), int(u[k, 4] * 7)})]))
        if consent and u[k, 5] < WITHDRAW_SHARE:
            day = int(u[k, 5] / WITHDRAW_SHARE * len(dates))
            lo, hi = open_close_ms[day]
            w_ts = max(ts + 10_000, lo + int((hi - lo) * u[k, 1]))
            batch.append(Consent(member_id=mid, ts=w_ts, push=False))
        events += [(ev.ts, mid, msgspec.json.encode(ev)) for ev in batch]
    return MemberPlan(member_id=member_id, member_since=since, events=events)


def plan_erasures(
    rng: np.random.Generator, *, member_ids: list[str | None], sales: list[TrueSale], nights_ms: list[int],
    share: float,
) -> list[tuple[int, str, bytes]]:
    """``(ts, member_id, value)`` of the erase events of one site: each member (in the order
    of ``member_ids``, two draws each, so the choice of one does not move another's) with a
    chance of ``share``, at ``nights_ms[day]`` (local 03:00 of each scenario day) of a day 2
    to 6 days before the last one, if they made a purchase before it (else none).

    >>> s = [TrueSale("T1", "S1", 50, 900, "cash", "U1")]
    >>> [v for _, _, v in plan_erasures(np.random.default_rng(1), member_ids=["U1", None, "U2"],
    ...                                 sales=s, nights_ms=[0, 100, 200, 300, 400, 500, 600, 700], share=1.0)]
    [b'{"type":"erase","member_id":"U1","ts":100}']
    """
    first_buy: dict[str, int] = {}
    for s in sales:
        if s.member_id is not None and not s.refund and s.amount > 0:
            first_buy[s.member_id] = min(first_buy.get(s.member_id, s.ts), s.ts)
    lo, hi = ERASE_DAYS_BEFORE_END
    out = []
    members = [m for m in member_ids if m is not None]
    u = rng.random((len(members), 2))
    for k, mid in enumerate(members):
        if u[k, 0] >= share:
            continue
        day = max(0, len(nights_ms) - 1 - (lo + int(u[k, 1] * (hi - lo + 1))))
        ts = nights_ms[day]
        if mid in first_buy and first_buy[mid] < ts:
            out.append((ts, mid, msgspec.json.encode(Erase(member_id=mid, ts=ts))))
    return out


def _birthday(u: np.ndarray, dates: list[date]) -> str:
    year = 1960 + int(u[1] * 46)
    if u[2] < BIRTHDAY_TODAY_SHARE:
        day = dates[int(u[2] / BIRTHDAY_TODAY_SHARE * len(dates))]
        if day.month == 2 and day.day == 29:
            year = 1996
        return f"{year:04d}-{day.month:02d}-{day.day:02d}"
    rest = (u[2] - BIRTHDAY_TODAY_SHARE) / (1 - BIRTHDAY_TODAY_SHARE)
    ordinal = date(2001, 1, 1).toordinal() + int(rest * 365)
    d = date.fromordinal(ordinal)
    return f"{year:04d}-{d.month:02d}-{d.day:02d}"
