"""``storepulse eval alerts``: the sales-drop detector against labelled incidents.

Generates the labelled scenario of ``simulators.sales_drops`` (stores of mixed sizes over
weeks, with injected drops, traffic dips and payment outages, holidays and closures, each
incident labelled with the sales it should have had), runs one ``SalesDropDetector`` and
one ``DropAlerter`` per store over the store's net sales per 5-minute bucket (score, then
learn, bucket by bucket, as the engine will), and matches the alerts with the labels.

Matching (``score_alerts``): an alert *matches* an incident of its store when it fires
inside the incident or within ``GRACE_MS`` after its end (a drop is noticed when sales
have been short long enough); the first such alert is the incident's, and its delay is
its firing time minus the incident's start. An alert that matches no incident is false.

- ``recall_50``: detected share of the *detectable* incidents (at least 10 expected sales
  missing) that took 50% or more of the sales; ``recall_detectable`` of all detectable
  ones; ``recall_all`` of every incident (a drop at a quiet store can hide in the noise).
- ``recall_50_missing30``: as ``recall_50`` for incidents that took 30 or more expected
  sales (docs/alerts.md says why 10 missing sales is below what any detector can tell
  from Poisson noise at a useful precision).
- ``precision``: alerts that match an incident, of all alerts.
- ``median_delay_s``: over detected incidents.
- ``false_alerts_per_store_30d``: false alerts per store per 30 days of the scenario.
- ``cause_named``: per kind of incident, the share of detected ones whose alert's context
  named the cause right (a payment outage as that method, a traffic dip as traffic, a drop
  with normal footfall as conversion).

The last line printed is a JSON object with those fields.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

GRACE_MS = 3_600_000  # an alert up to an hour after an incident's end still belongs to it


@dataclass(frozen=True)
class Alert:
    """One firing alert of a store, from ``fired_ms`` until ``resolved_ms`` (None: still
    firing), with the cause its context named when it fired (``flows.drop_context``)."""

    store_id: str
    fired_ms: int
    resolved_ms: int | None
    cause: str = ""


@dataclass(frozen=True)
class Incident:
    """What ``score_alerts`` needs of a label."""

    store_id: str
    start_ms: int
    end_ms: int
    depth: float
    detectable: bool
    cause: str = "drop"  # "drop" (conversion), "traffic" or "payment:<method>"
    missing: float = 0.0  # the expected sales the incident took


def incidents_of(scenario: Any) -> list[Incident]:
    """The labels of a ``simulators.sales_drops`` scenario, as ``score_alerts`` takes them."""
    return [
        Incident(x.store_id, x.start_ms, x.end_ms, x.depth, x.detectable, x.cause, x.missing_txns)
        for x in scenario.labels
    ]


def score_alerts(incidents: Sequence[Incident], alerts: Iterable[Alert], *, stores: int, days: float) -> dict[str, Any]:
    """Recall, precision, delay and false alerts, as the module docstring defines them.

    >>> hour = 3_600_000
    >>> incidents = [Incident("S1", 10 * hour, 12 * hour, 0.6, True),
    ...              Incident("S2", 10 * hour, 11 * hour, 0.4, False)]
    >>> alerts = [Alert("S1", 10 * hour + 1_200_000, 12 * hour), Alert("S1", 40 * hour, None)]
    >>> r = score_alerts(incidents, alerts, stores=2, days=30)
    >>> r["recall_50"], r["recall_all"], r["precision"], r["median_delay_s"], r["false_alerts_per_store_30d"]
    (1.0, 0.5, 0.5, 1200.0, 0.5)
    """
    by_store: dict[str, list[Incident]] = {}
    for incident in incidents:
        by_store.setdefault(incident.store_id, []).append(incident)
    detected: dict[Incident, int] = {}  # incident -> delay (ms) of its first alert
    named: dict[Incident, str] = {}  # incident -> the cause its first alert named
    matched = false = 0
    for alert in alerts:
        owner = next(
            (i for i in by_store.get(alert.store_id, ()) if i.start_ms <= alert.fired_ms <= i.end_ms + GRACE_MS),
            None,
        )
        if owner is None:
            false += 1
            continue
        matched += 1
        delay = alert.fired_ms - owner.start_ms
        if owner not in detected or delay < detected[owner]:
            detected[owner], named[owner] = delay, alert.cause

    def recall(chosen: list[Incident]) -> float | None:
        return round(sum(1 for i in chosen if i in detected) / len(chosen), 4) if chosen else None

    total = matched + false
    return {
        "incidents": len(incidents),
        "detectable": sum(1 for i in incidents if i.detectable),
        "detectable_50": sum(1 for i in incidents if i.detectable and i.depth >= 0.5),
        "recall_50": recall([i for i in incidents if i.detectable and i.depth >= 0.5]),
        "recall_detectable": recall([i for i in incidents if i.detectable]),
        "recall_all": recall(list(incidents)),
        "recall_50_missing30": recall([i for i in incidents if i.missing >= 30 and i.depth >= 0.5]),
        "alerts": total,
        "false_alerts": false,
        "precision": round(matched / total, 4) if total else None,
        "median_delay_s": statistics.median(detected.values()) / 1000 if detected else None,
        "median_delay_s_by_rate": delay_by_rate(detected),
        "false_alerts_per_store_30d": round(false / stores / (days / 30), 4) if stores and days else None,
        "cause_named": cause_named(named),
    }


RATE_BANDS = ((0.0, "<20/h"), (20.0, "20-60/h"), (60.0, ">=60/h"))


def expected_per_hour(incident: Incident) -> float:
    """The sales an hour the store should have made during the incident (from its label)."""
    hours = max(incident.end_ms - incident.start_ms, 1) / 3_600_000
    return incident.missing / max(incident.depth, 1e-9) / hours


def delay_by_rate(detected: dict[Incident, int]) -> dict[str, float]:
    """Median delay (s) of the detected incidents by how busy the store should have been:
    evidence accrues per expected sale, so delay shrinks as the rate grows (docs/alerts.md).

    >>> hour = 3_600_000
    >>> busy, quiet = Incident("S1", 0, hour, 0.5, True, missing=50), Incident("S2", 0, hour, 0.5, True, missing=5)
    >>> delay_by_rate({busy: 1_200_000, quiet: 5_400_000})
    {'<20/h': 5400.0, '>=60/h': 1200.0}
    """
    bands: dict[str, list[int]] = {}
    for incident, delay in detected.items():
        rate = expected_per_hour(incident)
        band = [name for floor, name in RATE_BANDS if rate >= floor][-1]
        bands.setdefault(band, []).append(delay)
    return {name: statistics.median(bands[name]) / 1000 for _, name in RATE_BANDS if name in bands}


def cause_named(named: dict[Incident, str]) -> dict[str, float]:
    """Per kind of incident (drop, traffic, payment), the share of the detected ones whose
    first alert named the cause right: a drop as ``conversion``, a traffic dip as
    ``traffic``, a payment outage as ``payment:<its method>``."""
    right: dict[str, list[bool]] = {}
    for incident, cause in named.items():
        kind = incident.cause.split(":")[0]
        expected = "conversion" if incident.cause == "drop" else incident.cause
        right.setdefault(kind, []).append(cause == expected)
    return {kind: round(sum(oks) / len(oks), 4) for kind, oks in sorted(right.items())}


def run_detectors(scenario: Any) -> list[Alert]:
    """Per store, over its buckets in order, the engine's own ``flows.sales_watch.StoreWatch``
    (a detector of net sales, one of footfall for its expectation, the alerter and the
    alert context): each bucket goes in as one closed minute, which closes the one before."""
    from connectors.catalog import Store
    from flows.alert_notices import AlertNotice
    from flows.sales_watch import StoreWatch

    by_method = sales_by_method(scenario)
    alerts: list[Alert] = []
    for s in scenario.stores:
        # A holiday or closure the detector has no factor for is neither scored nor learned.
        days_off = dict.fromkeys([*scenario.holidays, *closed_dates(scenario, s)])
        store = Store(store_id=s.store_id, merchant_id="-", name=s.store_id, category="-", tz=s.tz,
                      lat=0.0, lon=0.0, hours=s.hours or "00:00-00:00")  # fmt: skip
        watch = StoreWatch.for_store(store, days_off, scenario.bucket_ms)
        methods = by_method[s.store_id]
        visitors = scenario.footfall[s.store_id].tolist()
        counts = scenario.bucket_counts(s.store_id).tolist()
        firing: dict[Any, tuple[int, str]] = {}  # fingerprint -> (fired_ms, cause)
        for i in range(len(counts) + 1):  # one more: it closes the last bucket
            ts = scenario.bucket_start(i)
            n, paid, seen = (counts[i], methods[i], visitors[i]) if i < len(counts) else (0, {}, 0)
            for out in watch.minute(ts, sales=n, refunds=0, payments=paid, devices=seen):
                if isinstance(out, AlertNotice) and out.status == "firing":
                    firing[out.fingerprint] = (ts - scenario.bucket_ms, out.cause)  # the bucket just closed
                elif isinstance(out, AlertNotice) and out.fingerprint in firing:
                    fired, cause = firing.pop(out.fingerprint)
                    alerts.append(Alert(s.store_id, fired, out.ends_at_ms, cause))
        alerts.extend(Alert(s.store_id, fired, None, cause) for fired, cause in firing.values())
    return alerts


def sales_by_method(scenario: Any) -> dict[str, list[dict[str, int]]]:
    """Per store and bucket, the sales (not refunds) per payment method."""
    out: dict[str, list[dict[str, int]]] = {s.store_id: [{} for _ in range(scenario.buckets)] for s in scenario.stores}
    for txn in scenario.txns:
        if not txn.refund:
            bucket = out[txn.store_id][(txn.ts - scenario.start_ms) // scenario.bucket_ms]
            bucket[txn.payment] = bucket.get(txn.payment, 0) + 1
    return out


def closed_dates(scenario: Any, store: Any) -> set[str]:
    """Local dates the store does not open: its announced closures and closed weekdays."""
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    first = datetime.fromtimestamp(scenario.start_ms / 1000, ZoneInfo(store.tz)).date()
    dates = {d for s, d in scenario.closures if s == store.store_id}
    for n in range(scenario.days + 1):
        day = first + timedelta(days=n)
        if day.weekday() in store.closed_weekdays:
            dates.add(day.isoformat())
    return dates


def evaluate_alerts(seed: int, *, as_json: bool) -> int:
    """Generate, detect, score; print a table (unless ``as_json``) and the JSON result."""
    from simulators.sales_drops import drop_scenario

    started = time.monotonic()
    scenario = drop_scenario(seed)
    generated = time.monotonic() - started
    started = time.monotonic()
    alerts = run_detectors(scenario)
    detect_s = time.monotonic() - started
    incidents = incidents_of(scenario)
    result = {
        "seed": seed,
        "stores": len(scenario.stores),
        "days": scenario.days,
        "transactions": len(scenario.txns),
        **score_alerts(incidents, alerts, stores=len(scenario.stores), days=scenario.days),
        "generate_s": round(generated, 2),
        "detect_s": round(detect_s, 2),
    }
    if not as_json:
        print(f"sales-drop alerts: seed {seed}, {result['stores']} stores, {result['days']} days")
        for name in ("incidents", "detectable", "detectable_50", "recall_50", "recall_detectable", "recall_all",
                     "recall_50_missing30",
                     "alerts", "false_alerts", "precision", "median_delay_s", "false_alerts_per_store_30d"):
            print(f"{name:<28} {result[name]}")
        print(f"{'median delay s by rate':<28} {result['median_delay_s_by_rate']}")
        print(f"{'cause named right':<28} {result['cause_named']}")
    print(json.dumps(result, sort_keys=True))
    return 0
