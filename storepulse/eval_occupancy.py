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
offline, over the same days a replay sees (a fold's kept days alone, so nothing of the
held-out days reaches the fit). The estimates that are scored always come from the dataflow.

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

from connectors.privacy import is_randomized
from storepulse.lab_data import LAB_TZ, LabFolder, folds_by_day, local_day, scores, window_of

BASELINE_FLOOR = -70
FLOORS = (-70, -65, -60)  # the signal floors a calibration chooses from
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


def window_features(
    folder: LabFolder, catalog: Any, days: set[str] | None = None
) -> dict[int, dict[Key, dict[str, float]]]:
    """Each (sensor, window)'s counts at each of ``FLOORS``, computed offline with the
    engine's own decoder (keyed device hashes, fingerprints) and ``flows.people.SensorPeople``,
    from the sightings of ``days`` only (all, if None), as a replay of those days would see
    them; by floor. One pass over the folder."""
    from connectors.decode import Limits, ProbeDecoder
    from connectors.privacy import DeviceHasher
    from connectors.records import RawBatch, RawMessage
    from flows.people import Params, SensorPeople

    decoder = ProbeDecoder(DeviceHasher(EVAL_KEY), Limits(max_event_age_ms=1 << 62))
    counters: dict[tuple[int, str], SensorPeople] = {}
    out: dict[int, dict[Key, dict[str, float]]] = {floor: {} for floor in FLOORS}
    batch: list[RawMessage] = []

    def flush() -> None:
        good, _ = decoder.decode(RawBatch(topic="wifi.probes", partition=0, messages=batch), catalog)
        by_sensor: dict[str, list[Any]] = defaultdict(list)
        for _, s in good:
            by_sensor[s.sensor_id].append(s)
        for sensor_id, group in by_sensor.items():
            newest = max(s.ts for s in group)
            for floor in FLOORS:
                counter = counters.setdefault((floor, sensor_id), SensorPeople(Params(floor=floor)))
                counter.add(group)
                for w in counter.close(window_of(newest)):  # windows before the newest are complete
                    out[floor][(sensor_id, w.window_start_ts)] = w.features
        batch.clear()

    for offset, line in enumerate(folder.lines()):
        if days is not None and local_day(_HEAD.decode(line).ts) not in days:
            continue
        batch.append(RawMessage(offset, b"", line))
        if len(batch) == 5000:
            flush()
    if batch:
        flush()
    for (floor, sensor_id), counter in counters.items():
        for w in counter.close(1 << 62):
            out[floor][(sensor_id, w.window_start_ts)] = w.features
    return out


def fit(
    features: dict[int, dict[Key, dict[str, float]]], truth: dict[Key, float], days: set[str] | None
) -> dict[str, Any]:
    """Per sensor, the floor (of ``FLOORS``) and calibration with the least squared error on
    the windows of ``days`` (all, if None); ``features`` by floor."""
    from flows.people import RECOMMENDED, estimate, fit_calibration

    out: dict[str, Any] = {}
    for sensor in sorted({s for s, _ in truth}):
        keys = [k for k in truth if k[0] == sensor and (days is None or local_day(k[1]) in days)]
        y = [truth[k] for k in keys]
        best: tuple[float, Any] | None = None
        for floor, by_window in features.items():
            rows = [{f: by_window.get(k, {}).get(f, 0.0) for f in RECOMMENDED} for k in keys]
            fitted = fit_calibration(np.array([[r[f] for f in RECOMMENDED] for r in rows]), np.array(y), RECOMMENDED,
                                     floor=floor)  # fmt: skip
            cal = msgspec.structs.replace(
                fitted, intercept=round(fitted.intercept, 4), coef={f: round(c, 4) for f, c in fitted.coef.items()}
            )
            sse = sum((estimate(cal, r) - t) ** 2 for r, t in zip(rows, y, strict=True))
            if best is None or sse < best[0]:
                best = (sse, cal)
        assert best is not None
        out[sensor] = best[1]
    return out


