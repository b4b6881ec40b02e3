"""People present in Redis: per sensor, zone and store, the newest closed 5-minute window
and a 48-hour series, with the distinct MACs and devices behind each estimate.

Writes ``connectors.schemas.PeopleCount`` records (``flows.footfall`` makes one per sensor
and closed 5-minute event-time window in which the sensor heard anything). A record counts
towards three scopes (``scopes_of``): its sensor, its zone and its store (none for a sensor
outside any store). A zone's or store's window is the sum over its sensors' records of that
window: ``people``, ``macs`` and ``devices`` are each summed (a phone heard by two sensors
of one store counts twice; most zones and stores have one sensor).

Where the sums are made: in Redis, by the write script, from every sensor's part kept in
the window's series member. The footfall step closes all windows of a site in one go
(``flows.footfall``: ``_close`` calls ``_close_people`` for every sensor of the site, into
one output list), so the records of one window of a store usually reach the sink together;
but not always in one batch: the dataflow may cut a long output list into several sink
batches, a sensor missing from the catalog at the close has its windows closed at a later
close, and a replay after a restart may start between them. Summing per sink batch would
then overwrite a store's window with a partial sum; summing from parts kept in Redis gives
the same total whatever the batches and their order, and a replay rewrites the same parts.
A sensor moved to another zone or store keeps its parts in the old one's windows.

Every ``write`` is one non-transactional pipeline of one Lua call per scope (one round trip
to a single server, one per node on a Cluster). Idempotent and replay-safe.

Key layout (the cross-service interface). ``<scope>`` is ``sensor``, ``zone`` or ``store``;
the id is in literal braces, a Redis Cluster hash tag, so the keys of one scope share a
slot. Timestamps are epoch milliseconds UTC (``window_ts``: the window's start).

``sp:people:<scope>:{<id>}:live`` (hash, TTL 48 h from the last write)
    The newest closed window heard: ``scope``, ``scope_id``, ``mall_id``, ``window_ts``,
    ``people`` (float, the estimate summed over the scope's sensors), ``macs``, ``devices``
    (integers, summed likewise) and ``sensors`` (how many sensors' records are in the sums),
    every field always present; numbers as decimal text (floats with 15 significant
    digits, or 17 where 15 would not read back the same number; the sums are added in sensor id
    order). Replaced whole only by a window whose
    ``window_ts`` is not older (an equal one is rewritten: another sensor's part came), so
    a replay never moves it backwards. A window in which none of the scope's sensors heard
    anything has no record: a ``window_ts`` older than the newest closed window of the mall
    means the scope was quiet since.
``sp:people:<scope>:{<id>}:windows`` (sorted set, TTL 48 h from the last write)
    score ``window_ts``, member a JSON object: the live hash's fields and ``parts``, each
    sensor's own ``[people, macs, devices]`` by sensor id (sorted; the sums are made from
    them). One member per window, rewritten as parts come. Trimmed on write to the 48 h
    that end with its newest window: scores <= newest - 48 h go.

>>> live_key("store", "S1"), windows_key("sensor", "AP-0101")
('sp:people:store:{S1}:live', 'sp:people:sensor:{AP-0101}:windows')
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, Literal, cast

import msgspec

from connectors.schemas import PeopleCount
from state.hashes import HashCodec, encode_value
from state.redis import Client, run_scripted

Scope = Literal["sensor", "zone", "store"]
WINDOWS_KEPT_MS = 48 * 3600 * 1000
TTL_S = 48 * 3600


class ScopePeople(msgspec.Struct, kw_only=True, frozen=True):
    """One scope's people in one window, summed over its ``sensors`` records of it."""

    scope: Scope
    scope_id: str
    mall_id: str
    window_ts: int
    people: float
    macs: int
    devices: int
    sensors: int


_CODEC = HashCodec(ScopePeople)


def live_key(scope: str, scope_id: str) -> str:
    return f"sp:people:{scope}:{{{scope_id}}}:live"


def windows_key(scope: str, scope_id: str) -> str:
    return f"sp:people:{scope}:{{{scope_id}}}:windows"


def scopes_of(record: PeopleCount) -> list[tuple[Scope, str]]:
    """The scopes a record counts towards: its sensor, its zone and its store, if any.

    >>> r = PeopleCount(sensor_id="AP1", zone="S1-floor", store_id="S1", mall_id="M1",
    ...                 window_ts=0, people=1.5, macs=4, devices=2)
    >>> scopes_of(r)
    [('sensor', 'AP1'), ('zone', 'S1-floor'), ('store', 'S1')]
    >>> scopes_of(msgspec.structs.replace(r, store_id=None))
    [('sensor', 'AP1'), ('zone', 'S1-floor')]
    """
    scopes: list[tuple[Scope, str]] = [("sensor", record.sensor_id), ("zone", record.zone)]
    if record.store_id is not None:
        scopes.append(("store", record.store_id))
    return scopes


