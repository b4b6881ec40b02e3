"""A store's members in Redis: the repurchase rate that dashboards and other services read.

Writes ``connectors.schemas.StoreMembers`` records (the rule is in that module and in
docs/member-profiles.md); every ``write`` is one non-transactional pipeline of one Lua call
per store (one round trip to a single server, one per node on a Cluster). Idempotent and
replay-safe: a record replaces the stored one only if its ``as_of_ts`` is not older, so the
replay after a restart never moves a store backwards.

Key layout (the cross-service interface). The store id is in literal braces, a Redis
Cluster hash tag, as in ``state.footfall``.

``sp:store:{<store_id>}:members`` (hash, no TTL: one per store, a small fixed set)
    Fields ``store_id``, ``as_of_ts`` (epoch ms UTC, the newest member purchase seen at the
    store), ``members_active``, ``members_repeat`` (decimal integers) and
    ``repurchase_rate`` (a float 0-1 with ``repr``, the shortest string that reads back the
    same; the empty string when no member is active), every field always present: the
    encoding of every serving key (``state.hashes``). No member id is ever written.

    Replaced whole (DEL, then HSET of every field, in a Lua script) when the incoming
    ``as_of_ts`` is >= the stored one; otherwise left untouched. Equal ``as_of_ts`` is
    rewritten (an erasure changes the counts, not ``as_of_ts``; a replay sends the same
    records in the same order, so it ends where it was).

>>> store_members_key("S1")
'sp:store:{S1}:members'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from connectors.schemas import StoreMembers
from state.hashes import HashCodec, write_newest
from state.redis import Client

_CODEC = HashCodec(StoreMembers)


def store_members_key(store_id: str) -> str:
    """The key of a store's members hash."""
    return f"sp:store:{{{store_id}}}:members"


class StoreMembersStore:
    """Writes and reads the store keys of the module docstring."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def write(self, records: Sequence[StoreMembers]) -> list[StoreMembers]:
        """Write a batch in one pipeline; of several records of one store only the newest
        is sent (of equal ``as_of_ts``, the last). Returns the records written (not those
        older than what Redis holds). Raises redis errors; safe to retry whole."""
        return write_newest(self.client, _CODEC, records, lambda r: store_members_key(r.store_id))

    def read(self, store_id: str) -> StoreMembers | None:
        """The store's record, or None if there is none."""
        raw = cast(dict[bytes, bytes], self.client.hgetall(store_members_key(store_id)))
        if not raw:
            return None
        return _CODEC.read(raw)
