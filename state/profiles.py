"""Member profiles in Redis: the copy of each member's profile that other services read.

Writes ``connectors.schemas.MemberProfile`` records and applies ``MemberErased`` ones
(the contract is docs/member-profiles.md); every ``apply`` (and ``write``, ``erase``) is
one non-transactional pipeline of one Lua call per record (one round trip to a single
server, one per node on a Cluster). Idempotent and replay-safe: a profile replaces the
stored one only if its ``as_of_ts`` is not older and it is newer than the member's
erasure, so the replay after a restart never moves a profile backwards and never brings
an erased member back.

Key layout (the cross-service interface). The member id is in literal braces, a Redis
Cluster hash tag, so every key of one member lives in one slot (one script touches both).

``sp:member:{<member_id>}:profile`` (hash, no TTL: kept until the member is erased)
    One field per ``MemberProfile`` field, named as in the schema, every field always
    present. Values are UTF-8 strings (``state.hashes``, shared by every serving key):

    - integers as decimal (``as_of_ts`` and ``member_since_ts`` are epoch milliseconds
      UTC, money is in minor units of the store's currency);
    - booleans (``push_consent``, ``birthday_month``) as ``"1"`` or ``"0"``, nothing else (Redis's own
      convention, as HSETNX and EXISTS answer; what Lua's ``tonumber`` and most clients
      read without a lookup table);
    - floats (none yet) with ``repr``, the shortest string that reads back the same;
    - text as is (``rfm`` is three digits, e.g. ``"543"``; ``birthday`` is ``"MM-DD"``);
    - tuples (``stores``, ``favourite_categories``, ``tags``, ...) as a compact JSON array,
      e.g. ``["S1","S2"]`` and ``[]`` for none: unambiguous even if an id, a category name
      or a tag holds a comma;
    - ``loyalty`` (a tuple of ``LoyaltyAccount``) as a compact JSON array of objects, one
      per merchant, fields named as in the schema, e.g.
      ``[{"merchant_id":"X","level":"gold","points":120,...}]``;
    - None (no sales yet: ``avg_ticket``, ``first_purchase_ts``, ``rfm``; no signup seen:
      ``member_since_ts``; no ``birthday``) as the empty string. So an optional text field
      cannot hold an empty string; none does.

    Replaced whole (DEL, then HSET of every field, in a Lua script) when the incoming
    ``as_of_ts`` is >= the stored one and > the erasure tombstone's; otherwise left
    untouched. Readers see either the old profile or the new one, never a mix. Equal
    ``as_of_ts`` is rewritten: a replay sends the same profiles in the same order, so it
    ends where it was. ``read`` ignores fields it does not know (a newer writer may add
    some), reads a field with a default that is missing (written before the field was
    added) as its default, and refuses a hash that lacks any other field or holds a value
    that does not decode (``msgspec.ValidationError``) rather than guess.

``sp:member:{<member_id>}:erased`` (string, TTL ``tombstone_ttl_s``, 35 days by default)
    The erasure tombstone: the ``ts`` (epoch ms) of the member's latest erasure, written
    by the same script that deletes the profile. While it exists a profile with
    ``as_of_ts`` <= that ts (computed before the erasure, replayed after a restart) is not
    written; a newer one (the member came back) is written and deletes the tombstone. An
    erasure older than the stored profile's ``as_of_ts`` is stale (the member came back
    since) and changes nothing. The TTL must exceed the longest replay (input retention
    plus snapshot age); after it a replay could write an erased member's profile again.

>>> profile_key("M-1001"), tombstone_key("M-1001")
('sp:member:{M-1001}:profile', 'sp:member:{M-1001}:erased')
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from connectors.schemas import MemberErased, MemberProfile
from state.hashes import HashCodec, encode_value
from state.redis import Client, run_scripted

# KEYS[1] the profile hash, KEYS[2] the erasure tombstone (one member: one slot).
# ARGV[1] "w" (write a profile) or "e" (erase), ARGV[2] the profile's as_of_ts or the
# erasure's ts. "w": ARGV[3..] field, value pairs (every field); returns 1 if written, 0 if
# the stored profile is newer or the erasure not older. "e": ARGV[3] the tombstone TTL in
# seconds; returns 1 if this erasure is new, 0 if stale (the stored profile is newer) or
# already applied (a replay: the tombstone is as new), so replays are not counted again.
_WRITE_LUA = """
local ts = tonumber(ARGV[2])
local current = redis.call('HGET', KEYS[1], 'as_of_ts')
if current and tonumber(current) > ts then
  return 0