# KEYS[1] live hash, KEYS[2] windows zset (one scope). ARGV[1] window ms, ARGV[2] ttl s,
# ARGV[3] scope, ARGV[4] scope id, ARGV[5] mall id, then per record 5 values: window_ts,
# sensor id, people, macs, devices. Each window's member keeps every sensor's part; the
# sums are made from the parts, so the order and batching of the records do not matter.
# Returns 1 if the live hash was written.
_PEOPLE_LUA = """
local function num(x)
  local s = string.format('%.15g', x)
  if tonumber(s) ~= x then s = string.format('%.17g', x) end
  return s
end
local window, ttl = tonumber(ARGV[1]), ARGV[2]
local scope, scope_id, mall = ARGV[3], ARGV[4], ARGV[5]
local windows, order = {}, {}
for i = 6, #ARGV, 5 do
  local ts = ARGV[i]
  local parts = windows[ts]
  if not parts then
    parts = {}
    local member = redis.call('ZRANGEBYSCORE', KEYS[2], ts, ts)[1]
    if member then
      for sensor, part in pairs(cjson.decode(member).parts) do
        parts[sensor] = {num(part[1]), num(part[2]), num(part[3])}
      end
    end
    windows[ts] = parts
    order[#order + 1] = ts
  end
  parts[ARGV[i + 1]] = {num(tonumber(ARGV[i + 2])), ARGV[i + 3], ARGV[i + 4]}
end
local newest, newest_fields = nil, nil
for _, ts in ipairs(order) do
  local parts, sensors = windows[ts], {}
  for sensor in pairs(parts) do sensors[#sensors + 1] = sensor end
  table.sort(sensors)
  local people, macs, devices, listed = 0, 0, 0, {}
  for _, sensor in ipairs(sensors) do
    local part = parts[sensor]
    people = people + tonumber(part[1])
    macs = macs + tonumber(part[2])
    devices = devices + tonumber(part[3])
    listed[#listed + 1] = cjson.encode(sensor) .. ':[' .. part[1] .. ',' .. part[2] .. ',' .. part[3] .. ']'
  end
  local fields = {'scope', scope, 'scope_id', scope_id, 'mall_id', mall, 'window_ts', ts,
                  'people', num(people), 'macs', num(macs), 'devices', num(devices),
                  'sensors', tostring(#sensors)}
  local json = {}
  for f = 1, #fields, 2 do
    local value = fields[f + 1]
    if f <= 5 then value = cjson.encode(value) end
    json[#json + 1] = '"' .. fields[f] .. '":' .. value
  end
  json[#json + 1] = '"parts":{' .. table.concat(listed, ',') .. '}'
  redis.call('ZREMRANGEBYSCORE', KEYS[2], ts, ts)
  redis.call('ZADD', KEYS[2], ts, '{' .. table.concat(json, ',') .. '}')
  if newest == nil or tonumber(ts) >= tonumber(newest) then
    newest, newest_fields = ts, fields
  end
end
local written = 0
local current = redis.call('HGET', KEYS[1], 'window_ts')
if newest and ((not current) or tonumber(current) <= tonumber(newest)) then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], unpack(newest_fields))
  written = 1
end
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')[2]
if last then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', tonumber(last) - window))
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return written
"""
_SHA = hashlib.sha1(_PEOPLE_LUA.encode()).hexdigest()


