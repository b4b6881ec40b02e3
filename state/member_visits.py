"""Member visits in Redis: the copy of each member's stores visited and last seen that other
services read (``connectors.schemas.MemberVisits``; docs/member-profiles.md, "Visits").

Every ``write`` is one non-transactional pipeline of one Lua call per ``MemberVisits``
(``state.hashes.REPLACE_IF_NEWER_LUA``) and one ``DEL`` per ``VisitsErased`` (one round
trip to a single server, one per node on a Cluster). Idempotent and replay-safe as
``state.profiles``: a record replaces the stored one only if its ``as_of_ts`` is not older
and it is newer than the member's erasure tombstone.

``sp:member:{<member_id>}:visits`` (hash, no TTL: kept until the member is erased)
    Fields ``member_id``, ``as_of_ts``, ``stores_visited``, ``last_seen_ts``,
    ``last_seen_store``, encoded as every serving key (``state.hashes``):
    integers as decimal epoch milliseconds UTC, ``stores_visited`` as a compact sorted JSON
    array (``["S1","S2"]``). Replaced whole (DEL, then HSET, in a Lua script) when the
    incoming ``as_of_ts`` is >= the stored one and > the ts in the member's erasure
    tombstone ``sp:member:{<member_id>}:erased`` (``state.profiles.tombstone_key``, written
    by the profile store, only read here); otherwise left untouched. A ``VisitsErased``
    deletes the key (whatever it holds: the member step writes the visits left after the
    erasure, if any, right after it).

>>> visits_key("M-1001")
'sp:member:{M-1001}:visits'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from connectors.schemas import MemberVisits, VisitsErased
from state.hashes import REPLACE_IF_NEWER_LUA, REPLACE_IF_NEWER_SHA, HashCodec, encode_value
from state.profiles import tombstone_key
from state.redis import Client, run_scripted

_CODEC = HashCodec(MemberVisits)


def visits_key(member_id: str) -> str:
    """The key of a member's visits hash (same hash tag as the profile and tombstone)."""
    return f"sp:member:{{{member_id}}}:visits"


class Written(NamedTuple):
    """What one ``MemberVisitsStore.write`` did: records written, keys deleted by erasures."""

    written: int
    erased: int


class MemberVisitsStore:
    """Writes, reads and erases the visits keys of the module docstring."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def write(self, records: Sequence[MemberVisits | VisitsErased]) -> Written:
        """Write a batch in one pipeline, in order. Raises redis errors; safe to retry whole."""
        batch = list(records)
        for record in batch:
            if not isinstance(record, MemberVisits | VisitsErased):
                raise TypeError(f"MemberVisitsStore.write: unexpected {type(record).__name__}")
        if not batch:
            return Written(0, 0)
        results = run_scripted(self.client, lambda: self._pipeline(batch), REPLACE_IF_NEWER_LUA)
        written = sum(int(r) for r, rec in zip(results, batch, strict=True) if isinstance(rec, MemberVisits))
        return Written(written, sum(int(r) for r in results) - written)

    def _pipeline(self, records: list[MemberVisits | VisitsErased]) -> Any:
        pipe: Any = self.client.pipeline(transaction=False)
        for record in records:
            key = visits_key(record.member_id)
            if isinstance(record, VisitsErased):
                pipe.delete(key)
                continue
            args = (encode_value(record.as_of_ts), *_CODEC.pairs(record))
            # execute_command: redis-py blocks the evalsha method in cluster pipelines
            pipe.execute_command("EVALSHA", REPLACE_IF_NEWER_SHA, 2, key, tombstone_key(record.member_id), *args)
        return pipe

    def read(self, member_id: str) -> MemberVisits | None:
        """The member's visits, or None; ``msgspec.ValidationError`` if the hash is not one."""
        raw = cast(dict[bytes, bytes], self.client.hgetall(visits_key(member_id)))
        if not raw:
            return None
        return _CODEC.read(raw)
