"""How `storepulse eval alerts` scores alerts against labelled incidents (hand-worked)."""

from __future__ import annotations

from storepulse.eval_alerts import GRACE_MS, Alert, Incident, score_alerts

H = 3_600_000


def test_an_alert_belongs_to_an_incident_of_its_store_from_its_start_to_an_hour_after_its_end() -> None:
    deep = Incident("S1", 10 * H, 12 * H, 0.8, True)
    shallow = Incident("S1", 30 * H, 31 * H, 0.35, True)
    quiet = Incident("S2", 10 * H, 14 * H, 0.9, False)  # too few sales missing to count for recall
    alerts = [
        Alert("S1", 10 * H - 1, None),  # a millisecond before the start: false
        Alert("S1", 11 * H, 12 * H),  # deep, 1 h late
        Alert("S1", 10 * H + 30 * 60_000, 11 * H),  # deep again, 30 min late: its delay
        Alert("S1", 31 * H + GRACE_MS, None),  # shallow, at the very end of the grace
        Alert("S2", 31 * H, None),  # another store's incident does not count: false
    ]
    r = score_alerts([deep, shallow, quiet], alerts, stores=2, days=15)
    assert (r["recall_50"], r["recall_detectable"], r["recall_all"]) == (1.0, 1.0, round(2 / 3, 4))
    assert (r["alerts"], r["false_alerts"], r["precision"]) == (5, 2, 0.6)
    assert r["median_delay_s"] == statistics_median([1800.0, 3600.0 + GRACE_MS / 1000])
    assert r["false_alerts_per_store_30d"] == 2.0  # 2 false / 2 stores / (15 / 30 days)


def test_no_incident_or_no_alert_is_none_not_a_division_by_zero() -> None:
    r = score_alerts([], [], stores=3, days=30)
    assert (r["recall_50"], r["precision"], r["median_delay_s"], r["false_alerts_per_store_30d"]) == (
        None, None, None, 0.0)  # fmt: skip


def statistics_median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def test_the_detectors_on_a_small_labelled_scenario() -> None:
    # 12 stores, 5 weeks: no incident, no alert; with 8 incidents (5 of them detectable and
    # 50% deep or more), each of those 5 is caught and no alert is false.
    from simulators.sales_drops import drop_scenario
    from storepulse.eval_alerts import run_detectors

    assert run_detectors(drop_scenario(7, stores=12, weeks=5, drops=0)) == []
    scenario = drop_scenario(7, stores=12, weeks=5, drops=8)
    incidents = [
        Incident(x.store_id, x.start_ms, x.end_ms, x.depth, x.detectable, x.cause, x.missing_txns)
        for x in scenario.labels
    ]
    r = score_alerts(incidents, run_detectors(scenario), stores=12, days=scenario.days)
    assert (r["detectable_50"], r["recall_50"], r["false_alerts"]) == (5, 1.0, 0)
    assert r["cause_named"] == {"drop": 1.0, "traffic": 1.0}  # drops as conversion, traffic dips as traffic
