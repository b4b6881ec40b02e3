"""Footfall in Redis: the live view, the minute series and the store-hours that others read.

Writes the footfall outputs of ``connectors.schemas`` (``FootfallMinute``, ``StoreHour``);
every ``write`` is one non-transactional pipeline (one round trip to a single server, one
per node on a Cluster). Idempotent: a replay after a restart leaves the keys as they were.

Key layout (the cross-service interface). ``{scope}`` is ``zone``, ``store`` or ``mall``;
the id is in literal braces, a Redis Cluster hash tag, so all keys of one zone/store/mall
live in one slot. Timestamps are epoch milliseconds UTC.

``sp:footfall:<scope>:{<id>}:live`` (hash, TTL 48 h from the last write)
    The newest closed minute: every ``FootfallMinute`` field (``scope``, ``scope_id``,
    ``mall_id``, ``minute_ts``, ``devices``, ``devices_15m``, ``devices_1h``,
    ``visitors_inside``, ``sales``, ``sales_amount``, ``refunds``, and ``payments`` as a JSON
    object of sales per payment method), numbers as decimal strings. Replaced only by
    a minute whose ``minute_ts`` is not older than the one there (checked in a Lua
    script), so a replay never moves it backwards.
``sp:footfall:<scope>:{<id>}:minutes`` (sorted set, TTL 48 h from the last write)
    score ``minute_ts``, member the record as msgspec JSON (fields in schema order,
    deterministic). One member per minute (a rewrite of a minute replaces it). Trimmed
    on write to the 48 h that end with its newest minute: scores <= newest - 48 h go.
    It holds every minute in which the scope heard a device or made a sale, and each time
    the engine closes minutes, the site's newest closed minute for every scope of the
    site (zeros where nothing was heard), so the live view never shows a stale busy minute.
    Reading it: a minute at or before the live view's ``minute_ts`` that is missing had
    nothing heard (devices and sales 0); a minute after it is not computed yet.
``sp:footfall:store:{<store_id>}:hour:<hour_ts>`` (hash, TTL 35 days from the last write)
    One ``StoreHour``, absolute values: ``mall_id``, ``store_id``, ``hour_ts``,
    ``visitors``, ``visitors_stable``, ``new_visitors``, ``returning_visitors``,
    ``passers_by``, ``dwell_median_s``, ``sales``, ``sales_amount``, ``capture_rate``,
    ``conversion``, and the dwell buckets as five fields named by
    ``DWELL_BUCKET_LABELS`` (``lt_5m``, ``5_20m``, ``20_60m``, ``1_6h``, ``gt_6h``).
    Floats are written with ``repr`` (exact round trip); None is the empty string.
``sp:footfall:store:{<store_id>}:hours`` (sorted set, TTL 35 days from the last write)
    score and member ``hour_ts``: the index of the hour hashes (hours need not be
    UTC-aligned: stores keep local time). Trimmed to the 35 days that end with the
    newest hour in the write.

>>> live_key("store", "S1"), minutes_key("zone", "S1-floor")
('sp:footfall:store:{S1}:live', 'sp:footfall:zone:{S1-floor}:minutes')
>>> hour_key("S1", 1763870400000), hours_key("S1")
('sp:footfall:store:{S1}:hour:1763870400000', 'sp:footfall:store:{S1}:hours')
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, cast

import msgspec

from connectors.schemas import DWELL_BUCKET_LABELS, FootfallMinute, StoreHour
from state.redis import Client, run_scripted

MINUTES_WINDOW_MS = 48 * 3600 * 1000
MINUTES_TTL_S = 48 * 3600
HOURS_TTL_S = 35 * 86400
HOURS_WINDOW_MS = HOURS_TTL_S * 1000

_MINUTE_INT_FIELDS = ("minute_ts", "devices", "devices_15m", "devices_1h",
                      "visitors_inside", "sales", "sales_amount", "refunds")
_HOUR_INT_FIELDS = ("hour_ts", "visitors", "visitors_stable", "new_visitors",
                    "returning_visitors", "passers_by", "sales", "sales_amount")
_HOUR_FLOAT_FIELDS = ("dwell_median_s", "capture_rate", "conversion")

# KEYS[1] live hash, KEYS[2] minutes zset. ARGV[1] window ms, ARGV[2] ttl s, ARGV[3] the
# position (1-based) of the live candidate among the (minute_ts, JSON) pairs ARGV[4..].
# Few, large arguments: redis-py packs every argument in Python, which is the cost of a batch.
_MINUTES_LUA = """
local window, ttl, live_at = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local live_ts = tonumber(ARGV[2 + 2 * live_at])
local current = redis.call('HGET', KEYS[1], 'minute_ts')
local live = 0
if (not current) or tonumber(current) <= live_ts then
  local fields = {}
  for name, value in pairs(cjson.decode(ARGV[3 + 2 * live_at])) do
    if type(value) == 'number' then
      value = (value == math.floor(value)) and string.format('%d', value)
              or string.format('%.17g', value)
    elseif type(value) == 'table' then
      value = cjson.encode(value)
    end
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  live = 1
end
for i = 4, #ARGV, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[2], ARGV[i], ARGV[i])
  redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i + 1])
