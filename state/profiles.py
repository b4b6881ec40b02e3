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
    present. Values are UTF-8 strings:

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
>>> encode_value(1763870400000), encode_value(0.1), encode_value(None), encode_value(("S1", "S2"))
('1763870400000', '0.1', '', '["S1","S2"]')
>>> encode_value(True), encode_value(False)
('1', '0')
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, cast

import msgspec
from msgspec import inspect

from connectors.schemas import MemberErased, MemberProfile
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

_Kind = Literal["int", "float", "bool", "str", "json"]


def _kinds(struct: type[msgspec.Struct]) -> dict[str, tuple[_Kind, bool]]:
    """Each field's encoding and whether it may be None, from the schema's annotations."""
    info = inspect.type_info(struct)
    assert isinstance(info, inspect.StructType)
    kinds: dict[str, tuple[_Kind, bool]] = {}
    for field in info.fields:
        types = field.type.types if isinstance(field.type, inspect.UnionType) else (field.type,)
        optional = any(isinstance(t, inspect.NoneType) for t in types)
        [kind] = {_kind(t, f"{struct.__name__}.{field.name}") for t in types if not isinstance(t, inspect.NoneType)}
        kinds[field.name] = (kind, optional)
    return kinds


def _kind(t: inspect.Type, where: str) -> _Kind:
    if isinstance(t, inspect.BoolType):
        return "bool"
    if isinstance(t, inspect.IntType):
        return "int"
    if isinstance(t, inspect.FloatType):
        return "float"
    if isinstance(t, inspect.StrType):
        return "str"
    if isinstance(t, inspect.LiteralType) and all(isinstance(v, str) for v in t.values):
        return "str"
    if isinstance(t, inspect.TupleType | inspect.VarTupleType | inspect.ListType):
        return "json"
    raise TypeError(f"{where}: no Redis encoding for {t} (see state/profiles.py)")


_FIELDS = _kinds(MemberProfile)  # fails at import, not on the first write, if one has none


def _scalar(value: Any) -> Any:
    """numpy scalars as the Python numbers they hold."""
    if hasattr(value, "item"):
        return value.item()
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


_ENCODER = msgspec.json.Encoder(enc_hook=_scalar)


def profile_key(member_id: str) -> str:
    """The key of a member's profile hash."""
    return f"sp:member:{{{member_id}}}:profile"


def tombstone_key(member_id: str) -> str:
    """The key of a member's erasure tombstone (same hash tag as the profile)."""
    return f"sp:member:{{{member_id}}}:erased"


def encode_value(value: Any) -> str:
    """One hash value, as the module docstring says."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(float(value))  # float(): numpy's float64 repr is "np.float64(...)"
    if isinstance(value, tuple | list):
        return _ENCODER.encode(value).decode()
    if hasattr(value, "item"):  # a numpy integer
        return str(value.item())
    return str(value)


def profile_fields(profile: MemberProfile) -> dict[str, str]:
    """The hash of a profile: every field, encoded with ``encode_value``."""
    return {name: encode_value(getattr(profile, name)) for name in _FIELDS}


def _decode(name: str, text: str) -> Any:
    kind, optional = _FIELDS[name]
    if text == "" and optional:
        return None
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":  # anything but "1"/"0" stays text: msgspec.convert refuses it
        return {"1": True, "0": False}.get(text, text)
    if kind == "json":
        return msgspec.json.decode(text)
    return text


def profile_from_fields(fields: dict[str, str]) -> MemberProfile:
    """The profile a hash holds; ``msgspec.ValidationError`` if it is not one."""
    values = {name: _decode(name, text) for name, text in fields.items() if name in _FIELDS}
    return msgspec.convert(values, type=MemberProfile)


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
                args = ["w", encode_value(record.as_of_ts)]
                for name, value in profile_fields(record).items():
                    args += (name, value)
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
        return profile_from_fields({_text(k): _text(v) for k, v in raw.items()})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