def baseline_counts(folder: LabFolder) -> tuple[dict[Key, int], dict[Key, float]]:
    """Per (sensor, window): distinct MACs heard at ``BASELINE_FLOOR`` dBm or stronger, and
    the share of its sightings from randomised (locally administered) MACs."""
    macs: dict[Key, set[str]] = defaultdict(set)
    heard: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
    for line in folder.lines():
        head = _HEAD.decode(line)
        key = (head.sensor_id, window_of(head.ts))
        counts = heard[key]
        counts[0] += 1
        counts[1] += bool(head.mac) and is_randomized(head.mac)
        if head.rssi >= BASELINE_FLOOR:
            macs[key].add(head.mac)
    return {k: len(v) for k, v in macs.items()}, {k: r / n for k, (n, r) in heard.items()}


SHARE_BANDS = (0.0, 0.25, 0.5, 0.75)


def mae_by_share(
    predicted: dict[Key, float], base: dict[Key, float], truth: dict[Key, float], share: dict[Key, float]
) -> dict[str, dict[str, float | int]]:
    """MAE of the engine and of the baseline over the windows with people, by the window's
    randomised share of sightings (bands from ``SHARE_BANDS``): how error grows with it.

    >>> mae_by_share({("A", 0): 3.0}, {("A", 0): 1.0}, {("A", 0): 4.0}, {("A", 0): 0.9})
    {'0.75-1': {'windows': 1, 'mae': 1.0, 'baseline_mae': 3.0}}
    """
    bands: dict[str, list[tuple[float, float]]] = {}
    for key, people in truth.items():
        if people <= 0:
            continue
        low = max(b for b in SHARE_BANDS if b <= share.get(key, 0.0))
        name = f"{low:g}-{next((b for b in SHARE_BANDS if b > low), 1):g}"
        bands.setdefault(name, []).append(
            (abs(predicted.get(key, 0.0) - people), abs(base.get(key, 0.0) - people))
        )
    return {
        name: {
            "windows": len(errs),
            "mae": round(sum(e for e, _ in errs) / len(errs), 3),
            "baseline_mae": round(sum(b for _, b in errs) / len(errs), 3),
        }
        for name, errs in sorted(bands.items())
    }


def baseline(
    train_counts: dict[Key, int], train: dict[Key, float], test_counts: dict[Key, int], test: Iterable[Key]
) -> dict[Key, float]:
    """``a * macs + b`` per sensor, least squares on the ``train`` windows (their counts in
    ``train_counts``), applied to the ``test`` windows (theirs in ``test_counts``)."""
    out: dict[Key, float] = {}
    test = list(test)
    for sensor in sorted({s for s, _ in train}):
        keys = [k for k in train if k[0] == sensor]
        x = np.array([train_counts.get(k, 0) for k in keys], float)
        a, b = np.polyfit(x, np.array([train[k] for k in keys]), 1)
        out.update({k: max(0.0, a * test_counts.get(k, 0) + b) for k in test if k[0] == sensor})
    return out


