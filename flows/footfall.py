"""Footfall: per zone, store and mall, in event time, from sightings and sales of one site.

Reads ``SiteBatch`` keyed by site (a mall, or a street store that is its own site).
Writes, as event time passes each minute (watermark minus the allowed lateness):

- ``FootfallMinute`` for every zone, store and mall of the site: distinct devices in the
  minute and in the 15 minutes and the hour ending with it, visitors inside, sales;
- ``Visit`` for each completed store visit (``flows.visits`` defines one; each second a
  device counts as inside only the store whose sensor heard it loudest);
- ``DeviceVisit`` next to the ``Visit`` of a non-randomised device (its keyed device id,
  for ``flows.member_visits``; a randomised MAC is never bound to a member): one record
  per closed visit, nothing per sighting. Not for the footfall sinks: the engine splits
  them off (``flows.engine``, step ``split_footfall``);
- ``StoreHour`` running totals whenever an hour of a store changed: visitors (by the hour
  their visit started), passers-by, capture rate, conversion, dwell median and buckets,
  new vs returning, sales;
- ``PeopleCount`` per sensor and closed 5-minute window in which it heard anything:
  people estimated present, with the distinct MACs and devices behind it (``flows.people``;
  the sensor's calibration comes from the catalog);
- ``DeadLetter`` (reason ``late``) for a record whose minute was already closed.

State per site: the event clock, the open minutes, the rolling distinct counters, the
open visit tracks (with where each device was heard from an hour before them, and the
walks between stores measured in the last two hours), the last 36 hours of store-hours,
stable devices' last visit day per store (30 days, for new vs returning; randomised MACs
are always new) and the transaction ids of the last day (duplicates are dropped and
counted). All of it expires.

Guarantee: state is exactly-once through bytewax snapshots; outputs are absolute values
or carry event-time keys, so the replay after a restart rewrites the same values.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import operator
import pickle
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from bytewax.operators import StatefulBatchLogic

from connectors.catalog import Catalog
from connectors.decode import Reason
from connectors.records import DeviceVisit, Sale, Sighting, SiteBatch
from connectors.schemas import DeadLetter, FootfallMinute, PeopleCount, StoreHour, Visit, dwell_bucket
from flows.clock import EventClock
from flows.people import DEFAULT_CALIBRATION, SensorPeople
from flows.rolling import RollingDistinct
from flows.visits import ClosedVisit, Rule, VisitTracker
from storepulse import metrics

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
HOURS_KEPT_MS = 36 * HOUR_MS
TXN_IDS_KEPT_MS = 24 * HOUR_MS
RETURNING_DAYS = 30

Output = FootfallMinute | StoreHour | Visit | PeopleCount | DeviceVisit | DeadLetter
_SENSOR_OF = operator.attrgetter("sensor_id")
Scope = tuple[str, str]  # ("zone" | "store" | "mall", id)


@dataclass
class Minute:
    devices: dict[Scope, set[int]] = field(default_factory=dict)
    inside: dict[str, set[int]] = field(default_factory=dict)  # store -> devices inside
    loudest: dict[tuple[int, int], Sighting] = field(default_factory=dict)  # (device, second)
    sales: dict[str, list[int]] = field(default_factory=dict)  # store -> [count, amount, refunds]
    payments: dict[str, dict[str, int]] = field(default_factory=dict)  # store -> method -> sales

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A minute snapshotted before refunds and payment methods were counted resumes."""
        state.setdefault("payments", {})
        for counts in state["sales"].values():
            counts.extend([0] * (3 - len(counts)))
        self.__dict__.update(state)


@dataclass
class Hour:
    passers_by: set[int] = field(default_factory=set)
    dwells: list[float] = field(default_factory=list)
    stable: int = 0
    returning: int = 0
    sales: int = 0
    sales_amount: int = 0


