"""`storepulse eval occupancy` on real lab data, and the scores it reports (hand-worked).

The lab data (/work/shared/data/lab-probes, see its README) is read in place and never
copied into the repository: the test writes subsets of whole local days into tmp_path.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gzip
import io
import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import pytest

from storepulse.eval_occupancy import evaluate_occupancy
from storepulse.lab_data import LAB_TZ, LabFolder, folds_by_day, scores

LAB = Path("/work/shared/data/lab-probes")
# Whole local days from the README's table, all LAB-P1 only, February to April 2023 (one
# recording period). Taught: a class of 15 to 18 at the peak; empty: 0 all day.
TRAIN_DAYS = ("2023-02-07", "2023-02-21", "2023-03-07", "2023-03-21") + ("2023-02-23", "2023-04-13")
DATA_DAYS = ("2023-03-14", "2023-03-28") + ("2023-04-16",)


class _Ts(msgspec.Struct):
    ts: int


def _bounds(day: str) -> tuple[int, int]:
    """[start, end) in UTC epoch ms of a local day in the lab's time zone."""
    d = dt.date.fromisoformat(day)
    tz = ZoneInfo(LAB_TZ)
    start = dt.datetime.combine(d, dt.time(), tz)
    end = dt.datetime.combine(d + dt.timedelta(days=1), dt.time(), tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def _write_subsets(folders: dict[Path, tuple[str, ...]]) -> None:
    """Each folder gets the lab's sightings and occupancy rows of its days, same format."""
    ranges = {folder: [_bounds(d) for d in days] for folder, days in folders.items()}

    def owner(ts: int) -> Path | None:
        return next((f for f, rs in ranges.items() if any(a <= ts < b for a, b in rs)), None)

    decode = msgspec.json.Decoder(_Ts).decode
    for folder in folders:
        folder.mkdir()
    with contextlib.ExitStack() as stack:
        outs = {f: stack.enter_context(gzip.open(f / "sightings.jsonl.gz", "wb")) for f in folders}
        with gzip.open(LAB / "sightings.jsonl.gz", "rb") as lines:
            for line in lines:
                to = owner(decode(line).ts)
                if to is not None:
                    outs[to].write(line)
    rows: dict[Path, list[list[str]]] = {f: [] for f in folders}
    with (LAB / "occupancy.csv").open(newline="") as occupancy:
        reader = csv.reader(occupancy)
        header = next(reader)
        for row in reader:
            to = owner(int(row[1]))
            if to is not None:
                rows[to].append(row)
    for folder, kept in rows.items():
        with (folder / "occupancy.csv").open("w", newline="") as dst:
            csv.writer(dst).writerows([header, *kept])


def _mac_baseline(train: Path, data: Path) -> dict[str, float | int]:
    """The baseline the eval describes, computed here as a plain batch oracle: distinct MACs
    at -70 dBm or stronger per 5-minute window, ``a * macs + b`` fitted by least squares on
    the training windows (``numpy.polyfit``), clipped at 0, applied to the data's windows."""

    def macs(folder: Path) -> dict[tuple[str, int], int]:
        seen: dict[tuple[str, int], set[str]] = {}
        with gzip.open(folder / "sightings.jsonl.gz", "rt") as f:
            for line in f:
                o = json.loads(line)
                if o["rssi"] >= -70:
                    seen.setdefault((o["sensor_id"], o["ts"] // 300_000 * 300_000), set()).add(o["mac"])
        return {k: len(v) for k, v in seen.items()}

    train_truth, data_truth = LabFolder.load(train).truth, LabFolder.load(data).truth
    train_macs, data_macs = macs(train), macs(data)
    keys = sorted(train_truth)  # one sensor in these days
    a, b = np.polyfit([train_macs.get(k, 0) for k in keys], [train_truth[k] for k in keys], 1)
    return scores({k: max(0.0, a * data_macs.get(k, 0) + b) for k in data_truth}, data_truth)


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[dict, dict[str, float | int]]]:
    """(the eval's JSON line, the independently computed baseline scores)."""
    for name in ("sightings.jsonl.gz", "occupancy.csv"):
        if not (LAB / name).is_file():
            pytest.fail(f"{LAB / name} is missing: the lab data set must be on this machine (see its README)")
    with tempfile.TemporaryDirectory() as tmp:
        train, data = Path(tmp) / "train", Path(tmp) / "data"
        _write_subsets({train: TRAIN_DAYS, data: DATA_DAYS})
        printed = io.StringIO()  # capsys is function-scoped; the eval runs once per module
        with contextlib.redirect_stdout(printed):
            assert evaluate_occupancy(train, data, as_json=True) == 0
        yield json.loads(printed.getvalue().strip().splitlines()[-1]), _mac_baseline(train, data)


def test_eval_occupancy_reports_every_field(lab: tuple[dict, dict]) -> None:
    r, _ = lab
    for key in ("windows", "mae_occupied", "mae_empty", "pearson_r", "calibrations", "per_sensor", "mode"):
        assert key in r, key
    for key in ("mae_occupied", "mae_empty", "pearson_r"):
        assert math.isfinite(r[key]) and math.isfinite(r[f"baseline_{key}"]), key
    assert r["mode"] == "train/data"
    assert list(r["per_sensor"]) == ["LAB-P1"] and r["per_sensor"]["LAB-P1"]["windows"] == r["windows"]
    assert r["windows"] > 200  # three days, two of them with a class: hundreds of 5-minute windows
    cal = r["calibrations"]["LAB-P1"]
    assert cal["floor"] in (-75, -70, -65, -60) and min(cal["coef"].values()) >= 0


def test_the_engine_beats_the_mac_count_baseline_on_held_out_days(lab: tuple[dict, dict]) -> None:
    # An independent expectation, not a number read off the code: the baseline is a straight
    # line through distinct MACs at -70 dBm, fitted on the same training days. The lab's
    # README says the sniffer hears corridor and neighbouring-room devices and fixed MACs
    # around the clock, so a MAC count tracks people poorly; an estimator that drops
    # always-present devices and passers-by must do better on days it was not fitted on.
    # Compared with the baseline computed here (see the next test for why not only the
    # reported one); on these days: engine 2.56 / 0.87 / 0.882, baseline 3.72 / 2.12 / 0.859.
    r, base = lab
    for baseline in (base, {k: r[f"baseline_{k}"] for k in ("mae_occupied", "mae_empty", "pearson_r")}):
        assert r["mae_occupied"] < baseline["mae_occupied"]
        assert r["pearson_r"] > baseline["pearson_r"]
        assert r["mae_empty"] < baseline["mae_empty"]


def test_the_reported_baseline_is_the_mac_count_line_on_the_datas_own_counts(lab: tuple[dict, dict]) -> None:
    r, base = lab
    assert {k: r[f"baseline_{k}"] for k in base if k != "windows"} == pytest.approx(
        {k: v for k, v in base.items() if k != "windows"}, abs=1e-3
    )


# ---- the scores and folds it reports (hand-worked) --------------------------------------


def test_scores_count_a_missing_estimate_as_0_and_skip_keys_without_truth() -> None:
    truth = {("A", 0): 4.0, ("A", 300): 2.0, ("B", 0): 0.0}
    predicted = {("A", 0): 5.0, ("B", 0): 1.0, ("C", 0): 99.0}  # ("A", 300) missing; C has no truth
    r = scores(predicted, truth)
    # occupied: |5 - 4| and |0 - 2| -> 1.5; empty: |1 - 0| -> 1.0
    # pearson of est (5, 0, 1) with truth (4, 2, 0): means 2, 2; sxy = 3*2 + (-2)*0 + (-1)*(-2) = 8,
    # sxx = 9 + 4 + 1 = 14, syy = 4 + 0 + 4 = 8 -> 8 / sqrt(112) = 0.7559
    assert r == {"windows": 3, "mae_occupied": 1.5, "mae_empty": 1.0, "pearson_r": 0.7559}


def test_scores_with_no_occupied_no_empty_or_constant_windows_are_nan() -> None:
    r = scores({("A", 0): 1.0, ("A", 1): 1.0}, {("A", 0): 0.0, ("A", 1): 0.0})
    assert r["windows"] == 2 and r["mae_empty"] == 1.0
    assert math.isnan(r["mae_occupied"]) and math.isnan(r["pearson_r"])  # no occupied window; truth constant
    r = scores({}, {("A", 0): 3.0})
    assert r["mae_occupied"] == 3.0 and math.isnan(r["mae_empty"]) and math.isnan(r["pearson_r"])  # one window
    r = scores({}, {})
    assert r["windows"] == 0 and math.isnan(r["mae_occupied"]) and math.isnan(r["mae_empty"])


def test_folds_deal_sorted_distinct_days_round_robin() -> None:
    days = ["2023-03-01", "2022-10-18", "2023-03-01", "2022-11-02", "2023-01-05"]
    # sorted and deduplicated: 2022-10-18, 2022-11-02, 2023-01-05, 2023-03-01
    assert folds_by_day(days, 2) == [["2022-10-18", "2023-01-05"], ["2022-11-02", "2023-03-01"]]
    assert folds_by_day(days, 1) == [["2022-10-18", "2022-11-02", "2023-01-05", "2023-03-01"]]
    # more folds than days: the extra folds are empty, every day is in exactly one fold
    assert folds_by_day(["2022-10-18", "2022-10-19"], 3) == [["2022-10-18"], ["2022-10-19"], []]
    assert folds_by_day([], 2) == [[], []]