end
local erased = redis.call('GET', KEYS[2])
if ARGV[1] == 'e' then
  redis.call('DEL', KEYS[1])
  if erased and tonumber(erased) >= ts then
    return 0
  end
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
  return 1
end
if erased and tonumber(erased) >= ts then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return 1
"""
TOMBSTONE_TTL_S = 35 * 86_400  # must exceed the longest replay: input retention + snapshot age

_CODEC = HashCodec(MemberProfile)


def profile_key(member_id: str) -> str:
    """The key of a member's profile hash."""
    return f"sp:member:{{{member_id}}}:profile"


def tombstone_key(member_id: str) -> str:
    """The key of a member's erasure tombstone (same hash tag as the profile)."""
    return f"sp:member:{{{member_id}}}:erased"


class Applied(NamedTuple):
    """What one ``ProfileStore.apply`` did: profiles written, erasures newly applied."""

    written: int
    erased: int


class ProfileStore:
    """Writes, reads and erases the member keys of the module docstring."""

    def __init__(self, client: Client, *, tombstone_ttl_s: int = TOMBSTONE_TTL_S) -> None:
        if tombstone_ttl_s <= 0:
            raise ValueError(f"ProfileStore: tombstone_ttl_s must be > 0, not {tombstone_ttl_s}")
        self.client = client
        self.tombstone_ttl_s = tombstone_ttl_s
        self._sha = hashlib.sha1(_WRITE_LUA.encode()).hexdigest()

    def apply(self, records: Sequence[MemberProfile | MemberErased]) -> Applied:
        """Write the profiles and apply the erasures of a batch, in one pipeline, in order
        per member (a profile after an erasure is written only if newer than it). Of
        consecutive profiles of one member only the newest is sent (of equal ``as_of_ts``,
        the last), of consecutive erasures the newest. Raises redis errors; safe to retry
        whole (every step is idempotent).
        """
        runs: dict[str, list[MemberProfile | MemberErased]] = {}
        for record in records:
            if not isinstance(record, MemberProfile | MemberErased):
                raise TypeError(f"ProfileStore.apply: unexpected {type(record).__name__}")
            run = runs.setdefault(record.member_id, [])
            last = run[-1] if run else None
            if isinstance(record, MemberProfile) and isinstance(last, MemberProfile):
                if record.as_of_ts >= last.as_of_ts:
                    run[-1] = record
            elif isinstance(record, MemberErased) and isinstance(last, MemberErased):
                if record.ts > last.ts:
                    run[-1] = record
            else:
                run.append(record)
        batch = [record for run in runs.values() for record in run]
        if not batch:
            return Applied(0, 0)
        results = run_scripted(self.client, lambda: self._pipeline(batch), _WRITE_LUA)
        written = sum(int(r) for r, record in zip(results, batch, strict=True) if isinstance(record, MemberProfile))
        return Applied(written, sum(int(r) for r in results) - written)

    def write(self, profiles: Sequence[MemberProfile]) -> int:
        """Write a batch of profiles (see ``apply``); the number written."""
        for profile in profiles:
            if not isinstance(profile, MemberProfile):
                raise TypeError(f"ProfileStore.write: unexpected {type(profile).__name__}")
        return self.apply(profiles).written

    def erase(self, member_id: str, ts: int) -> bool:
        """Erase the member as of ``ts`` (epoch ms): delete the profile unless it is newer,
        and leave the tombstone; whether this erasure was new (see ``apply``)."""
        return self.apply([MemberErased(member_id=member_id, ts=ts)]).erased == 1

    def erased_at(self, member_id: str) -> int | None:
        """The ts of the member's erasure while its tombstone lasts, else None."""
        value = cast(bytes | str | None, self.client.get(tombstone_key(member_id)))
        return None if value is None else int(value)

    def _pipeline(self, records: list[MemberProfile | MemberErased]) -> Any:
        pipe: Any = self.client.pipeline(transaction=False)
        for record in records:
            args: list[str]
            if isinstance(record, MemberProfile):
                args = ["w", encode_value(record.as_of_ts), *_CODEC.pairs(record)]
            else:
                args = ["e", encode_value(record.ts), str(self.tombstone_ttl_s)]
            keys = (profile_key(record.member_id), tombstone_key(record.member_id))
            # execute_command: redis-py blocks the evalsha method (not the command) in
            # cluster pipelines; NOSCRIPT is handled in apply() for both kinds of client
            pipe.execute_command("EVALSHA", self._sha, 2, *keys, *args)
        return pipe

    def read(self, member_id: str) -> MemberProfile | None:
        """The member's profile, or None if there is none."""
        raw = cast(dict[bytes, bytes], self.client.hgetall(profile_key(member_id)))
        if not raw:
            return None
        return _CODEC.read(raw)
