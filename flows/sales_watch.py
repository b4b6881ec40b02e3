"""Sales-drop watch per store: closed minutes -> 5-minute buckets -> detector, alerts, health.

Reads, keyed by store: the footfall step's closed store minutes (``FootfallMinute`` of
scope ``store``: sales, refunds, sales per payment method, devices heard) and the
repurchase step's ``StoreMembers``. The footfall step closes minutes in event time after
the allowed lateness (a later sale is dead-lettered there as ``late``), in order, and
writes a record for every store of its site for the newest minute it closes; so a bucket
is complete when a minute past its end arrives, and buckets with nothing in them are fed
to the detector as zeros. Writes:

- ``SalesBucket`` per store and bucket: net sales (sales - refunds) and the expectation;
- ``AlertNotice`` when a drop alert fires or resolves (``flows.drop_detector``), with the
  context of its window (``flows.drop_context``); severity ``critical`` from an 80% drop;
  the resolved notice carries its firing's context, so receivers see one alert;
- ``StoreHealth`` once an event-time hour, after the detector's cold start (see ``Health``).

Per store (``StoreWatch``): a ``SalesDropDetector`` of net sales, one of footfall (only for
its expectation), the ``DropAlerter`` and the ``DropContext``, the open bucket, the health
sums. The store's time zone, opening hours and holidays come from the catalog and follow
its changes. Deterministic: a replay from a snapshot writes the same records.

>>> from connectors.catalog import Store
>>> store = Store(store_id="S1", merchant_id="M1", name="S1", category="food", tz="UTC",
...               lat=0.0, lon=0.0, hours="00:00-00:00")
>>> watch = StoreWatch.for_store(store, {})
>>> out = watch.minute(0, sales=2, refunds=1, payments={"cash": 2}, devices=10)
>>> out = watch.minute(300_000, sales=0, refunds=0, payments={}, devices=0)  # closes 0-5 min
>>> out[0].net_sales, out[0].expected  # cold start: no expectation yet
(1, None)
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic

from connectors.catalog import Catalog, Store
from connectors.schemas import FootfallMinute, SalesBucket, StoreHealth, StoreMembers
from flows.alert_notices import AlertNotice, Severity
from flows.drop_context import Context, DropContext
from flows.drop_detector import DropAlerter, SalesDropDetector

BUCKET_MS = 300_000
HOUR_MS = 3_600_000
SUSPECT = 0.2  # a drop score from which buckets count into an alert's context window
CRITICAL_DROP_PCT = 80.0
HEALTH_HALFLIFE_BUCKETS = 2016  # a week of 5-minute buckets
_KEEP = 0.5 ** (1 / HEALTH_HALFLIFE_BUCKETS)
HEALTH_WEIGHTS = {"sales": 0.4, "footfall": 0.2, "conversion": 0.2, "repurchase": 0.2}

Output = SalesBucket | StoreHealth | AlertNotice


def severity_of(drop_pct: float) -> Severity:
    """``critical`` from an 80% drop, else ``warning``.

    >>> severity_of(79.9), severity_of(80.0)
    ('warning', 'critical')
    """
    return "critical" if drop_pct >= CRITICAL_DROP_PCT else "warning"


def health_score(
    sales_index: float, footfall_index: float | None, conversion_index: float | None, repurchase: float | None
) -> float:
    """0-100: the weighted mean of the parts that are known (``HEALTH_WEIGHTS``). An index
    (this week against the store's longer-run normal, 1 = normal) counts ``min(index, 2) / 2``;
    the repurchase rate counts as it is. A store at its normal with a 30% repurchase rate:

    >>> health_score(1.0, 1.0, 1.0, 0.3)  # 100 * (0.4*0.5 + 0.2*0.5 + 0.2*0.5 + 0.2*0.3)
    46.0
    >>> health_score(0.5, None, None, None)  # only sales known: 100 * 0.25
    25.0
    """
    parts = {
        "sales": min(sales_index, 2.0) / 2,
        "footfall": None if footfall_index is None else min(footfall_index, 2.0) / 2,
        "conversion": None if conversion_index is None else min(conversion_index, 2.0) / 2,
        "repurchase": repurchase,
    }
    known = {k: v for k, v in parts.items() if v is not None}
    weight = sum(HEALTH_WEIGHTS[k] for k in known)
    return round(100 * sum(HEALTH_WEIGHTS[k] * v for k, v in known.items()) / weight, 2)


@dataclass
class Health:
    """Decayed sums (a week's half-life, open buckets only) of actual sales and footfall and
    of what the store's seasonal normal expects of them, without the detector's recent level:
    an index below 1 says the store sells (or draws) less than it used to at these hours."""

    sales: float = 0.0
    sales_normal: float = 0.0
    footfall: float = 0.0
    footfall_normal: float = 0.0

    def add(self, sales: float, sales_normal: float, footfall: float, footfall_normal: float | None) -> None:
        self.sales = self.sales * _KEEP + sales
        self.sales_normal = self.sales_normal * _KEEP + sales_normal
        if footfall_normal is not None:
            self.footfall = self.footfall * _KEEP + footfall
            self.footfall_normal = self.footfall_normal * _KEEP + footfall_normal

    def record(self, store_id: str, merchant_id: str, ts: int, repurchase: float | None) -> StoreHealth | None:
        if self.sales_normal <= 0:
            return None
        sales_index = self.sales / self.sales_normal
        footfall_index = self.footfall / self.footfall_normal if self.footfall_normal > 0 else None
        conversion_index = sales_index / footfall_index if footfall_index else None
        return StoreHealth(
            store_id=store_id,
            merchant_id=merchant_id,
            as_of_ts=ts,
            score=health_score(sales_index, footfall_index, conversion_index, repurchase),
            sales_index=round(sales_index, 4),
            footfall_index=None if footfall_index is None else round(footfall_index, 4),
            conversion_index=None if conversion_index is None else round(conversion_index, 4),
            repurchase_rate=repurchase,
        )


@dataclass
class StoreWatch:
    """One store's sales watch; ``minute`` takes its closed minutes in order."""

    store_id: str
    merchant_id: str
    sales: SalesDropDetector
    footfall: SalesDropDetector
    alerter: DropAlerter
    context: DropContext = field(default_factory=DropContext)
    hours: str | None = None
    holidays: dict[str, float | None] = field(default_factory=dict)
    tz: str = "UTC"
    bucket_ts: int | None = None  # the open bucket
    net: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    devices: int = 0
    firing: tuple[Context, Severity, int | None] | None = None  # what an alert fired with: context,
    # severity, when the drop began
    health: Health = field(default_factory=Health)
    repurchase: float | None = None

    @classmethod
    def for_store(cls, store: Store, holidays: dict[str, float | None], bucket_ms: int = BUCKET_MS) -> StoreWatch:
        def detector() -> SalesDropDetector:
            return SalesDropDetector(bucket_ms, store.tz, store.hours, holidays)

        return cls(
            store.store_id, store.merchant_id, detector(), detector(), DropAlerter(store.store_id),
            hours=store.hours, holidays=dict(holidays), tz=store.tz,
        )  # fmt: skip

    def follow(self, store: Store, holidays: dict[str, float | None]) -> None:
        """Take the catalog's current time zone, hours, holidays and merchant (a no-op when
        unchanged). What was learned stays, read in the new local time."""
        self.merchant_id = store.merchant_id
        if (store.tz, store.hours, holidays) != (self.tz, self.hours, self.holidays):
            self.tz, self.hours, self.holidays = store.tz, store.hours, dict(holidays)
            for detector in (self.sales, self.footfall):
                detector.set_calendar(store.tz, store.hours, holidays)

    def minute(
        self, minute_ts: int, *, sales: int, refunds: int, payments: dict[str, int], devices: int
    ) -> list[Output]:
        """Add one closed minute; the records of the buckets it completes."""
        bucket_ms = self.sales.bucket_ms
        start = minute_ts // bucket_ms * bucket_ms
        if self.bucket_ts is None:
            self.bucket_ts = start
        out: list[Output] = []
        while start > self.bucket_ts:  # the open bucket is complete; empty ones follow it
            out.extend(self._close_bucket(self.bucket_ts))
            self.bucket_ts += bucket_ms
        if start == self.bucket_ts:  # (an earlier minute cannot come: the footfall step closes in order)
            self.net += sales - refunds
            for method, n in payments.items():
                self.by_method[method] = self.by_method.get(method, 0) + n
            self.devices += devices
        return out

    def members(self, record: StoreMembers) -> None:
        self.repurchase = record.repurchase_rate

    def _close_bucket(self, ts: int) -> list[Output]:
        net, by_method, devices = max(self.net, 0), self.by_method, self.devices
        self.net, self.by_method, self.devices = 0, {}, 0
        expected, footfall_expected = self.sales.expected(ts), self.footfall.expected(ts)
        score = self.sales.score_one(ts, net)
        self.sales.learn_one(ts, net)
        self.footfall.learn_one(ts, devices)
        self.context.observe(ts, by_method, expected, devices, footfall_expected, suspect=score >= SUSPECT)
        out: list[Output] = []
        if expected is not None:
            scale, foot_scale = self.sales.scale, self.footfall.scale
            self.health.add(
                net, expected / scale, devices, None if footfall_expected is None else footfall_expected / foot_scale
            )
        for event in self.alerter.update(ts, score, expected is not None):
            if event.kind == "firing":
                context = self.context.describe()
                self.firing = (context, severity_of(context.drop_pct), self.sales.since_ms)
            if self.firing is None:  # a resolution of an alert fired before a restart without state
                continue
            context, severity, began = self.firing
            out.append(
                AlertNotice.from_event(event, context, merchant_id=self.merchant_id, severity=severity, began_ms=began)
            )
            if event.kind == "resolved":
                self.firing = None
        out.append(
            SalesBucket(
                store_id=self.store_id,
                bucket_ts=ts,
                net_sales=net,
                expected=None if expected is None else round(expected, 3),
                drop_score=round(score, 4),
                firing=self.alerter.fingerprint is not None,
            )
        )
        end = ts + self.sales.bucket_ms
        if end % HOUR_MS == 0:  # the hour's last bucket (buckets close in order, once each)
            record = self.health.record(self.store_id, self.merchant_id, end, self.repurchase)
            if record is not None:
                out.append(record)
        return out


class SalesWatchLogic(StatefulBatchLogic[FootfallMinute | StoreMembers, Output, bytes]):
    """bytewax glue: one ``StoreWatch`` per store, snapshotted as pickled bytes."""

    def __init__(self, state: StoreWatch | None, catalog: Callable[[], Catalog]) -> None:
        self.state = state
        self.catalog = catalog

    def on_batch(self, values: list[FootfallMinute | StoreMembers]) -> tuple[list[Output], bool]:
        out: list[Output] = []
        for value in values:
            if isinstance(value, StoreMembers):
                if self.state is not None:
                    self.state.members(value)
                continue
            watch = self._watch(value.scope_id)
            if watch is None:
                continue
            out.extend(
                watch.minute(
                    value.minute_ts,
                    sales=value.sales,
                    refunds=value.refunds,
                    payments=value.payments,
                    devices=value.devices,
                )
            )
        return out, StatefulBatchLogic.RETAIN

    def _watch(self, store_id: str) -> StoreWatch | None:
        catalog = self.catalog()
        store = catalog.store(store_id)
        if store is None:  # removed from the catalog: go on with its last settings
            return self.state
        holidays = catalog.holidays_of(store_id)
        if self.state is None:
            self.state = StoreWatch.for_store(store, holidays)
        else:
            self.state.follow(store, holidays)
        return self.state

    def snapshot(self) -> bytes:
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)


def store_input(item: object) -> tuple[str, FootfallMinute | StoreMembers] | None:
    """``(store_id, item)`` for a store's closed minute or its members, else None (for
    ``op.filter_map``)."""
    if isinstance(item, FootfallMinute) and item.scope == "store":
        return item.scope_id, item
    if isinstance(item, StoreMembers):
        return item.store_id, item
    return None


def watch_sales(
    step_id: str, items: Stream[tuple[str, FootfallMinute | StoreMembers]], catalog: Callable[[], Catalog]
) -> Stream[Any]:
    """``SalesBucket``, ``AlertNotice`` and ``StoreHealth`` records from ``(store_id, item)``.

    ``step_id`` names the stateful step: it is the recovery key of every store's watch.
    """

    def build(resume: bytes | None) -> SalesWatchLogic:
        return SalesWatchLogic(pickle.loads(resume) if resume is not None else None, catalog)

    outputs = op.stateful_batch(step_id, items, build)
    return op.key_rm(f"unkey_{step_id}", outputs)
