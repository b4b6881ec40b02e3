"""Lab probe captures with people counts (the ``lab-probes`` format), for ``eval occupancy``.

Reads a folder holding ``sightings.jsonl.gz`` (one ``wifi.probes`` sighting per line,
sorted by ``ts``) and ``occupancy.csv`` (``sensor_id,minute_start_ts,occupancy``: people in
the room in that UTC minute, for minutes in which the sensor logged a frame; absence means
no data, not 0). Writes nothing. The people of a 5-minute window of a sensor is the mean of
its minutes' occupancy; a window with no minute has no truth.

Days are local calendar days of ``tz`` (Europe/Prague for the lab): validation leaves whole
days out, as the data's own split does.

>>> window_of(1_666_083_222_597)
1666083000000
>>> folds_by_day(["2022-10-18", "2022-10-19", "2022-10-26", "2022-11-01"], 2)
[['2022-10-18', '2022-10-26'], ['2022-10-19', '2022-11-01']]
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

WINDOW_MS = 300_000
LAB_TZ = "Europe/Prague"


def window_of(ts_ms: int) -> int:
    return ts_ms // WINDOW_MS * WINDOW_MS


def local_day(ts_ms: int, tz: str = LAB_TZ) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, ZoneInfo(tz)).date().isoformat()


def folds_by_day(days: Sequence[str], k: int) -> list[list[str]]:
    """``k`` folds of whole days, dealt in date order (day i to fold i mod k), so each fold
    holds days from every recording period."""
    ordered = sorted(set(days))
    return [[d for i, d in enumerate(ordered) if i % k == f] for f in range(k)]


@dataclass(frozen=True)
class LabFolder:
    """One folder of lab data: where its sightings are and the people per sensor-window."""

    sightings_path: Path
    truth: dict[tuple[str, int], float]  # (sensor_id, window start) -> mean people

    @classmethod
    def load(cls, directory: Path) -> LabFolder:
        sightings = directory / "sightings.jsonl.gz"
        occupancy = directory / "occupancy.csv"
        for path in (sightings, occupancy):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: a lab folder holds sightings.jsonl.gz and occupancy.csv")
        minutes: dict[tuple[str, int], list[float]] = defaultdict(list)
        with occupancy.open(newline="") as f:
            for row in csv.DictReader(f):
                people = float(row["occupancy"])
                if math.isfinite(people):
                    minutes[(row["sensor_id"], window_of(int(row["minute_start_ts"])))].append(people)
        truth = {key: sum(v) / len(v) for key, v in minutes.items()}
        return cls(sightings, truth)

    def lines(self) -> Iterator[bytes]:
        """The sightings, one JSON line each, in file order (by ``ts``)."""
        with gzip.open(self.sightings_path, "rb") as f:
            yield from (line.rstrip(b"\n") for line in f if line.strip())

    def days(self) -> list[str]:
        return sorted({local_day(w) for _, w in self.truth})


def scores(predicted: dict[tuple[str, int], float], truth: dict[tuple[str, int], float]) -> dict[str, float | int]:
    """``windows``, ``mae_occupied`` (truth > 0), ``mae_empty`` (truth == 0) and
    ``pearson_r`` over the windows with a truth (a window with no estimate counts as 0).

    >>> scores({("A", 0): 3.0, ("A", 1): 0.5}, {("A", 0): 4.0, ("A", 1): 0.0, ("A", 2): 0.0})
    {'windows': 3, 'mae_occupied': 1.0, 'mae_empty': 0.25, 'pearson_r': 0.9878}
    """
    keys = sorted(truth)
    est = [predicted.get(k, 0.0) for k in keys]
    tru = [truth[k] for k in keys]
    occupied = [abs(e - t) for e, t in zip(est, tru, strict=True) if t > 0]
    empty = [abs(e - t) for e, t in zip(est, tru, strict=True) if t == 0]
    return {
        "windows": len(keys),
        "mae_occupied": round(sum(occupied) / len(occupied), 4) if occupied else float("nan"),
        "mae_empty": round(sum(empty) / len(empty), 4) if empty else float("nan"),
        "pearson_r": round(pearson(est, tru), 4),
    }


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """numpy's correlation, NaN (without numpy's warning) when it is undefined: fewer than
    two points, or a constant side."""
    a, b = np.asarray(x, float), np.asarray(y, float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
