"""Member profiles in Redis: the copy of each member's profile that other services read.

Writes ``connectors.schemas.MemberProfile`` records (the contract is
docs/member-profiles.md); every ``write`` is one non-transactional pipeline of one Lua
call per member (one round trip to a single server, one per node on a Cluster).
Idempotent and replay-safe: a profile replaces the stored one only if its ``as_of_ts`` is
not older, so the replay after a restart never moves a profile backwards.

Key layout (the cross-service interface). The member id is in literal braces, a Redis
Cluster hash tag, so every key of one member (this one, and those later slices add under
``sp:member:{<member_id>}:``) lives in one slot.

``sp:member:{<member_id>}:profile`` (hash, no TTL: kept until the member is erased)
    One field per ``MemberProfile`` field, named as in the schema, every field always
    present. Values are UTF-8 strings:

    - integers as decimal (``as_of_ts`` is epoch milliseconds UTC, money is in minor
      units of the store's currency);
    - floats (none yet) with ``repr``, the shortest string that reads back the same;
    - text as is (``rfm`` is three digits, e.g. ``"543"``);
    - tuples (``stores``, ``favourite_categories``, ...) as a compact JSON array, e.g.
      ``["S1","S2"]`` and ``[]`` for none: unambiguous even if an id or a category name
      holds a comma;
    - None (no sales yet: ``avg_ticket``, ``first_purchase_ts``, ``rfm``, ...) as the
      empty string. So an optional text field cannot hold an empty string; none does.

    Replaced whole (DEL, then HSET of every field, in a Lua script) when the incoming
    ``as_of_ts`` is >= the stored one; an older profile leaves it untouched. Readers see
    either the old profile or the new one, never a mix. Equal ``as_of_ts`` is rewritten:
    a replay sends the same profiles in the same order, so it ends where it was.
    ``read`` ignores fields it does not know (a newer writer may add some) and refuses a
    hash that lacks one (``msgspec.ValidationError``) rather than guess.

``erase`` deletes the key (the member's right to erasure).

>>> profile_key("M-1001")
'sp:member:{M-1001}:profile'
>>> encode_value(1763870400000), encode_value(0.1), encode_value(None), encode_value(("S1", "S2"))
('1763870400000', '0.1', '', '["S1","S2"]')
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal, cast

import msgspec
import redis
from msgspec import inspect

from connectors.schemas import MemberProfile
from state.redis import Client

# KEYS[1] the profile hash. ARGV[1] the incoming as_of_ts, ARGV[2..] field, value pairs
# (every field). Returns 1 if the profile was written, 0 if the stored one is newer.
_WRITE_LUA = """
local current = redis.call('HGET', KEYS[1], 'as_of_ts')
if current and tonumber(current) > tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""

_Kind = Literal["int", "float", "bool", "str", "json"]


def _kinds(struct: type[msgspec.Struct]) -> dict[str, tuple[_Kind, bool]]:
    """Each field's encoding and whether it may be None, from the schema's annotations."""
    info = inspect.type_info(struct)
    assert isinstance(info, inspect.StructType)
    kinds: dict[str, tuple[_Kind, bool]] = {}
    for field in info.fields:
        types = field.type.types if isinstance(field.type, inspect.UnionType) else (field.type,)
        optional = any(isinstance(t, inspect.NoneType) for t in types)
        [kind] = {_kind(t, f"{struct.__name__}.{field.name}") for t in types
                  if not isinstance(t, inspect.NoneType)}
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
    if kind == "bool":
        return text == "1"
    if kind == "json":
        return msgspec.json.decode(text)
    return text


def profile_from_fields(fields: dict[str, str]) -> MemberProfile:
    """The profile a hash holds; ``msgspec.ValidationError`` if it is not one."""
    values = {name: _decode(name, text) for name, text in fields.items() if name in _FIELDS}
    return msgspec.convert(values, type=MemberProfile)


class ProfileStore:
    """Writes, reads and erases the profile keys of the module docstring."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._sha = hashlib.sha1(_WRITE_LUA.encode()).hexdigest()

    def write(self, profiles: Sequence[MemberProfile]) -> int:
        """Write a batch in one pipeline; the number of profiles written (not older than
        the stored one). Of several profiles of one member in the batch only the newest
        is sent (of equal ``as_of_ts``, the last). Raises redis errors; safe to retry whole.
        """
        newest: dict[str, MemberProfile] = {}
        for profile in profiles:
            if not isinstance(profile, MemberProfile):
                raise TypeError(f"ProfileStore.write: unexpected {type(profile).__name__}")
            held = newest.get(profile.member_id)
            if held is None or profile.as_of_ts >= held.as_of_ts:
                newest[profile.member_id] = profile
        if not newest:
            return 0
        batch = list(newest.values())
        results = self._pipeline(batch).execute(raise_on_error=False)
        if any(isinstance(r, redis.exceptions.NoScriptError) for r in results):
            self.client.script_load(_WRITE_LUA)  # server restarted or flushed
            results = self._pipeline(batch).execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return sum(int(r) for r in results)

    def _pipeline(self, profiles: list[MemberProfile]) -> Any:
        pipe: Any = self.client.pipeline(transaction=False)
        for profile in profiles:
            args: list[str] = [encode_value(profile.as_of_ts)]
            for name, value in profile_fields(profile).items():
                args += (name, value)
            # execute_command: redis-py blocks the evalsha method (not the command) in
            # cluster pipelines; NOSCRIPT is handled in write() for both kinds of client
            pipe.execute_command("EVALSHA", self._sha, 1, profile_key(profile.member_id), *args)
        return pipe

    def read(self, member_id: str) -> MemberProfile | None:
        """The member's profile, or None if there is none."""
        raw = cast(dict[bytes, bytes], self.client.hgetall(profile_key(member_id)))
        if not raw:
            return None
        return profile_from_fields({_text(k): _text(v) for k, v in raw.items()})

    def erase(self, member_id: str) -> bool:
        """Delete the member's profile; whether there was one."""
        return bool(self.client.delete(profile_key(member_id)))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
