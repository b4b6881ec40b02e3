"""Every dashboard query is valid PromQL and finds data in a real Prometheus that scrapes
the storepulse metrics.

The scraped process, ``metrics_target``, is run twice: the real engine (``storepulse demo
--scenario smoke --run-on``, which processes a simulated morning and keeps serving its
metrics) and a stand-in that gives every declared metric a sample (``metrics_target.py``),
so that panels over metrics the demo cannot produce (Kafka delivery, consumer errors) are
checked too. A panel must return series whenever every metric it queries has samples.
Template variables are resolved the way Grafana does: each query variable's own query runs
against Prometheus and the first value it finds is selected.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dashboards.promql import metric_names, substitute, variable_query
from storepulse.metrics import exported_names
from tests.fixtures import stop_process
from tests.fixtures.prometheus import PrometheusServer, free_port, start_prometheus

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "dashboards"
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
SALES_DROP_ROW = "Sales-drop alerts"  # the footfall board's last row (flows.sales_watch)


@dataclass(frozen=True)
class MetricsTarget:
    """A process serving /metrics: its ``host:port`` and the metric names it has samples of."""

    address: str
    present: frozenset[str]

    def has_data_for(self, expr: str) -> bool:
        return metric_names(expr) <= self.present


def _boards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))]


def _targets() -> list[Any]:
    params = []
    for board in _boards():
        for panel in board["panels"]:
            for inner in [panel, *panel.get("panels", [])]:
                for target in inner.get("targets", []):
                    params.append(
                        pytest.param(
                            board["uid"],
                            target,
                            id=f"{board['uid']}:{inner['id']}{target['refId']}:{inner['title']}",
                        )
                    )
    return params


@pytest.fixture(scope="module", params=["engine", "stand-in"])
def metrics_target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsTarget]:
    """The scraped process (see the module docstring)."""
    port = free_port()
    if request.param == "engine":
        out = tmp_path_factory.mktemp("demo")
        command = [
            sys.executable,
            "-m",
            "storepulse.cli",
            "demo",
            "--scenario",
            "smoke",
            "--speedup",
            "0",
            "--run-on",
            "--quiet",
            "--metrics-port",
            str(port),
            "--out",
            str(out),
        ]
        ready = "running on"  # printed once the whole simulated morning is processed
    else:
        command = [sys.executable, str(Path(__file__).with_name("metrics_target.py")), str(port)]
        ready = "serving"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        text = _wait_for_metrics(port, process, ready, deadline_s=120.0)
        present = frozenset(line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#")
        target = MetricsTarget(address=f"127.0.0.1:{port}", present=present)
        if request.param == "engine":  # the engine feeds every footfall panel and most others
            footfall = json.loads((DASHBOARD_DIR / "storepulse-footfall.json").read_text())
            titles = [p["title"] for p in footfall["panels"]]
            # not the sales-drop row: expectations, alerts and health need more history than
            # the smoke scenario's one morning (the stand-in feeds it)
            above = footfall["panels"][: titles.index(SALES_DROP_ROW)]
            exprs = [t["expr"] for p in above for t in p.get("targets", [])]
            assert all(target.has_data_for(e) for e in exprs), sorted(exported_names() - present)
        yield target
    finally:
        stop_process(process)


def _wait_for_metrics(port: int, process: subprocess.Popen[bytes], ready: str, deadline_s: float) -> str:
    """Wait for ``ready`` on the process's output, then return its /metrics text."""
    assert process.stdout is not None
    seen = threading.Event()
    output: list[str] = []

    def watch() -> None:
        for line in iter(process.stdout.readline, b""):  # type: ignore[union-attr]
            output.append(line.decode(errors="replace"))
            if ready in output[-1]:
                seen.set()

    threading.Thread(target=watch, daemon=True).start()
    if not seen.wait(deadline_s):
        tail = "".join(output)[-2000:]
        raise AssertionError(f"{ready!r} not printed in {deadline_s}s (exit {process.poll()}): {tail}")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


