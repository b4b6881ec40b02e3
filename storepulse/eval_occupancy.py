"""``storepulse eval occupancy``: people estimated by the engine against people counted.

Reads lab folders (``storepulse.lab_data``: sightings and minute-by-minute people counts).
With ``--train T --data D``: fits each sensor's calibration (``flows.people``) on T, then
replays D's sightings through the engine's dataflow (``flows.engine.build_flow``: decode,
footfall, the people counters) with those calibrations in its catalog, and scores the
``PeopleCount`` records it writes against D's counts. With ``--data D`` alone: leave-days-out
on D, ``k`` folds of whole local days, each fold replayed through the dataflow with the
calibration fitted on the other folds.

Fitting needs each window's device counts (the features), which the engine does not write
out: ``window_features`` computes them with the engine's own decoder and ``SensorPeople``,
offline. The estimates that are scored always come from the dataflow.

The baseline beside it: distinct MACs with rssi >= -70 in the window, ``a * x + b`` fitted
by least squares on the same training days.

The last line printed is a JSON object: ``windows``, ``mae_occupied``, ``mae_empty``,
``pearson_r``, the same three as ``baseline_*``, per sensor, and the fitted calibrations.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from storepulse.lab_data import LAB_TZ, LabFolder, folds_by_day, local_day, scores, window_of

BASELINE_FLOOR = -70
FLOORS = (-75, -70, -65, -60)  # the signal floors a calibration chooses from
EVAL_KEY = b"storepulse-eval-occupancy-key-0001"  # fixed: the same data gives the same result
Key = tuple[str, int]  # (sensor_id, window start)


class _Head(msgspec.Struct):
    sensor_id: str
    ts: int
    mac: str = ""
    rssi: int = -100


_HEAD = msgspec.json.Decoder(_Head)


def lab_catalog(sensors: Iterable[str], calibrations: dict[str, Any] | None = None) -> Any:
    """A catalog of one site (``LAB``, the lab's time zone) with each sensor its own zone."""
    from connectors.catalog import Catalog, Mall, Sensor

    cal = calibrations or {}
    return Catalog(
        malls=[Mall(mall_id="LAB", name="lab", tz=LAB_TZ, lat=0.0, lon=0.0)],
        sensors=[
            Sensor(sensor_id=s, mall_id="LAB", zone=s, lat=0.0, lon=0.0, people=cal.get(s)) for s in sorted(sensors)
        ],
    )


def sensors_of(folder: LabFolder) -> list[str]:
    return sorted({s for s, _ in folder.truth})


def replay(folder: LabFolder, catalog: Any, days: set[str] | None = None) -> dict[Key, float]:
    """Replay the folder's sightings (of ``days``, if given) through the engine's dataflow;
    the people per (sensor, window) of the ``PeopleCount`` records it writes."""
    from bytewax.testing import TestingSink, run_main

    from connectors.schemas import PeopleCount
    from flows.engine import Sinks, Sources, build_flow
    from simulators.mall import SimEvent
    from simulators.source import SimulatorSource
    from storepulse.settings import Settings

    events = []
    for line in folder.lines():
        head = _HEAD.decode(line)
        if days is None or local_day(head.ts) in days:
            events.append(SimEvent("wifi.probes", head.sensor_id.encode(), line, head.ts))
    settings = Settings(mac_hash_key=EVAL_KEY, max_event_age_s=20 * 365 * 86400.0)
    out: list[Any] = []
    dead: list[Any] = []
    flow = build_flow(
        settings,
        sources=Sources(probes=SimulatorSource(events, partitions={"wifi.probes": 2}, batch_size=5000)),
        sinks=Sinks(deadletter={"dead": TestingSink(dead)}, footfall={"out": TestingSink(out)}),
        catalog=lambda: catalog,
    )
    run_main(flow)
    return {(p.sensor_id, p.window_ts): p.people for p in out if isinstance(p, PeopleCount)}


def window_features(folder: LabFolder, catalog: Any, floor: int) -> dict[Key, dict[str, float]]:
    """Each (sensor, window)'s counts at ``floor``, computed offline with the engine's own
    decoder (keyed device hashes, fingerprints) and ``flows.people.SensorPeople``."""
    from connectors.decode import Limits, ProbeDecoder
    from connectors.privacy import DeviceHasher
    from connectors.records import RawBatch, RawMessage
    from flows.people import Params, SensorPeople

    decoder = ProbeDecoder(DeviceHasher(EVAL_KEY), Limits(max_event_age_ms=1 << 62))
    counters: dict[str, SensorPeople] = {}
    out: dict[Key, dict[str, float]] = {}
    batch: list[RawMessage] = []

    def flush() -> None:
        good, _ = decoder.decode(RawBatch(topic="wifi.probes", partition=0, messages=batch), catalog)
        by_sensor: dict[str, list[Any]] = defaultdict(list)
        for _, s in good:
            by_sensor[s.sensor_id].append(s)
        for sensor_id, group in by_sensor.items():
            counter = counters.setdefault(sensor_id, SensorPeople(Params(floor=floor)))
            counter.add(*_columns(group))
            newest = max(s.ts for s in group)
            for w in counter.close(window_of(newest)):  # windows before the newest one are complete
                out[(sensor_id, w.window_start_ts)] = w.features
        batch.clear()

    for offset, line in enumerate(folder.lines()):
        batch.append(RawMessage(offset, b"", line))
        if len(batch) == 5000:
            flush()
    if batch:
        flush()
    for sensor_id, counter in counters.items():
        for w in counter.close(1 << 62):
            out[(sensor_id, w.window_start_ts)] = w.features
    return out


def _columns(group: list[Any]) -> tuple[np.ndarray, ...]:
    return (
        np.array([s.ts for s in group], np.int64),
        np.array([s.device for s in group], np.uint64),
        np.array([s.randomized for s in group], np.bool_),
        np.array([s.rssi for s in group], np.int64),
        np.array([-1 if s.seq is None else s.seq for s in group], np.int64),
        np.array([s.fingerprint for s in group], np.int64),
    )


def fit(
    features: dict[int, dict[Key, dict[str, float]]], truth: dict[Key, float], days: set[str] | None
) -> dict[str, Any]:
    """Per sensor, the floor (of ``FLOORS``) and calibration with the least squared error on
    the windows of ``days`` (all, if None); ``features`` by floor."""
    from connectors.catalog import PeopleCalibration
    from flows.people import RECOMMENDED, fit_calibration

    out: dict[str, Any] = {}
    for sensor in sorted({s for s, _ in truth}):
        best: tuple[float, Any] | None = None
        for floor, by_window in features.items():
            keys = [k for k in truth if k[0] == sensor and (days is None or local_day(k[1]) in days)]
            x = np.array([[by_window.get(k, {}).get(f, 0.0) for f in RECOMMENDED] for k in keys])
            y = np.array([truth[k] for k in keys])
            cal = fit_calibration(x, y, RECOMMENDED)
            pred = np.maximum(0.0, cal.intercept + np.log1p(x) @ np.array([cal.coef[f] for f in RECOMMENDED]))
            sse = float(((pred - y) ** 2).sum())
            if best is None or sse < best[0]:
                coef = {f: round(c, 4) for f, c in cal.coef.items()}
                best = (sse, PeopleCalibration(floor=floor, intercept=round(cal.intercept, 4), coef=coef))
        assert best is not None
        out[sensor] = best[1]
    return out


def baseline_counts(folder: LabFolder) -> dict[Key, int]:
    """Distinct MACs heard at ``BASELINE_FLOOR`` dBm or stronger, per (sensor, window)."""
    macs: dict[Key, set[str]] = defaultdict(set)
    for line in folder.lines():
        head = _HEAD.decode(line)
        if head.rssi >= BASELINE_FLOOR:
            macs[(head.sensor_id, window_of(head.ts))].add(head.mac)
    return {k: len(v) for k, v in macs.items()}


def baseline(counts: dict[Key, int], train: dict[Key, float], test: Iterable[Key]) -> dict[Key, float]:
    """``a * macs + b`` per sensor, least squares on ``train``, applied to ``test``."""
    out: dict[Key, float] = {}
    test = list(test)
    for sensor in sorted({s for s, _ in train}):
        keys = [k for k in train if k[0] == sensor]
        x = np.array([counts.get(k, 0) for k in keys], float)
        a, b = np.polyfit(x, np.array([train[k] for k in keys]), 1)
        out.update({k: max(0.0, a * counts.get(k, 0) + b) for k in test if k[0] == sensor})
    return out


def evaluate_occupancy(train_dir: Path | None, data_dir: Path, *, folds: int = 5, as_json: bool = False) -> int:
    started = time.monotonic()
    data = LabFolder.load(data_dir)
    train = LabFolder.load(train_dir) if train_dir is not None else data
    catalog = lab_catalog(sensors_of(train) + sensors_of(data))
    features = {floor: window_features(train, catalog, floor) for floor in FLOORS}
    predicted: dict[Key, float] = {}
    base: dict[Key, float] = {}
    calibrations: dict[str, Any] = {}
    train_counts = baseline_counts(train)
    data_counts = train_counts if train is data else baseline_counts(data)
    if train_dir is not None:
        calibrations = fit(features, train.truth, None)
        predicted = replay(data, lab_catalog(sensors_of(data), calibrations))
        base = baseline(train_counts, train.truth, data.truth)
    else:
        for held_out in folds_by_day(data.days(), folds):
            kept = set(data.days()) - set(held_out)
            cal = fit(features, data.truth, kept)
            run = replay(data, lab_catalog(sensors_of(data), cal), set(held_out))
            test = [k for k in data.truth if local_day(k[1]) in set(held_out)]
            predicted.update({k: run.get(k, 0.0) for k in test})
            base.update(baseline(data_counts, {k: v for k, v in data.truth.items() if k not in set(test)}, test))
        calibrations = fit(features, data.truth, None)  # on every day: what to put in a catalog
    result: dict[str, Any] = {
        "mode": "train/data" if train_dir is not None else f"leave-days-out ({folds} folds)",
        **scores(predicted, data.truth),
        **{f"baseline_{k}": v for k, v in scores(base, data.truth).items() if k != "windows"},
        "per_sensor": {
            s: scores(predicted, {k: v for k, v in data.truth.items() if k[0] == s}) for s in sensors_of(data)
        },
        "calibrations": {s: msgspec.to_builtins(c) for s, c in calibrations.items()},
        "seconds": round(time.monotonic() - started, 1),
    }
    if not as_json:
        print(f"people per 5-minute window, {result['mode']}: {result['windows']} windows")
        for name in ("mae_occupied", "mae_empty", "pearson_r"):
            print(f"{name:<14} engine {result[name]:<8} baseline {result['baseline_' + name]}")
    print(json.dumps(result, sort_keys=True))
    return 0
