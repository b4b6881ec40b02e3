"""A stand-in for the engine's metrics endpoint: every storepulse metric with samples.

Run as ``python metrics_target.py PORT``: imports ``storepulse.metrics``, gives every
declared metric (including ones appended later) a few labelled samples, and serves
``/metrics`` on 127.0.0.1:PORT until terminated, meanwhile adding to every counter each
``TICK_S`` and observing one value in the middle of every histogram's buckets, so that
rate(), increase() and histogram_quantile() panels (profile updates, members erased,
loyalty points, sale-to-profile latency, ...) show values above zero, as a running
engine's would. Ratios (names ending ``_ratio`` or ``_rate``) and scores 0-1 get values
between 0 and 1; 0/1 flags (``_firing``) are 1 for the first label set, 0 for the others.
The dashboard tests scrape it with a real Prometheus; ``storepulse demo --run-on
--metrics-port PORT`` is the drop-in replacement.

>>> label_sets(("scope", "id"))[-1]
{'scope': 'mall', 'id': 'M1'}
>>> label_sets(("topic", "reason"))[0]
{'topic': 'wifi.probes', 'reason': 'bad_json'}
"""

from __future__ import annotations

import itertools
import sys
import threading
from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

# Label values a small two-store mall would produce.
VALUES: dict[str, tuple[str, ...]] = {
    "topic": ("wifi.probes", "pos.transactions", "members.events"),
    "reason": ("bad_json", "unknown_sensor"),
    "store": ("S001", "S002"),
    "mall": ("M1",),
    "zone": ("Z1",),
    "mac_kind": ("global", "random"),
    "campaign": ("C1",),
    "partition": ("0", "1"),
    "currency": ("CNY",),
    "merchant": ("X1", "X2"),
    "status": ("firing", "resolved"),
    "severity": ("warning", "critical"),
    "cause": ("traffic", "payment:wechat"),
}
# Labels whose values go together rather than as a cartesian product.
PAIRED: dict[tuple[str, ...], tuple[tuple[str, ...], ...]] = {
    ("scope", "id"): (("zone", "Z1"), ("store", "S001"), ("store", "S002"), ("mall", "M1")),
}


def label_sets(names: tuple[str, ...]) -> list[dict[str, str]]:
    """Every label set to give samples to, for a metric with label ``names``."""
    if names in PAIRED:
        return [dict(zip(names, values, strict=True)) for values in PAIRED[names]]
    choices = [VALUES.get(name, ("x",)) for name in names]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*choices)]


M = TypeVar("M", bound=MetricWrapperBase)


def child(metric: M, labels: dict[str, str]) -> M:
    """The labelled child of ``metric`` for ``labels``, or ``metric`` itself if unlabelled."""
    return metric.labels(**labels) if labels else metric


def fill(metric: MetricWrapperBase, index: int) -> None:
    """Give ``metric`` one sample per label set, with values that differ per set."""
    names = tuple(metric._labelnames)  # no public accessor
    for n, labels in enumerate(label_sets(names) if names else [{}]):
        value = 1 + index + n
        if isinstance(metric, Counter):
            child(metric, labels).inc(value * 10)
        elif isinstance(metric, Gauge) and metric._name.endswith(FLAGS):
            child(metric, labels).set(1 if n == 0 else 0)
        elif isinstance(metric, Gauge):
            child(metric, labels).set(value / (value + 1) if metric._name.endswith(RATIOS) else value)
        elif isinstance(metric, Histogram):
            for seconds in (60, 400, 1500, 4000, 30000):
                child(metric, labels).observe(seconds * value)
        else:
            raise TypeError(f"{metric!r}: no sample recipe for {type(metric).__name__}")


TICK_S = 0.5  # below the test Prometheus's scrape interval: every scrape sees growth
RATIOS = ("_ratio", "_rate", "_drop_score")  # gauges of a share or a score, 0-1
FLAGS = ("_firing",)  # gauges of 0 or 1


def grow(metric: Counter | Histogram) -> None:
    """Add one to every labelled child of the counter ``metric``, or observe the middle
    bucket bound of the histogram ``metric`` (as ``fill`` made the children)."""
    names = tuple(metric._labelnames)
    for labels in label_sets(names) if names else [{}]:
        if isinstance(metric, Histogram):
            bounds = metric._upper_bounds[:-1]  # no public accessor; the last is +Inf
            child(metric, labels).observe(bounds[len(bounds) // 2])
        else:
            child(metric, labels).inc()


def main(argv: list[str]) -> None:
    from storepulse import metrics

    declared = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    for index, metric in enumerate(declared):
        fill(metric, index)
    metrics.serve(int(argv[1]))
    print("serving", flush=True)
    growing = [m for m in declared if isinstance(m, Counter | Histogram)]
    stopped = threading.Event()  # never set: runs until the process is terminated
    while not stopped.wait(TICK_S):
        for metric in growing:
            grow(metric)


if __name__ == "__main__":
    main(sys.argv)