class PeopleStore:
    """Writes and reads the people keys of the module docstring."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def write(self, records: Sequence[PeopleCount]) -> int:
        """Write a batch in one pipeline (one script call per scope). Returns how many
        live hashes were written. Raises redis errors; safe to retry whole."""
        by_scope: dict[tuple[Scope, str], tuple[str, list[str]]] = {}
        for record in records:
            if not isinstance(record, PeopleCount):
                raise TypeError(f"PeopleStore.write: unexpected {type(record).__name__}")
            part = [encode_value(int(record.window_ts)), record.sensor_id, encode_value(float(record.people)),
                    encode_value(int(record.macs)), encode_value(int(record.devices))]  # fmt: skip
            for scope in scopes_of(record):
                _, args = by_scope.setdefault(scope, (record.mall_id, []))
                args += part
        if not by_scope:
            return 0

        def pipeline() -> Any:
            pipe: Any = self.client.pipeline(transaction=False)
            for (scope, scope_id), (mall_id, args) in by_scope.items():
                # execute_command: redis-py blocks the evalsha method in cluster pipelines
                pipe.execute_command("EVALSHA", _SHA, 2, live_key(scope, scope_id), windows_key(scope, scope_id),
                                     WINDOWS_KEPT_MS, TTL_S, scope, scope_id, mall_id, *args)  # fmt: skip
            return pipe

        return sum(int(r) for r in run_scripted(self.client, pipeline, _PEOPLE_LUA))

    # ---- readers ------------------------------------------------------------------------

    def live(self, scope: Scope, scope_id: str) -> ScopePeople | None:
        """The scope's newest closed window heard, or None."""
        raw = cast(dict[bytes, bytes], self.client.hgetall(live_key(scope, scope_id)))
        return _CODEC.read(raw) if raw else None

    def windows(self, scope: Scope, scope_id: str, since_ts: int) -> list[ScopePeople]:
        """The windows with ``window_ts >= since_ts`` (48 h at most), oldest first."""
        members = cast(list[bytes], self.client.zrangebyscore(windows_key(scope, scope_id), since_ts, "+inf"))
        return [_MEMBER.decode(m) for m in members]

    def parts(self, scope: Scope, scope_id: str, window_ts: int) -> dict[str, tuple[float, int, int]]:
        """Each sensor's own ``(people, macs, devices)`` in one window of the scope."""
        members = cast(list[bytes], self.client.zrangebyscore(windows_key(scope, scope_id), window_ts, window_ts))
        if not members:
            return {}
        return msgspec.json.decode(members[0], type=_Parts).parts


class _Parts(msgspec.Struct):
    parts: dict[str, tuple[float, int, int]]


_MEMBER = msgspec.json.Decoder(ScopePeople)


class PeopleTotals:
    """Each scope's newest window summed over its sensors, as records come (in any order
    and batches), in memory: what the people gauges show (``flows.outputs.MetricsSink``).
    The same sums as the Redis keys, for this process's records only.

    When a mall's newest window moves on, each of its scopes without a record in it is
    quiet (none of its sensors heard anything: the footfall step closes a site's windows
    together) and shows 0 at that window, not its last busy one. Keeps one entry per scope
    and one per mall, small fixed sets, and each scope's parts of its newest window.

    >>> totals = PeopleTotals()
    >>> r = PeopleCount(sensor_id="AP1", zone="Z1", store_id="S1", mall_id="M1",
    ...                 window_ts=0, people=1.5, macs=4, devices=2)
    >>> [(t.scope, t.people) for t in totals.add([r])]
    [('sensor', 1.5), ('zone', 1.5), ('store', 1.5)]
    >>> [(t.scope_id, t.people, t.sensors) for t in totals.add([msgspec.structs.replace(r, sensor_id="AP2")])]
    [('AP2', 1.5, 1), ('Z1', 3.0, 2), ('S1', 3.0, 2)]
    """

    def __init__(self) -> None:
        self._newest: dict[tuple[Scope, str], tuple[str, int, dict[str, PeopleCount]]] = {}  # mall, window, parts
        self._mall_newest: dict[str, int] = {}

    def add(self, records: Iterable[PeopleCount]) -> list[ScopePeople]:
        """Take records; return the totals of every scope that changed, each once (its
        newest window), in the order first changed."""
        changed: dict[tuple[Scope, str], None] = {}
        for record in records:
            mall, ts = record.mall_id, int(record.window_ts)
            if ts > self._mall_newest.get(mall, ts - 1):
                self._mall_newest[mall] = ts
                for scope, (scope_mall, window_ts, _) in self._newest.items():
                    if scope_mall == mall and window_ts < ts:
                        self._newest[scope] = (mall, ts, {})
                        changed[scope] = None
            for scope in scopes_of(record):
                _, window_ts, parts = self._newest.get(scope, (mall, ts, {}))
                if ts < window_ts:
                    continue  # an older window: the gauges show the newest
                if ts > window_ts:
                    parts = {}
                parts[record.sensor_id] = record
                self._newest[scope] = (mall, ts, parts)
                changed[scope] = None
        return [self._total(scope) for scope in changed]

    def _total(self, scope: tuple[Scope, str]) -> ScopePeople:
        mall, ts, parts = self._newest[scope]
        counts = [parts[sensor] for sensor in sorted(parts)]
        people = sum(float(c.people) for c in counts)  # in sensor order, as the script adds them
        return ScopePeople(scope=scope[0], scope_id=scope[1], mall_id=mall, window_ts=ts, people=people,
                           macs=sum(int(c.macs) for c in counts), devices=sum(int(c.devices) for c in counts),
                           sensors=len(counts))  # fmt: skip
