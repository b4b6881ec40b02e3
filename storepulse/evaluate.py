"""``storepulse eval footfall``: the engine's footfall against the simulator's truth.

Runs a seeded scenario through the real dataflow in-process and compares, per store and
UTC hour, the visitors the engine counted with the true visitors (people with a phone who
stayed at least the store's minimum dwell), for phones with stable MACs and for all; and
the median dwell of all visits. The last line printed is a JSON object.

``visitors_mape_*`` is the mean over store-hours with true visitors of
``|engine - truth| / truth``; ``visitors_wape_*`` is ``sum |engine - truth| / sum truth``.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from typing import Any

from bytewax.testing import TestingSink, run_main

from connectors.schemas import Visit
from flows.engine import Sinks, Sources, build_flow
from storepulse.settings import Settings

THRESHOLDS = {"visitors_mape_stable": 0.05, "visitors_mape_all": 0.10, "dwell_median_error_s": 60.0}
HOUR_MS = 3_600_000


def errors(engine: dict[Any, int], truth: dict[Any, int]) -> tuple[float, float]:
    """(MAPE over keys with truth > 0, WAPE over all keys).

    >>> errors({"a": 9, "b": 22, "c": 1}, {"a": 10, "b": 20})
    (0.1, 0.1333)
    """
    keys = [k for k, t in truth.items() if t > 0]
    mape = sum(abs(engine.get(k, 0) - truth[k]) / truth[k] for k in keys) / len(keys) if keys else 0.0
    total = sum(truth.values())
    wape = sum(abs(engine.get(k, 0) - truth.get(k, 0)) for k in engine.keys() | truth.keys()) / total if total else 0.0
    return round(mape, 4), round(wape, 4)


def run_footfall(scenario: str, seed: int) -> tuple[Any, list[Visit], dict[str, Any]]:
    """Simulate, run the engine in-process; returns (simulator, visits, run facts)."""
    from simulators.mall import MallSimulator
    from simulators.scenario import Scenario
    from simulators.source import SimulatorSource

    started = time.monotonic()
    sim = MallSimulator(Scenario.load(scenario), seed)
    events = list(sim.events())
    generated = time.monotonic() - started
    # A fixed key: the same scenario and seed give exactly the same result, run after run.
    settings = Settings(mac_hash_key=b"storepulse-eval", max_event_age_s=10 * 365 * 86400.0)
    out: list[Any] = []
    dead: list[Any] = []
    flow = build_flow(
        settings,
        sources=Sources(
            probes=SimulatorSource([e for e in events if e.topic == "wifi.probes"], partitions={"wifi.probes": 4}),
            transactions=SimulatorSource(
                [e for e in events if e.topic == "pos.transactions"], partitions={"pos.transactions": 2}
            ),
        ),
        sinks=Sinks(deadletter={"deadletter": TestingSink(dead)}, footfall={"footfall": TestingSink(out)}),
        catalog=lambda: sim.catalog,
    )
    started = time.monotonic()
    run_main(flow)
    facts = {
        "messages": len(events),
        "generate_s": round(generated, 2),
        "engine_s": round(time.monotonic() - started, 2),
        "dead_letters": len(dead),
    }
    return sim, [v for v in out if isinstance(v, Visit)], facts


def evaluate_footfall(scenario: str, seed: int, *, as_json: bool) -> int:
    sim, visits, facts = run_footfall(scenario, seed)
    min_dwell = {s.store_id: s.min_dwell_s for s in sim.catalog.sensors if s.store_id is not None}
    truth = sim.truth
    result: dict[str, Any] = {"scenario": scenario, "seed": seed, **facts}
    for kind in ("stable", "all"):
        engine = Counter(
            (v.store_id, v.start_ts // HOUR_MS * HOUR_MS) for v in visits if kind == "all" or not v.randomized
        )
        true = truth.visitors_by_store_hour(kind, min_dwell)
        mape, wape = errors(engine, true)
        result[f"visitors_mape_{kind}"] = mape
        result[f"visitors_wape_{kind}"] = wape
        result[f"visitors_engine_{kind}"] = sum(engine.values())
        result[f"visitors_truth_{kind}"] = sum(true.values())
        result[f"store_hours_{kind}"] = sum(1 for t in true.values() if t > 0)
    engine_median = statistics.median(v.dwell_s for v in visits) if visits else 0.0
    truth_median = truth.dwell_median_s("all", min_dwell)
    result["dwell_median_engine_s"] = round(engine_median, 1)
    result["dwell_median_truth_s"] = round(truth_median, 1)
    result["dwell_median_error_s"] = round(abs(engine_median - truth_median), 1)
    result["pass"] = all(result[k] <= v for k, v in THRESHOLDS.items())
    if not as_json:
        print(f"footfall evaluation: scenario {scenario!r}, seed {seed}")
        print(f"{'measure':<24} {'engine':>10} {'truth':>10} {'error':>8} {'limit':>8}")
        for kind in ("stable", "all"):
            limit = THRESHOLDS[f"visitors_mape_{kind}"]
            print(
                f"{'visitors (' + kind + ')':<24} {result[f'visitors_engine_{kind}']:>10} "
                f"{result[f'visitors_truth_{kind}']:>10} {result[f'visitors_mape_{kind}']:>8.1%} {limit:>8.0%}"
            )
        print(
            f"{'median dwell (s)':<24} {engine_median:>10.0f} {truth_median:>10.0f} "
            f"{result['dwell_median_error_s']:>8.0f} {THRESHOLDS['dwell_median_error_s']:>8.0f}"
        )
        print("error: MAPE over store-hours with true visitors; dwell: absolute difference of medians")
    print(json.dumps(result, sort_keys=True))
    return 0
