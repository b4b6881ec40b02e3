"""A msgspec record as a Redis hash: one field per record field, values as UTF-8 text.

The encoding every serving key of storepulse shares (``state.profiles``,
``state.member_visits``, ``state.store_members``; their docstrings give the layouts):

- integers as decimal; booleans as ``"1"`` or ``"0"``; floats with ``repr`` (the
  shortest text that reads back the same); text as is;
- tuples and lists (of text, or of records such as ``LoyaltyAccount``) as compact JSON;
- None as the empty string (so an optional text field cannot hold an empty string).

Reading ignores fields it does not know (a newer writer may add some), gives a missing
field with a default its default, and refuses anything else that is not the record
(``msgspec.ValidationError`` naming the field) rather than guess.

>>> import msgspec
>>> class Seen(msgspec.Struct, kw_only=True):
...     store_id: str
...     as_of_ts: int
...     rate: float | None = None
...     stores: tuple[str, ...] = ()
>>> codec = HashCodec(Seen)
>>> codec.pairs(Seen(store_id="S1", as_of_ts=5, stores=("S1", "S2")))
['store_id', 'S1', 'as_of_ts', '5', 'rate', '', 'stores', '["S1","S2"]']
>>> codec.read({b"store_id": b"S1", b"as_of_ts": b"5", b"rate": b"0.5", b"new_field": b"x"})
Seen(store_id='S1', as_of_ts=5, rate=0.5, stores=())
>>> codec.read({b"store_id": b"S1", b"as_of_ts": b"five"})
Traceback (most recent call last):
...
msgspec.ValidationError: Expected `int`, got `str` - at `$.as_of_ts`
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Literal, TypeVar

import msgspec
from msgspec import inspect

Kind = Literal["int", "float", "bool", "str", "json"]
S = TypeVar("S", bound=msgspec.Struct)


def _scalar(value: Any) -> Any:
    """numpy scalars as the Python numbers they hold."""
    if hasattr(value, "item"):
        return value.item()
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


_ENCODER = msgspec.json.Encoder(enc_hook=_scalar)


def encode_value(value: Any) -> str:
    """One hash value, as the module docstring says.

    >>> encode_value(1763870400000), encode_value(0.1), encode_value(None), encode_value(("S1", "S2"))
    ('1763870400000', '0.1', '', '["S1","S2"]')
    >>> encode_value(True), encode_value(False)
    ('1', '0')
    """
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


# KEYS[1] a record's hash; KEYS[2], if given, its owner's erasure tombstone (a string
# holding the erasure's ts; same hash tag). ARGV[1] the record's as_of_ts, ARGV[2..] its
# ``HashCodec.pairs``. Replaces the hash whole (DEL, then HSET) unless the stored as_of_ts
# is newer or the tombstone's ts is not older; returns 1 if written, 0 if not.
REPLACE_IF_NEWER_LUA = """
local ts = tonumber(ARGV[1])
local current = redis.call('HGET', KEYS[1], 'as_of_ts')
if current and tonumber(current) > ts then
  return 0
end
if KEYS[2] then
  local erased = redis.call('GET', KEYS[2])
  if erased and tonumber(erased) >= ts then
    return 0
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""
REPLACE_IF_NEWER_SHA = hashlib.sha1(REPLACE_IF_NEWER_LUA.encode()).hexdigest()


def write_newest(client: Any, codec: HashCodec[S], records: Sequence[S], key_of: Callable[[S], str]) -> list[S]:
    """Write each key's newest record (by ``as_of_ts``; of equal, the last) as its hash with
    the replace-if-newer script, in one pipeline. Returns the records written, not those
    older than what Redis holds. Raises redis errors; safe to retry whole."""
    from state.redis import run_scripted

    newest: dict[str, S] = {}
    for record in records:
        if not isinstance(record, codec.struct):
            raise TypeError(f"{codec.struct.__name__} store: unexpected {type(record).__name__}")
        key = key_of(record)
        last = newest.get(key)
        if last is None or record.as_of_ts >= last.as_of_ts:  # type: ignore[attr-defined]
            newest[key] = record
    if not newest:
        return []

    def pipeline() -> object:
        pipe = client.pipeline(transaction=False)
        for key, record in newest.items():
            # execute_command: redis-py blocks the evalsha method in cluster pipelines
            as_of = encode_value(record.as_of_ts)  # type: ignore[attr-defined]
            pipe.execute_command("EVALSHA", REPLACE_IF_NEWER_SHA, 1, key, as_of, *codec.pairs(record))
        return pipe

    results = run_scripted(client, pipeline, REPLACE_IF_NEWER_LUA)
    return [record for record, result in zip(newest.values(), results, strict=True) if int(result)]


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class HashCodec(Generic[S]):
    """Encodes records of one msgspec ``Struct`` type as hashes and reads them back. The
    encoding of each field comes from the type's annotations, checked when the codec is
    built (so a field without one fails at import, not on the first write)."""

    def __init__(self, struct: type[S]) -> None:
        self.struct = struct
        self.kinds = _kinds(struct)

    def pairs(self, record: S) -> list[str]:
        """The hash of a record as the arguments of ``HSET``: ``[name, value, ...]`` for
        every field, each value encoded with ``encode_value``."""
        return [part for name in self.kinds for part in (name, encode_value(getattr(record, name)))]

    def read(self, raw: Mapping[bytes, bytes] | Mapping[str, str]) -> S:
        """The record a hash (as ``HGETALL`` returns it) holds; ``msgspec.ValidationError``
        if it is not one."""
        values = {}
        for key, value in raw.items():
            name = text(key)
            if name in self.kinds:
                values[name] = self._decode(name, text(value))
        return msgspec.convert(values, type=self.struct)

    def _decode(self, name: str, value: str) -> Any:
        kind, optional = self.kinds[name]
        if value == "" and optional:
            return None
        try:
            if kind == "int":
                return int(value)
            if kind == "float":
                return float(value)
            if kind == "json":
                return msgspec.json.decode(value)
        except (ValueError, msgspec.DecodeError):
            return value  # left as text: msgspec.convert refuses it, naming the field
        if kind == "bool":  # anything but "1"/"0" stays text: msgspec.convert refuses it
            return {"1": True, "0": False}.get(value, value)
        return value


def _kinds(struct: type[msgspec.Struct]) -> dict[str, tuple[Kind, bool]]:
    """Each field's encoding and whether it may be None, from the type's annotations."""
    info = inspect.type_info(struct)
    assert isinstance(info, inspect.StructType)
    kinds: dict[str, tuple[Kind, bool]] = {}
    for field in info.fields:
        types = field.type.types if isinstance(field.type, inspect.UnionType) else (field.type,)
        optional = any(isinstance(t, inspect.NoneType) for t in types)
        [kind] = {_kind(t, f"{struct.__name__}.{field.name}") for t in types if not isinstance(t, inspect.NoneType)}
        kinds[field.name] = (kind, optional)
    return kinds


def _kind(t: inspect.Type, where: str) -> Kind:
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
    raise TypeError(f"{where}: no Redis encoding for {t} (see state/hashes.py)")