def estimate_plot(predicted: dict[Key, float], base: dict[Key, float], truth: dict[Key, float]) -> str:
    """An SVG of estimated against true people per window: for each true count (rounded),
    the median estimate and its 25-75% band, engine and baseline, and the line y = x."""
    by_truth: dict[int, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for key, people in truth.items():
        engine, baseline_ = by_truth[round(people)]
        engine.append(predicted.get(key, 0.0))
        baseline_.append(base.get(key, 0.0))
    top = max([*by_truth, 1]) + 1
    size, pad = 420, 40

    def xy(x: float, y: float) -> str:
        return f"{pad + x / top * size:.1f},{pad + size - min(y, top) / top * size:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 2 * pad}" height="{size + 2 * pad}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" stroke="#999"/>',
        f'<polyline points="{xy(0, 0)} {xy(top, top)}" stroke="#bbb" stroke-dasharray="4 3" fill="none"/>',
    ]
    for index, (color, name) in enumerate((("#1f77b4", "engine"), ("#d62728", "baseline"))):
        rows = sorted((t, np.percentile(v[index], [25, 50, 75])) for t, v in by_truth.items() if v[index])
        band = [xy(t, q[2]) for t, q in rows] + [xy(t, q[0]) for t, q in reversed(rows)]
        parts.append(f'<polygon points="{" ".join(band)}" fill="{color}" fill-opacity="0.15" stroke="none"/>')
        parts.append(f'<polyline points="{" ".join(xy(t, q[1]) for t, q in rows)}" stroke="{color}" fill="none"/>')
        parts.append(f'<text x="{pad + 8}" y="{pad + 16 + 14 * index}" fill="{color}">{name}: median, 25-75%</text>')
    for tick in range(0, top + 1, 5):
        x, y = xy(tick, 0).split(",")
        parts.append(f'<text x="{x}" y="{float(y) + 14}" text-anchor="middle">{tick}</text>')
        x, y = xy(0, tick).split(",")
        parts.append(f'<text x="{float(x) - 6}" y="{float(y) + 4}" text-anchor="end">{tick}</text>')
    parts.append(f'<text x="{pad + size / 2}" y="{size + 2 * pad - 6}" text-anchor="middle">people counted</text>')
    parts.append(f'<text x="12" y="{pad + size / 2}" transform="rotate(-90 12 {pad + size / 2})" '
                 'text-anchor="middle">people estimated</text></svg>')  # fmt: skip
    return "\n".join(parts) + "\n"


def evaluate_occupancy(
    train_dir: Path | None, data_dir: Path, *, folds: int = 5, as_json: bool = False, plot: Path | None = None
) -> int:
    started = time.monotonic()
    data = LabFolder.load(data_dir)
    train = LabFolder.load(train_dir) if train_dir is not None else data
    catalog = lab_catalog(sensors_of(train) + sensors_of(data))
    predicted: dict[Key, float] = {}
    base: dict[Key, float] = {}
    calibrations: dict[str, Any] = {}
    train_counts, _ = baseline_counts(train)
    data_counts, shares = baseline_counts(data)
    if train_dir is not None:
        calibrations = fit(window_features(train, catalog), train.truth, None)
        predicted = replay(data, lab_catalog(sensors_of(data), calibrations))
        base = baseline(train_counts, train.truth, data_counts, data.truth)
    else:
        for held_out in folds_by_day(data.days(), folds):
            kept = set(data.days()) - set(held_out)
            # fitted on features of the kept days alone, as the held-out days are replayed alone
            cal = fit(window_features(data, catalog, kept), data.truth, kept)
            run = replay(data, lab_catalog(sensors_of(data), cal), set(held_out))
            test = [k for k in data.truth if local_day(k[1]) in set(held_out)]
            predicted.update({k: run.get(k, 0.0) for k in test})
            kept_truth = {k: v for k, v in data.truth.items() if k not in set(test)}
            base.update(baseline(data_counts, kept_truth, data_counts, test))
        # on every day: what to put in a catalog
        calibrations = fit(window_features(data, catalog), data.truth, None)
    result: dict[str, Any] = {
        "mode": "train/data" if train_dir is not None else f"leave-days-out ({folds} folds)",
        **scores(predicted, data.truth),
        **{f"baseline_{k}": v for k, v in scores(base, data.truth).items() if k != "windows"},
        "per_sensor": {
            s: scores(predicted, {k: v for k, v in data.truth.items() if k[0] == s}) for s in sensors_of(data)
        },
        "mae_by_randomized_share": mae_by_share(predicted, base, data.truth, shares),
        "calibrations": {s: msgspec.to_builtins(c) for s, c in calibrations.items()},
        "seconds": round(time.monotonic() - started, 1),
    }
    if plot is not None:
        plot.write_text(estimate_plot(predicted, base, data.truth))
    if not as_json:
        print(f"people per 5-minute window, {result['mode']}: {result['windows']} windows")
        for name in ("mae_occupied", "mae_empty", "pearson_r"):
            print(f"{name:<14} engine {result[name]:<8} baseline {result['baseline_' + name]}")
    print(json.dumps(result, sort_keys=True))
    return 0