end
local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')[2]
if newest then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', tonumber(newest) - window))
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return live
"""


def _scalar(value: Any) -> Any:
    """numpy scalars (counts computed with numpy) as the Python numbers they hold."""
    if hasattr(value, "item"):
        return value.item()
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


_ENCODER = msgspec.json.Encoder(enc_hook=_scalar)


def live_key(scope: str, scope_id: str) -> str:
    return f"sp:footfall:{scope}:{{{scope_id}}}:live"


def minutes_key(scope: str, scope_id: str) -> str:
    return f"sp:footfall:{scope}:{{{scope_id}}}:minutes"


def hour_key(store_id: str, hour_ts: int) -> str:
    return f"sp:footfall:store:{{{store_id}}}:hour:{hour_ts}"


def hours_key(store_id: str) -> str:
    return f"sp:footfall:store:{{{store_id}}}:hours"


def hour_fields(hour: StoreHour) -> dict[str, str]:
    """The hash of a store-hour: strings, floats by ``repr``, None as ``""``."""
    fields: dict[str, str] = {}
    for name, value in msgspec.structs.asdict(hour).items():
        if name == "dwell_buckets":
            fields.update(zip(DWELL_BUCKET_LABELS, map(str, value), strict=True))
        elif value is None:
            fields[name] = ""
        else:
            # float(): a numpy float64 is a float whose repr is "np.float64(...)"
            fields[name] = repr(float(value)) if isinstance(value, float) else str(value)
    return fields


class FootfallStore:
    """Writes and reads the footfall keys of the module docstring."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._sha = hashlib.sha1(_MINUTES_LUA.encode()).hexdigest()

    def write(self, items: Sequence[FootfallMinute | StoreHour]) -> None:
        """Write a batch in one pipeline. Raises redis errors; safe to retry as a whole."""
        if not items:
            return
        run_scripted(self.client, lambda: self._pipeline(items), _MINUTES_LUA)

    def _pipeline(self, items: Sequence[FootfallMinute | StoreHour]) -> Any:
        minutes: dict[tuple[str, str], list[FootfallMinute]] = {}
        hours: dict[str, list[StoreHour]] = {}
        for item in items:
            if isinstance(item, FootfallMinute):
                minutes.setdefault((item.scope, item.scope_id), []).append(item)
            elif isinstance(item, StoreHour):
                hours.setdefault(item.store_id, []).append(item)
            else:
                raise TypeError(f"FootfallStore.write: unexpected {type(item).__name__}")
        pipe: Any = self.client.pipeline(transaction=False)
        for (scope, scope_id), records in minutes.items():
            args: list[Any] = [MINUTES_WINDOW_MS, MINUTES_TTL_S, 0]
            live_at, live_ts = 0, -1
            for position, record in enumerate(records, 1):
                minute_ts = int(record.minute_ts)
                args += (minute_ts, _ENCODER.encode(record))
                if minute_ts >= live_ts:  # the newest; of equals, the last written
                    live_at, live_ts = position, minute_ts
            args[2] = live_at
            # execute_command: redis-py blocks the evalsha method (not the command) in
            # cluster pipelines; NOSCRIPT is handled in write() for both kinds of client
            pipe.execute_command("EVALSHA", self._sha, 2, live_key(scope, scope_id),
                                 minutes_key(scope, scope_id), *args)
        for store_id, store_hours in hours.items():
            index = hours_key(store_id)
            for hour in store_hours:
                hour_ts = int(hour.hour_ts)
                key = hour_key(store_id, hour_ts)
                pipe.hset(key, mapping=hour_fields(hour))
                pipe.expire(key, HOURS_TTL_S)
                pipe.zadd(index, {str(hour_ts): hour_ts})
            newest_hour = max(int(h.hour_ts) for h in store_hours)
            pipe.zremrangebyscore(index, "-inf", newest_hour - HOURS_WINDOW_MS)
            pipe.expire(index, HOURS_TTL_S)
        return pipe

    # ---- readers ------------------------------------------------------------------------

    def live(self, scope: str, scope_id: str) -> FootfallMinute | None:
        """The newest closed minute of a zone, store or mall, or None."""
        raw = self.client.hgetall(live_key(scope, scope_id))
        return _minute_from_hash(_texts(raw)) if raw else None

    def minutes(self, scope: str, scope_id: str, since_ts: int) -> list[FootfallMinute]:
        """The minutes with ``minute_ts >= since_ts`` (48 h at most), oldest first."""
        key = minutes_key(scope, scope_id)
        members = cast(list[bytes], self.client.zrangebyscore(key, since_ts, "+inf"))
        return [msgspec.json.decode(m, type=FootfallMinute) for m in members]

    def hours(self, store_id: str, start_ts: int, end_ts: int) -> list[StoreHour]:
        """The store-hours with ``start_ts <= hour_ts < end_ts``, oldest first."""
        key = hours_key(store_id)
        index = cast(list[bytes], self.client.zrangebyscore(key, start_ts, f"({end_ts}"))
        if not index:
            return []
        pipe = self.client.pipeline(transaction=False)
        for hour_ts in index:
            pipe.hgetall(hour_key(store_id, int(hour_ts)))
        return [_hour_from_hash(_texts(raw)) for raw in pipe.execute() if raw]


def _texts(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _minute_from_hash(fields: dict[str, str]) -> FootfallMinute:
    """A live hash as its minute (one written before ``refunds`` and ``payments`` has neither)."""
    values: dict[str, Any] = {**fields, **{f: int(fields[f]) for f in _MINUTE_INT_FIELDS if f in fields}}
    if "payments" in fields:
        values["payments"] = msgspec.json.decode(fields["payments"])
    return msgspec.convert(values, type=FootfallMinute)


def _hour_from_hash(fields: dict[str, str]) -> StoreHour:
    values: dict[str, Any] = {"mall_id": fields["mall_id"], "store_id": fields["store_id"]}
    values.update({f: int(fields[f]) for f in _HOUR_INT_FIELDS})
    values.update({f: float(fields[f]) if fields[f] else None for f in _HOUR_FLOAT_FIELDS})
    values["dwell_buckets"] = tuple(int(fields[label]) for label in DWELL_BUCKET_LABELS)
    return msgspec.convert(values, type=StoreHour)