@dataclass
class SiteFootfall:
    """Footfall state of one site; ``process`` and ``flush`` return outputs."""

    site: str
    lateness_ms: int
    clock: EventClock = field(default_factory=EventClock)
    closed_until: int | None = None
    minutes: dict[int, Minute] = field(default_factory=dict)
    rolling: dict[Scope, RollingDistinct] = field(default_factory=dict)
    visits: VisitTracker = field(default_factory=VisitTracker)
    hours: dict[tuple[str, int], Hour] = field(default_factory=dict)
    last_visit_day: dict[str, dict[int, int]] = field(default_factory=dict)
    txn_ids: dict[str, int] = field(default_factory=dict)
    people: dict[str, SensorPeople] = field(default_factory=dict)  # by sensor

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A site snapshotted before people were counted resumes with no counters."""
        state.setdefault("people", {})
        self.__dict__.update(state)

    def process(self, batch: SiteBatch, catalog: Catalog) -> list[Output]:
        self.clock.observe(batch.source, batch.progress_ts, idle=batch.idle)
        out: list[Output] = []
        accepted = 0
        heard: list[Sighting] = []
        for s in batch.sightings:
            if self._late(s.ts):
                out.append(_late(batch.source, s.offset, s))
            else:
                self._add_sighting(s, catalog)
                heard.append(s)
                accepted += 1
        if heard:
            self._count_people(heard)
        for sale in batch.sales:
            # a repeat of a counted transaction is a duplicate, however late it comes
            if self._late(sale.ts) and sale.txn_id not in self.txn_ids:
                out.append(_late(batch.source, sale.offset, sale))
            elif self._add_sale(sale):
                accepted += 1
        if accepted:
            metrics.INPUT_ACCEPTED.labels(batch.source.rpartition("/")[0]).inc(accepted)
        wm = self.clock.watermark()
        if wm is not None:
            horizon = (wm - self.lateness_ms) // MINUTE_MS * MINUTE_MS
            if self.closed_until is None or horizon > self.closed_until:
                out.extend(self._close(horizon, catalog))
            metrics.EVENT_TIME_LAG.labels(self.site).set(max(0.0, time.time() - wm / 1000))
        return out

    def flush(self, catalog: Catalog) -> list[Output]:
        """Close every minute and visit: the input has ended."""
        return self._close(None, catalog)

    # ---- adding -------------------------------------------------------------------

    def _late(self, ts: int) -> bool:
        return self.closed_until is not None and ts < self.closed_until

    def _add_sighting(self, s: Sighting, catalog: Catalog) -> None:
        minute = self.minutes.get(s.ts // MINUTE_MS * MINUTE_MS)
        if minute is None:
            minute = self.minutes[s.ts // MINUTE_MS * MINUTE_MS] = Minute()
        devices = minute.devices
        for scope in _scopes(self.site, s.zone, s.store_id):
            bucket = devices.get(scope)
            if bucket is None:
                bucket = devices[scope] = set()
            bucket.add(s.device)
        key = (s.device, s.ts // 1000)
        best = minute.loudest.get(key)
        if best is None or (s.rssi, best.sensor_id) > (best.rssi, s.sensor_id):
            minute.loudest[key] = s
        if s.store_id is not None:
            self._hour(s.store_id, s.ts).passers_by.add(s.device)

    def _count_people(self, heard: list[Sighting]) -> None:
        """Hand a batch's sightings to each sensor's people counter. A report holds one
        sensor's observations, so a batch is a few runs of one sensor each."""
        for sensor_id, run in itertools.groupby(heard, key=_SENSOR_OF):
            counter = self.people.get(sensor_id)
            if counter is None:
                counter = self.people[sensor_id] = SensorPeople()
            counter.add(run)

    def _close_people(self, horizon: int | None, catalog: Catalog) -> list[PeopleCount]:
        """Each sensor's 5-minute windows that end by ``horizon`` (all: None), estimated
        with the sensor's calibration from the catalog."""
        out = []
        until = (1 << 62) if horizon is None else horizon
        for sensor_id, counter in list(self.people.items()):
            sensor = catalog.sensor(sensor_id)
            if sensor is None:  # removed from the catalog: its counter goes with it
                del self.people[sensor_id]
                continue
            counter.calibrate(sensor.people or DEFAULT_CALIBRATION)
            for w in counter.close(until):
                out.append(
                    PeopleCount(
                        sensor_id=sensor_id,
                        zone=sensor.zone,
                        store_id=sensor.store_id,
                        mall_id=self.site,
                        window_ts=w.window_start_ts,
                        people=round(w.people or 0.0, 2),
                        macs=int(w.features["macs"]),
                        devices=int(w.features["chains"] + w.features["stable_np"]),
                    )
                )
        return out

    def _place(self, minute: Minute, catalog: Catalog) -> None:
        """Put each device, each second of a closed minute, inside at most one store: the one
        whose sensor heard it loudest that second (a corridor sensor winning means outside),
        and only at or above that sensor's ``visit_rssi``. Decided at close, when every
        sensor's report of the minute is in, so it does not depend on arrival order."""
        rules: dict[str, Rule] = {}  # one per sensor, not one per inside-second
        for key in sorted(minute.loudest):
            s = minute.loudest[key]
            store_id = s.store_id
            sensor = catalog.sensor(s.sensor_id) if store_id is not None else None
            if store_id is None or sensor is None or s.rssi < sensor.visit_rssi:
                self.visits.heard(s.device, key[1], None)
                continue
            rule = rules.get(sensor.sensor_id)
            if rule is None:
                rule = rules[sensor.sensor_id] = Rule(sensor.min_dwell_s, sensor.visit_timeout_s)
            self.visits.heard(s.device, key[1], store_id, rule.timeout_s)
            self.visits.add(store_id, s.device, s.ts, s.randomized, s.fingerprint, s.seq, rule)
            minute.inside.setdefault(store_id, set()).add(s.device)

    def _add_sale(self, sale: Sale) -> bool:
        """Count a sale; False if its txn_id was already counted (a replayed duplicate)."""
        if sale.txn_id in self.txn_ids:
            metrics.DUPLICATES.labels(sale.store_id).inc()
            return False
        self.txn_ids[sale.txn_id] = sale.ts
        minute = self.minutes.setdefault(sale.ts // MINUTE_MS * MINUTE_MS, Minute())
        counts = minute.sales.setdefault(sale.store_id, [0, 0, 0])
        if sale.refund:
            counts[2] += 1
            return True
        methods = minute.payments.setdefault(sale.store_id, {})
        methods[sale.payment] = methods.get(sale.payment, 0) + 1
        counts[0] += 1
        counts[1] += sale.amount
        hour = self._hour(sale.store_id, sale.ts)
        hour.sales += 1
        hour.sales_amount += sale.amount
        return True

    def _hour(self, store_id: str, ts: int) -> Hour:
        key = (store_id, ts // HOUR_MS * HOUR_MS)
        hour = self.hours.get(key)
        if hour is None:
            hour = self.hours[key] = Hour()
        return hour

    # ---- closing ------------------------------------------------------------------

    def _close(self, horizon: int | None, catalog: Catalog) -> list[Output]:
        out: list[Output] = []
        dirty: set[tuple[str, int]] = set()
        for minute_ts in sorted(m for m in self.minutes if horizon is None or m < horizon):
            out.extend(self._close_minute(minute_ts, self.minutes.pop(minute_ts), catalog, dirty))
        for visit in self.visits.close(horizon):
            out.append(self._count_visit(visit, catalog, dirty))
            if not visit.randomized:  # a randomised MAC's id changes daily: never bound
                out.append(DeviceVisit(visit.device, visit.store_id, visit.start_ts, visit.end_ts))
        out.extend(self._store_hour(key) for key in sorted(dirty))
        out.extend(self._close_people(horizon, catalog))
        if horizon is not None:
            out.extend(self._quiet_scopes(horizon - MINUTE_MS, out, catalog))
            self.closed_until = horizon
            self._expire(horizon)
        return out

    def _quiet_scopes(self, minute_ts: int, closed: list[Output], catalog: Catalog) -> list[FootfallMinute]:
        """A minute for every scope of the site that heard nothing in the newest closed
        minute, so the live view and gauges show it quiet rather than its last busy minute.
        Only the newest closed minute: a gap of any length costs one record per scope."""
        heard = {(m.scope, m.scope_id) for m in closed if isinstance(m, FootfallMinute) and m.minute_ts == minute_ts}
        return [self._record(scope, minute_ts) for scope in catalog.scopes_of_site(self.site) if scope not in heard]

    def _record(
        self,
        scope: Scope,
        minute_ts: int,
        devices: int = 0,
        inside: int = 0,
        sales: tuple[int, int, int] = (0, 0, 0),
        payments: dict[str, int] | None = None,
    ) -> FootfallMinute:
        """One scope's closed minute; the 15-minute and hour counts from its rolling window."""
        index = minute_ts // MINUTE_MS
        rolling = self.rolling.get(scope)
        return FootfallMinute(
            scope=scope[0],  # type: ignore[arg-type]
            scope_id=scope[1],
            mall_id=self.site,
            minute_ts=minute_ts,
            devices=devices,
            devices_15m=rolling.distinct(index, 15) if rolling else 0,
            devices_1h=rolling.distinct(index, 60) if rolling else 0,
            visitors_inside=inside,
            sales=sales[0],
            sales_amount=sales[1],
            refunds=sales[2],
            payments=payments or {},
        )

    def _close_minute(
        self, minute_ts: int, minute: Minute, catalog: Catalog, dirty: set[tuple[str, int]]
    ) -> list[FootfallMinute]:
        self._place(minute, catalog)
        index = minute_ts // MINUTE_MS
        mall = self.site if catalog.mall(self.site) else None
        scopes = set(minute.devices) | {("store", s) for s in minute.sales}
        out = []
        for scope in sorted(scopes):
            kind, scope_id = scope
            if kind == "mall" and mall is None:
                continue  # a street store is its own site; its store scope says it all
            members = minute.devices.get(scope, set())
            rolling = self.rolling.get(scope)
            if rolling is None:
                rolling = self.rolling[scope] = RollingDistinct(60)
            rolling.add_minute(index, members)
            sales = minute.sales.get(scope_id, [0, 0, 0]) if kind == "store" else [0, 0, 0]
            if kind == "mall":
                sales = [sum(c[i] for c in minute.sales.values()) for i in range(3)]
            inside = self._inside(scope_id, minute, minute_ts) if kind == "store" else 0
            payments = minute.payments.get(scope_id) if kind == "store" else None
            out.append(self._record(scope, minute_ts, len(members), inside, (sales[0], sales[1], sales[2]), payments))
            if kind == "store":
                dirty.add((scope_id, minute_ts // HOUR_MS * HOUR_MS))
        return out

    def _inside(self, store_id: str, minute: Minute, minute_ts: int) -> int:
        """Devices inside the store this minute whose visit has lasted the minimum dwell."""
        end_s = (minute_ts + MINUTE_MS) // 1000
        n = 0
        for device in minute.inside.get(store_id, ()):
            rule = self.visits.rule_of(store_id, device)
            if rule is None:
                continue
            since = self.visits.run_start(store_id, device, end_s, end_s - rule.min_dwell_s)
            if since is not None and end_s - since >= rule.min_dwell_s:
                n += 1
        return n

    def _count_visit(self, v: ClosedVisit, catalog: Catalog, dirty: set[tuple[str, int]]) -> Visit:
        returning = False
        if not v.randomized:
            day = _local_day(v.start_ts, catalog.tz_of_site(self.site))
            days = self.last_visit_day.setdefault(v.store_id, {})
            previous = days.get(v.device)
            returning = previous is not None and 0 < day - previous <= RETURNING_DAYS
            days[v.device] = max(day, previous or day)
        hour_ts = v.start_ts // HOUR_MS * HOUR_MS
        hour = self._hour(v.store_id, v.start_ts)
        hour.dwells.append(v.dwell_s)
        hour.stable += not v.randomized
        hour.returning += returning
        dirty.add((v.store_id, hour_ts))
        return Visit(
            mall_id=self.site,
            store_id=v.store_id,
            start_ts=v.start_ts,
            end_ts=v.end_ts,
            dwell_s=round(v.dwell_s, 1),
            randomized=v.randomized,
            returning=returning,
        )

    def _store_hour(self, key: tuple[str, int]) -> StoreHour:
        store_id, hour_ts = key
        h = self.hours[key]
        visitors = len(h.dwells)
        buckets = [0, 0, 0, 0, 0]
        for d in h.dwells:
            buckets[dwell_bucket(d)] += 1
        passers = len(h.passers_by)
        return StoreHour(
            mall_id=self.site,
            store_id=store_id,
            hour_ts=hour_ts,
            visitors=visitors,
            visitors_stable=h.stable,
            new_visitors=visitors - h.returning,
            returning_visitors=h.returning,
            passers_by=passers,
            dwell_median_s=round(statistics.median(h.dwells), 1) if h.dwells else None,
            dwell_buckets=tuple(buckets),  # type: ignore[arg-type]
            sales=h.sales,
            sales_amount=h.sales_amount,
            capture_rate=round(visitors / passers, 4) if passers else None,
            conversion=round(h.sales / visitors, 4) if visitors else None,
        )

    def _expire(self, horizon: int) -> None:
        self.hours = {k: h for k, h in self.hours.items() if k[1] >= horizon - HOURS_KEPT_MS}
        if len(self.txn_ids) > 1024:
            self.txn_ids = {t: ts for t, ts in self.txn_ids.items() if ts >= horizon - TXN_IDS_KEPT_MS}
        today = _local_day(horizon, "UTC")
        for days in self.last_visit_day.values():
            for device in [d for d, day in days.items() if today - day > RETURNING_DAYS + 1]:
                del days[device]


@functools.lru_cache(maxsize=65536)
def _scopes(site: str, zone: str, store_id: str | None) -> tuple[Scope, ...]:
    """The scopes a sighting counts in (built once per sensor, not once per sighting)."""
    if store_id is None:
        return (("zone", zone), ("mall", site))
    return (("zone", zone), ("store", store_id), ("mall", site))


def _local_day(ts_ms: int, tz: str) -> int:
    return dt.datetime.fromtimestamp(ts_ms / 1000, ZoneInfo(tz)).date().toordinal()


def _late(source: str, offset: int, record: Sighting | Sale) -> DeadLetter:
    topic, _, partition = source.rpartition("/")
    metrics.INPUT_REJECTED.labels(topic, Reason.LATE.value).inc()
    return DeadLetter(
        topic=topic,
        partition=int(partition),
        offset=offset,
        reason=Reason.LATE.value,
        detail="event time is behind the site's closed minutes by more than the allowed lateness",
        raw=msgspec.json.encode(record).decode(),
    )


class FootfallLogic(StatefulBatchLogic[SiteBatch, Output, bytes]):
    """bytewax glue: one ``SiteFootfall`` per site, snapshotted as pickled bytes."""

    def __init__(
        self,
        state: SiteFootfall | None,
        lateness_ms: int,
        catalog: Callable[[], Catalog],
        expected_sources: frozenset[str],
    ) -> None:
        self.state = state
        self.lateness_ms = lateness_ms
        self.catalog = catalog
        self.expected_sources = expected_sources

    def on_batch(self, values: list[SiteBatch]) -> tuple[list[Output], bool]:
        catalog = self.catalog()
        if self.state is None:
            clock = EventClock(expected=set(self.expected_sources))
            self.state = SiteFootfall(values[0].site, self.lateness_ms, clock=clock)
        out: list[Output] = []
        for batch in values:
            out.extend(self.state.process(batch, catalog))
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Output], bool]:
        if self.state is None:
            return [], StatefulBatchLogic.RETAIN
        return self.state.flush(self.catalog()), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        metrics.snapshot_taken(time.time())
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)


def footfall_builder(
    lateness_ms: int, catalog: Callable[[], Catalog], expected_sources: frozenset[str]
) -> Callable[[Any], FootfallLogic]:
    """The ``stateful_batch`` builder: a fresh site or one resumed from its snapshot.
    ``expected_sources``: the ``topic/partition`` names a new site's clock waits for."""

    def build(resume: bytes | None) -> FootfallLogic:
        state = pickle.loads(resume) if resume is not None else None
        return FootfallLogic(state, lateness_ms, catalog, expected_sources)

    return build