@pytest.fixture(scope="module")
def prometheus(metrics_target: MetricsTarget) -> Iterator[PrometheusServer]:
    server = start_prometheus((metrics_target.address,))
    try:
        # rate() and increase() need two samples in their range: wait for two scrapes.
        server.wait_for('min(count_over_time(up{job="storepulse"}[1m])) >= 2', deadline_s=20.0)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def variable_values(prometheus: PrometheusServer, metrics_target: MetricsTarget) -> dict[str, dict[str, str]]:
    """Per dashboard uid: a value for every template variable, found as Grafana would."""
    resolved: dict[str, dict[str, str]] = {}
    for board in _boards():
        values = dict(BUILTINS)
        for var in board["templating"]["list"]:
            if var["type"] != "query":
                continue
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            expr, label = variable_query(query)
            assert expr and label, f"{board['uid']} ${var['name']}: use label_values(expr, label)"
            series = prometheus.query(expr)
            found = sorted({s["metric"][label] for s in series if label in s["metric"]})
            if metrics_target.has_data_for(expr):
                assert found, f"{board['uid']} ${var['name']}: {query} found no values"
            values[var["name"]] = found[0] if found else var.get("allValue", ".*")
        resolved[board["uid"]] = values
    return resolved


@pytest.mark.parametrize(("uid", "target"), _targets())
def test_panel_query_runs_and_finds_data(
    uid: str,
    target: dict[str, Any],
    prometheus: PrometheusServer,
    variable_values: dict[str, dict[str, str]],
    metrics_target: MetricsTarget,
) -> None:
    expr = substitute(target["expr"], variable_values[uid])
    result = prometheus.query(expr)  # raises with Prometheus's message on bad PromQL
    if not metrics_target.has_data_for(target["expr"]):
        return
    assert result, f"{expr!r} returned no series"
    wanted = set(LEGEND_LABEL.findall(target.get("legendFormat", "")))
    for series in result:
        labels = series.get("metric", {})
        assert wanted <= labels.keys(), f"legend {target['legendFormat']!r} vs labels {labels}"


def test_prometheus_reports_bad_promql(prometheus: PrometheusServer) -> None:
    """The check above can fail: a syntax error comes back as an error, not an empty result."""
    with pytest.raises(AssertionError, match="bad_data"):
        prometheus.query("sum by (le (rate(storepulse_sales_total[1m]))")


def test_prometheus_scraping_fixture(prometheus_scraping: Any, metrics_target: MetricsTarget) -> None:
    """The function-scoped factory other tests use: scrapes within seconds, reports health."""
    server = prometheus_scraping(metrics_target.address)
    [sample] = server.wait_for('storepulse_footfall_devices{scope="mall"}', deadline_s=15.0)
    assert sample["metric"]["instance"] == metrics_target.address
    assert sample["metric"]["job"] == "storepulse"
    assert [(url, health) for url, health, _ in server.target_health()] == [
        (f"http://{metrics_target.address}/metrics", "up")
    ]


MEMBER_PANELS = {  # title -> the series each of its queries finds in the stand-in
    "Profile updates per second": [1],
    "Members erased": [1],
    "Members active, by store": [2],  # S001, S002
    "Repurchase rate, by store": [2],
    "Loyalty points issued and redeemed / s, by merchant": [2, 2],  # X1, X2
    "Sale to profile latency, p50 and p99": [1, 1],
}


def test_member_panels_show_activity_from_the_stand_in(
    request: pytest.FixtureRequest, prometheus: PrometheusServer, variable_values: dict[str, dict[str, str]]
) -> None:
    """The stand-in's counters and histograms grow (metrics_target.TICK_S), so every panel of
    the Members row, which ends the board, shows finite values above zero (ratios up to 1);
    against the engine the panels only have to run (checked above)."""
    if request.node.callspec.params["metrics_target"] != "stand-in":
        return
    board = json.loads((DASHBOARD_DIR / "storepulse-engine.json").read_text())
    titles = [p["title"] for p in board["panels"]]
    row = titles.index("Members")
    assert board["panels"][row]["type"] == "row" and sorted(titles[row + 1 :]) == sorted(MEMBER_PANELS)
    panels = {p["title"]: p for p in board["panels"]}
    for title, series in MEMBER_PANELS.items():
        found = []
        for target in panels[title]["targets"]:
            result = prometheus.query(substitute(target["expr"], variable_values["storepulse-engine"]))
            values = [float(s["value"][1]) for s in result]
            assert all(0 < v < float("inf") for v in values), (title, target["refId"], result)
            if panels[title]["fieldConfig"]["defaults"]["unit"] == "percentunit":
                assert all(v <= 1 for v in values), (title, result)
            found.append(len(result))
        assert found == series, title


