"""Injected bad records: a plain classifier of the emitted bytes finds exactly the counts
the truth claims, per topic and reason."""

from __future__ import annotations

import json
from collections import Counter

import msgspec
import pytest

from connectors.schemas import MemberEvent, ProbeReport, Transaction
from simulators.mall import MallSimulator
from simulators.scenario import Scenario

TYPES = {"wifi.probes": ProbeReport, "pos.transactions": Transaction,
         "members.events": MemberEvent}
DAY_MS = 86_400_000


def classify(topic: str, value: bytes, write_ts: int, sensors: set[str], stores: set[str]
             ) -> str | None:
    """The reason a careful consumer rejects a message, or None if it is good."""
    if len(value) > 1 << 20:
        return "oversized"
    try:
        doc = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "bad_json"
    try:
        msg = msgspec.convert(doc, type=TYPES[topic], strict=True)
    except msgspec.ValidationError:
        return "bad_schema"
    if topic == "wifi.probes" and msg.sensor_id not in sensors:
        return "unknown_sensor"
    if topic == "pos.transactions":
        if msg.store_id not in stores:
            return "unknown_store"
        if msg.amount < 0:
            return "bad_value"
    times = [o.ts for o in msg.observations] if getattr(msg, "observations", None) else [msg.ts]
    if any(t > write_ts + DAY_MS for t in times):
        return "ts_future"
    if any(t < write_ts - 30 * DAY_MS for t in times):
        return "ts_past"
    return None


@pytest.fixture(scope="module")
def bad_run():
    scenario = Scenario.load("bad-input").replace(
        start_date="2025-03-14", shoppers_per_mall_per_day=600, probe_interval_s=120.0)
    sim = MallSimulator(scenario, seed=8)
    return sim, list(sim.events())


def test_classifier_agrees_with_the_injected_counts(bad_run) -> None:
    sim, events = bad_run
    sensors = {s.sensor_id for s in sim.catalog.sensors}
    stores = {s.store_id for s in sim.catalog.stores}
    found: Counter[tuple[str, str]] = Counter()
    for e in events:
        reason = classify(e.topic, e.value, e.ts, sensors, stores)
        if reason is not None:
            found[(e.topic, reason)] += 1
    assert dict(found) == sim.truth.bad_counts()
    reasons = {r for _, r in found}
    assert reasons == {"bad_json", "bad_schema", "bad_value", "unknown_sensor",
                       "unknown_store", "ts_future", "ts_past", "oversized"}


def test_share_and_spread_per_topic(bad_run) -> None:
    sim, events = bad_run
    per_topic = Counter(e.topic for e in events)
    bad = sim.truth.bad_counts()
    for topic, n in per_topic.items():
        total = sum(c for (t, _), c in bad.items() if t == topic)
        assert abs(total - 0.05 * n) <= 1, topic
        assert 1 <= bad[(topic, "oversized")] <= 2
    probes = {r: c for (t, r), c in bad.items() if t == "wifi.probes"}
    # missing and mistyped fields are both bad_schema: twice the share of each other kind
    assert probes["bad_schema"] == pytest.approx(2 * probes["bad_json"], abs=3)
    assert probes["unknown_sensor"] == pytest.approx(probes["bad_json"], abs=2)
    assert probes["ts_future"] == pytest.approx(probes["bad_json"], abs=2)


def test_replaced_sales_leave_the_truth(bad_run) -> None:
    sim, events = bad_run
    stores = {s.store_id for s in sim.catalog.stores}
    good: Counter[str] = Counter()
    for e in events:
        if e.topic != "pos.transactions" or len(e.value) > 1 << 20:
            continue
        try:
            t = msgspec.json.decode(e.value, type=Transaction)
        except msgspec.DecodeError:
            continue
        if t.type == "sale" and t.store_id in stores and t.amount > 0 and abs(t.ts - e.ts) < 1000:
            good[t.store_id] += 1
    assert {s: c for s, (c, _) in sim.truth.sales_by_store().items()} == dict(good)