def test_sales_drop_panels_from_the_stand_in(
    request: pytest.FixtureRequest, prometheus: PrometheusServer, variable_values: dict[str, dict[str, str]]
) -> None:
    """The sales-drop row against the stand-in, which fires S001's alert only (a flag is 1 for
    the first label set) and gives S002 the higher health score: one store firing, listed
    in the table; the band is expected +- 2*sqrt(expected), its lower edge not below 0
    (worked out here from the raw gauge); the rankings best first and worst first."""
    if request.node.callspec.params["metrics_target"] != "stand-in":
        return
    board = json.loads((DASHBOARD_DIR / "storepulse-footfall.json").read_text())
    titles = [p["title"] for p in board["panels"]]
    row = board["panels"][titles.index(SALES_DROP_ROW)]
    assert row["type"] == "row"
    panels = {p["title"]: p for p in board["panels"]}
    every_store = {**variable_values["storepulse-footfall"], "store": ".*"}  # "All"

    def query(title: str, ref: str, values: dict[str, str] = every_store) -> list[dict[str, Any]]:
        [target] = [t for t in panels[title]["targets"] if t["refId"] == ref]
        return prometheus.query(substitute(target["expr"], values))

    [firing] = query("Stores with a sales-drop alert firing", "A")
    assert float(firing["value"][1]) == 1
    # the table's rows: every store's flag, Grafana keeps those at 1 (S001)
    flags = {s["metric"]["store"]: float(s["value"][1]) for s in query("Alerts firing", "A")}
    assert flags == {"S001": 1.0, "S002": 0.0}
    [kept] = [t for t in panels["Alerts firing"]["transformations"] if t["id"] == "filterByValue"]
    assert kept["options"]["type"] == "include" and kept["options"]["filters"] == [
        {"fieldName": "Value #A", "config": {"id": "equal", "options": {"value": 1}}}
    ]

    band = "Net sales per 5 minutes vs expected: $store"
    assert panels[band]["repeat"] == "store"  # one store per panel, so the band's names are fixed
    one_store = {**every_store, "store": "S002"}
    [raw] = prometheus.query('storepulse_store_sales_expected_5m{store="S002"}')
    expected = float(raw["value"][1])
    [upper], [lower] = query(band, "C", one_store), query(band, "D", one_store)
    assert float(upper["value"][1]) == pytest.approx(expected + 2 * expected**0.5)
    assert float(lower["value"][1]) == pytest.approx(max(expected - 2 * expected**0.5, 0.0))

    scores = {s["metric"]["store"]: float(s["value"][1]) for s in prometheus.query("storepulse_store_health_score")}
    assert scores["S002"] > scores["S001"]
    best = [s["metric"]["store"] for s in query("Healthiest stores (top 10)", "A")]
    worst = [s["metric"]["store"] for s in query("Declining stores (bottom 10)", "A")]
    assert (best, worst) == (["S002", "S001"], ["S001", "S002"])


def test_people_row_from_the_stand_in(
    request: pytest.FixtureRequest, prometheus: PrometheusServer, variable_values: dict[str, dict[str, str]]
) -> None:
    """The People row, before the sales-drop row, shows each store's people, devices and
    MACs (the stand-in has stores S001 and S002) and the people now per store, each the
    store gauge's own value (worked out here from the raw gauge)."""
    if request.node.callspec.params["metrics_target"] != "stand-in":
        return
    board = json.loads((DASHBOARD_DIR / "storepulse-footfall.json").read_text())
    titles = [p["title"] for p in board["panels"]]
    row = titles.index("People")
    assert board["panels"][row]["type"] == "row" and row < titles.index(SALES_DROP_ROW)
    assert titles[row + 1 : row + 3] == ["People, devices and MACs per store", "People now, per store"]
    panels = {p["title"]: p for p in board["panels"]}
    every_store = {**variable_values["storepulse-footfall"], "store": ".*"}  # "All"

    def by_store(title: str) -> list[dict[str, float]]:
        found = []
        for target in panels[title]["targets"]:
            result = prometheus.query(substitute(target["expr"], every_store))
            found.append({s["metric"]["id"]: float(s["value"][1]) for s in result})
        return found

    def raw(metric: str) -> dict[str, float]:
        result = prometheus.query(f'{metric}{{scope="store"}}')
        return {s["metric"]["id"]: float(s["value"][1]) for s in result}

    people, devices, macs = (raw(f"storepulse_people{m}") for m in ("", "_devices", "_macs"))
    assert set(people) == {"S001", "S002"}
    assert by_store("People, devices and MACs per store") == [people, devices, macs]
    assert by_store("People now, per store") == [people]
